"""SIGINT / SIGTERM during ``sparsesync sync`` (issue 16, findings 8 and 9), in real subprocesses on MariaDB.

Deterministic: each test makes the sync reach a known point and waits for that condition — the
``SPARSESYNC_TEST_PAUSE`` hook of :mod:`sparsesync.interrupt` (the run creates a file and waits), or a table
the test holds with ``LOCK TABLES … WRITE`` so the sync's first read of it waits on the server (seen in the
processlist) — then sends the signal. No sleeping for time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from sparsesync.sync.many import sync_many
from sparsesync.sync.table import SyncOptions, sync_table

from .dbkit import database  # noqa: F401 - fixture

CLI = [str(Path(sys.executable).with_name("sparsesync"))] if Path(sys.executable).with_name("sparsesync").exists() \
    else [sys.executable, "-m", "sparsesync"]
WIDE = "CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(40), pad VARCHAR(2000))"
SMALL_FILES = ["--file-size", "1", "--rows-per-query", "1000", "--no-cache"]
GRACE_S = 30  # after the signal the process must end within this (generous: a loaded machine)


def fill(db, table: str, lo: int, hi: int) -> None:
    """Rows lo..hi of ~2 KB each (so 1 MB files hold ~2,000 rows: several file groups from a few thousand)."""
    db.execute(f"INSERT INTO `{table}` SELECT seq, CONCAT('v', seq), REPEAT(MD5(seq), 60) FROM seq_{lo}_to_{hi}",
               f"ANALYZE TABLE `{table}`")


def source_ids(db, table: str) -> list[tuple]:
    with db.admin.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT id, v, pad FROM `{table}` ORDER BY id")]


def image_ids(dest: Path, table: str) -> list[tuple]:
    urls = [e["url"] for e in json.loads((dest / table / "current.manifest.json").read_text())["entries"]]
    return duckdb.sql(f"SELECT id, v, pad FROM read_parquet({urls!r}) ORDER BY id").fetchall()


OPTIONS = SyncOptions(file_size_mb=1, rows_per_query=1000, use_cache=False)


def first_sync(db, dest: Path, *tables: str) -> None:
    for t in tables:
        r = sync_table(db.url, t, dest, OPTIONS)
        assert r.status == "ok", r


def image_files(dest: Path, table: str) -> dict[str, bytes]:
    return {n: (dest / table / n).read_bytes() for n in ("_state.json", "current.manifest.json")}


def start(args: list[str], **env: str) -> subprocess.Popen:
    e = dict(os.environ, **env)
    e.pop("SPARSESYNC_SOURCE_URL", None)
    return subprocess.Popen(CLI + args, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(cond, proc: subprocess.Popen, what: str, timeout_s: float = 120) -> None:
    """Until ``cond()``; fails at once when the process ended first (e.g. a code without the stop point)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sync ended (exit {proc.returncode}) before {what}:\n{out}\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def signal_and_wait(proc: subprocess.Popen, sig: int) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sync did not stop within {GRACE_S} s of the signal:\n{out}\n{err[-3000:]}")
    return proc.returncode, out, err, time.monotonic() - t0


def metrics_of(path: Path) -> str:
    return path.read_text()


def test_sigterm_mid_export_keeps_the_previous_image_reports_interrupted_and_resumes(database, tmp_path):
    db, dest = database, tmp_path / "lake"
    db.execute(WIDE.format(name="orders"))
    fill(db, "orders", 1, 500)
    first_sync(db, dest, "orders")
    fill(db, "orders", 501, 3500)  # the next run appends 3,000 rows: two file groups or more
    db.execute("UPDATE orders SET v = 'changed' WHERE id = 10")
    before = image_files(dest, "orders")
    flag, prom = tmp_path / "paused", tmp_path / "sync.prom"
    prom.write_text("# previous run's figures\nsparsesync_sync_table_status{status=\"ok\",table=\"orders\"} 1.0\n")

    proc = start(["sync", db.url, "orders", "--dest", str(dest), "--metrics-file", str(prom), *SMALL_FILES],
                 SPARSESYNC_TEST_PAUSE=f"group:1:{flag}")
    wait_until(flag.exists, proc, "its second file group")  # group 0 is done, group 1 not started
    rc, out, err, took = signal_and_wait(proc, signal.SIGTERM)

    assert rc == 143, (out, err)
    assert took < GRACE_S
    assert "interrupted by SIGTERM; re-run the same command to resume" in err
    assert "Traceback" not in err
    lines = out.strip().splitlines()
    assert lines[0].startswith("orders  interrupted"), out
    assert "INTERRUPTED by SIGTERM: 1 interrupted, 0 not started" in lines[-1], out
    assert image_files(dest, "orders") == before  # the previous image is in force, byte for byte
    report = json.loads((dest / "_sync_report.json").read_text())
    assert report["interrupted"] == "SIGTERM"
    assert [(t["table"], t["status"]) for t in report["tables"]] == [("orders", "interrupted")]
    text = metrics_of(prom)
    assert 'sparsesync_sync_table_status{status="interrupted",table="orders"} 1.0' in text
    assert 'sparsesync_sync_table_status{status="ok",table="orders"} 0.0' in text
    assert 'sparsesync_sync_interrupted{signal="SIGTERM"} 1.0' in text
    assert not (dest / "orders" / "_sync.lock").exists()

    # No lock blocks the next run, which brings the image up to date.
    summary = sync_many(db.url, ["orders"], str(dest), OPTIONS)
    assert summary.exit_code() == 0 and summary.interrupted is None, summary.tables
    assert image_ids(dest, "orders") == source_ids(db, "orders")


def test_sigint_many_tables_commits_the_finished_one_and_starts_no_new_one(database, tmp_path):
    db, dest = database, tmp_path / "lake"
    for name, rows in (("big", 600), ("mid", 300), ("tiny", 5)):  # synced largest first
        db.execute(WIDE.format(name=name))
        fill(db, name, 1, rows)
    first_sync(db, dest, "big", "mid", "tiny")
    for name in ("big", "mid", "tiny"):
        db.execute(f"UPDATE `{name}` SET v = 'changed' WHERE id = 5", f"INSERT INTO `{name}` VALUES (100000, 'new', 'x')")
    before = {t: image_files(dest, t) for t in ("mid", "tiny")}
    prom = tmp_path / "sync.prom"

    holder = db.admin.connect()
    holder.exec_driver_sql("LOCK TABLES mid WRITE")  # mid's first read waits on the server until UNLOCK
    try:
        proc = start(["sync", db.url, "--all", "--connections", "1", "--dest", str(dest), "--metrics-file", str(prom),
                      *SMALL_FILES])
        waiting = sa.text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = :u "
                          "AND STATE = 'Waiting for table metadata lock'")

        def mid_waits() -> bool:
            with db.admin.connect() as conn:
                return conn.execute(waiting, {"u": db.user}).scalar() > 0

        wait_until(mid_waits, proc, "the sync of mid waiting for its table")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)  # recorded by the sync; mid's next check comes before it exports anything
    finally:
        holder.exec_driver_sql("UNLOCK TABLES")
        holder.close()
    try:
        out, err = proc.communicate(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sync did not stop within {GRACE_S} s of SIGINT:\n{out}\n{err[-3000:]}")
    rc = proc.returncode
    assert time.monotonic() - t0 < GRACE_S

    assert rc == 130, (out, err)
    assert "interrupted by SIGINT; re-run the same command to resume (1 table(s) committed, 1 interrupted, " \
           "1 not started)" in err, err[-2000:]
    lines = out.strip().splitlines()
    assert lines[0].startswith("big  ok"), out
    assert lines[1].startswith("mid  interrupted"), out
    assert lines[2].startswith("tiny  not started"), out
    assert "INTERRUPTED by SIGINT" in lines[3]
    assert image_ids(dest, "big") == source_ids(db, "big")  # committed before the signal, reported as such
    assert {t: image_files(dest, t) for t in ("mid", "tiny")} == before
    report = json.loads((dest / "_sync_report.json").read_text())
    assert report["interrupted"] == "SIGINT"
    assert {t["table"]: t["status"] for t in report["tables"]} == {"big": "ok", "mid": "interrupted",
                                                                   "tiny": "not_started"}
    text = metrics_of(prom)
    for table, status in (("big", "ok"), ("mid", "interrupted"), ("tiny", "not_started")):
        assert f'sparsesync_sync_table_status{{status="{status}",table="{table}"}} 1.0' in text

    again = sync_many(db.url, None, str(dest), OPTIONS, connections=1)
    assert again.exit_code() == 0 and [t["status"] for t in again.tables] == ["ok"] * 3, again.tables
    for t in ("big", "mid", "tiny"):
        assert image_ids(dest, t) == source_ids(db, t)


BAD_SOURCE = "mysql+pymysql://nobody@127.0.0.1:1/nothing"  # nothing listens: connecting would fail with exit 3


def cli(*args: str):
    """The CLI in this process (typer's runner): option checks need no subprocess."""
    from typer.testing import CliRunner

    from sparsesync.cli import _register, app

    _register()
    res = CliRunner().invoke(app, list(args), terminal_width=200)
    return res.exit_code, res.stderr


@pytest.mark.parametrize("case", ["missing-dir", "is-a-dir", "parent-is-a-file"])
def test_metrics_file_is_checked_before_the_source(tmp_path, case):
    (tmp_path / "file").write_text("x")
    path = {"missing-dir": tmp_path / "no" / "such" / "m.prom", "is-a-dir": tmp_path,
            "parent-is-a-file": tmp_path / "file" / "m.prom"}[case]
    code, stderr = cli("sync", BAD_SOURCE, "orders", "--dest", str(tmp_path / "lake"), "--metrics-file", str(path))
    assert code == 2, stderr
    err = stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparsesync: error: --metrics-file"), stderr
    assert not (tmp_path / "lake").exists()  # nothing written either


def test_dest_is_checked_before_the_source(tmp_path):
    (tmp_path / "file").write_text("x")
    for dest, says in ((str(tmp_path / "file" / "lake"), "is not a directory"),
                       ("s3://Not_A_Bucket!/x", "invalid S3 bucket name")):
        code, stderr = cli("sync", BAD_SOURCE, "orders", "--dest", dest)
        assert code == 2, stderr
        err = stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sparsesync: error: --dest") and says in err[0], stderr


def test_metrics_file_failing_after_a_committed_sync_says_so_and_exits_8(database, tmp_path):
    db, dest = database, tmp_path / "lake"
    db.execute(WIDE.format(name="orders"))
    fill(db, "orders", 1, 500)
    flag, prom_dir = tmp_path / "paused", tmp_path / "prom"
    prom_dir.mkdir()
    proc = start(["sync", db.url, "orders", "--dest", str(dest), "--metrics-file", str(prom_dir / "m.prom"),
                  *SMALL_FILES], SPARSESYNC_TEST_PAUSE=f"swap::{flag}")
    wait_until(flag.exists, proc, "the image swap")
    prom_dir.rmdir()  # the metrics directory goes away while the sync runs (checked fine at its start)
    flag.unlink()  # the run goes on
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 8, (out, err)
    assert out.splitlines()[0].startswith("orders  ok  first"), out  # the summary is printed, the run committed
    assert "cannot write --metrics-file" in err and "the tables' outcome above stands; exit 8" in err, err
    assert image_ids(dest, "orders") == source_ids(db, "orders")
