"""gc removes what a killed sync leaves behind — its run folder (ledger, parts, report) and its ``<run_id>.lock``
— once --keep has passed, and never a run a live process owns or one the image has applied (local and S3).

The kill is deterministic: the child sync pauses right after its first file group's ledger entry is written
(the executor's ``record_group``), the test waits for that condition, checks the ledger on disk and then
sends SIGKILL — never a timed kill.
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
from typer.testing import CliRunner

from sparsesync.cli import _register, app
from sparsesync.executor.dest import open_sink
from sparsesync.executor.lock import destination_lock
from sparsesync.sync.gc import collect_garbage
from sparsesync.sync.duration import parse_duration
from sparsesync.sync.load import load_pending
from sparsesync.sync.table import SyncOptions, sync_table
from sparsesync.errors import UsageError
from tests.sync.conftest import SYNC_DDL, source_rows

from .dbkit import s3_bucket, s3_client, s3_env, s3_server  # noqa: F401 - fixtures
from .imagekit import Image

_register()
ROOT = Path(__file__).resolve().parents[2]
OPTS = dict(rows_per_query=400, file_size_mb=0.004, reader="pymysql")  # several file groups per run
CHILD = """
import sys
import sparsesync.executor.run as run
from sparsesync.sync.table import SyncOptions, sync_table

real = run.record_group
def record_group(store, book, res, *, run):
    real(store, book, res, run=run)   # the group's ledger entry is written (done) ...
    print("group", flush=True)
    sys.stdin.readline()              # ... and the run waits here for its SIGKILL
run.record_group = record_group
sync_table(sys.argv[1], sys.argv[2], sys.argv[3], SyncOptions(**{opts}), raise_errors=True)
print("done", flush=True)
"""


def invoke(*args):
    return CliRunner().invoke(app, list(args), terminal_width=200)


def fill(engine, table: str, lo: int, hi: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{table}` (id, v, n) SELECT seq, CONCAT('a', seq), MOD(seq, 5) "
                             f"FROM seq_{lo}_to_{hi}")


def kill_after_first_group(url: str, table: str, dest: str, ledger_done) -> None:
    """Run a sync in a child and SIGKILL it once its first file group is recorded done in its ledger."""
    import tempfile

    err = tempfile.TemporaryFile(mode="w+")
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(opts=repr(OPTS)), url, table, dest],
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = child.stdout.readline().strip()
        if line != "group":
            child.wait(timeout=60)
            err.seek(0)
            raise AssertionError(f"the child did not reach its first group: {line!r} {err.read()[-2000:]}")
        assert ledger_done(), "the first group's ledger entry is not on the destination"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        err.close()


def done_groups(ledger: bytes | None) -> int:
    if not ledger:
        return 0
    return sum(1 for g in json.loads(ledger)["groups"] if g["state"] == "done")


def crashed_run(sink, table: str) -> str:
    """The run folder (relpath) no applied run owns: the killed one."""
    applied = {r["run_id"] for r in json.loads(sink.get_bytes(f"{table}/_state.json"))["runs"]}
    runs = {p.split("/")[1] for p in sink.list(table) if p.count("/") == 2} - applied
    assert len(runs) == 1, runs
    return f"{table}/{runs.pop()}"


def warehouse_rows(wh: Path, table: str) -> list[tuple]:
    return duckdb.connect(str(wh)).execute(f'SELECT id, v, n FROM "{table}" ORDER BY id').fetchall()


@pytest.mark.mysql
def test_a_killed_sync_leaves_a_run_folder_and_a_lock_that_gc_removes(mysql_url, mysql_engine, mysql_table, tmp_path):
    table = mysql_table(SYNC_DDL, prefix="gk")
    fill(mysql_engine, table, 1, 600)
    dest = tmp_path / "lake"
    sync_table(mysql_url, table, dest, SyncOptions(**OPTS), raise_errors=True)
    wh = tmp_path / "wh.duckdb"
    load_pending(str(dest), table, f"duckdb:///{wh}")
    fill(mysql_engine, table, 601, 1500)
    sink = open_sink(str(dest))
    kill_after_first_group(mysql_url, table, str(dest), lambda: any(
        done_groups(sink.get_bytes(p)) for p in sink.list(table) if p.endswith("/_ledger.json") and
        p.split("/")[1] not in {r["run_id"] for r in json.loads(sink.get_bytes(f"{table}/_state.json"))["runs"]}))

    run = crashed_run(sink, table)
    folder = dest / run
    lock = dest / f"{run}.lock"
    assert (folder / "_ledger.json").exists() and list(folder.glob("*.parquet")) and lock.exists()
    applied_run = json.loads((dest / table / "_state.json").read_text())["runs"][0]["run_id"]

    # Younger than --keep: listed as kept, nothing removed.
    [young] = collect_garbage(str(dest), table, keep_s=3600, delete=True)
    assert young.dead_runs == [] and young.young_runs == 1 and folder.exists() and lock.exists()
    before = {p for p in dest.rglob("*") if p.is_file()}

    # A dry run lists the folder (every file of it) and its lock, and removes nothing.
    res = invoke("gc", str(dest), table, "--keep", "0s")
    assert res.exit_code == 0, res.output
    assert f"would remove crashed run {run}/" in res.stdout and f"would remove stale lock {run}.lock" in res.stdout
    assert "1 crashed run folder(s)" in res.stdout and "1 stale lock(s)" in res.stdout and "add --delete" in res.stdout
    [dry] = collect_garbage(str(dest), table, keep_s=0)
    assert dry.dead_runs == [run] and f"{run}/_ledger.json" in dry.dead_run_files and dry.locks == [f"{run}.lock"]
    assert {p for p in dest.rglob("*") if p.is_file()} == before

    res = invoke("gc", str(dest), table, "--keep", "0s", "--delete")
    assert res.exit_code == 0 and f"removed crashed run {run}/" in res.stdout, res.output
    assert not folder.exists() and not lock.exists()
    # Only the crash's leftovers went: the applied run's manifest.json and load.sql stay for lagging warehouses.
    assert {p for p in before if not str(p).startswith(str(folder) + os.sep) and p != lock} == \
        {p for p in dest.rglob("*") if p.is_file()}
    assert (dest / table / applied_run / "manifest.json").exists() and (dest / table / applied_run / "load.sql").exists()

    # A later sync and load are unaffected.
    r = sync_table(mysql_url, table, dest, SyncOptions(**OPTS), raise_errors=True)
    assert r.status == "ok" and r.sequence == 2
    load_pending(str(dest), table, f"duckdb:///{wh}")
    assert warehouse_rows(wh, table) == source_rows(mysql_engine, table)
    [after] = collect_garbage(str(dest), table, keep_s=0, delete=True)
    assert after.dead_runs == [] and after.locks == []


@pytest.mark.mysql
@pytest.mark.s3
def test_a_killed_first_sync_on_s3_is_removed_by_gc(mysql_url, mysql_engine, mysql_table, s3_bucket, s3_client, tmp_path):
    """The table's very first sync is killed: no image state yet, and gc still finds and removes the run."""
    table = mysql_table(SYNC_DDL, prefix="gs")
    fill(mysql_engine, table, 1, 600)
    dest = f"s3://{s3_bucket}/lake"
    sink = open_sink(dest)
    keys = lambda: {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="lake/").get("Contents", [])}  # noqa: E731
    try:
        kill_after_first_group(mysql_url, table, dest, lambda: any(
            done_groups(sink.get_bytes(p)) for p in sink.list(table) if p.endswith("/_ledger.json")))
        [run] = {f"{table}/{k.split('/')[2]}" for k in keys() if k.count("/") == 3}
        before = keys()
        assert f"lake/{table}/_state.json" not in before
        assert f"lake/{run}.lock" in before and f"lake/{run}/_ledger.json" in before
        assert any(k.endswith(".parquet") for k in before)
        # An upload the killed run left open is a staging leftover of its folder.
        s3_client.create_multipart_upload(Bucket=s3_bucket, Key=f"lake/{run}/part-09999.parquet")
        # Another run of the same sequence that a live process owns (its lock held here): never touched.
        live = f"{table}/20200101T000000Z-000001"
        sink.put_bytes(f"{live}/part-00000.parquet", b"PAR1")
        # The lock objects name the killed child (a dead process on this host): stale at once. gc takes the
        # table's sync lock over the same way (and lets it go: that object is gone afterwards).
        sync_lock = f"lake/{table}/_sync.lock"
        with destination_lock(sink, f"{live}.lock", purpose="execute plan live"):
            before = keys()
            [dry] = collect_garbage(dest, keep_s=0)  # every table: found without a state
            assert dry.table == table and dry.dead_runs == [run] and dry.locks == [f"{run}.lock"]
            assert dry.staging == 1 and "execute plan live" in dry.live[0]
            assert keys() == before - {sync_lock}
            [done] = collect_garbage(dest, table, keep_s=0, delete=True)
            assert done.dead_runs == [run] and keys() == {f"lake/{live}/part-00000.parquet", f"lake/{live}.lock"}
            assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
        [later] = collect_garbage(dest, table, keep_s=0, delete=True)  # its owner let go: now it is dead
        assert later.dead_runs == [live] and keys() == set()
    finally:
        sink.close()
    r = sync_table(mysql_url, table, dest, SyncOptions(**OPTS), raise_errors=True)
    assert r.status == "ok" and r.sequence == 1
    wh = tmp_path / "wh.duckdb"
    load_pending(dest, table, f"duckdb:///{wh}")
    assert warehouse_rows(wh, table) == source_rows(mysql_engine, table)


def crashed_folder(root: Path, table: str, rid: str) -> Path:
    """A run folder as a crash leaves it: a ledger, a part, a report, no manifest, not in the state."""
    folder = root / table / rid
    folder.mkdir(parents=True)
    (folder / "_ledger.json").write_text('{"groups": []}')
    (folder / "part-00000.parquet").write_bytes(b"PAR1")
    (folder / "part-00001.parquet.2147483646.sparsesync-tmp").write_bytes(b"half")  # a staging leftover
    return folder


def test_a_live_lock_and_its_run_are_never_removed_but_a_dead_owners_lock_is(tmp_path):
    img = Image(tmp_path)
    img.sync({1: "a", 2: "b"}, [])
    root = tmp_path
    live = crashed_folder(root, "orders", "20260101T050000Z-000002")
    dead = crashed_folder(root, "orders", "20260101T040000Z-000002")
    (root / "orders" / f"{dead.name}.lock").write_text(json.dumps({"pid": 999999999, "host": "elsewhere"}))
    # An applied run's lock left by a killed process (nobody holds its flock): stale.
    applied = img.runs[-1]["run_id"]
    (root / "orders" / f"{applied}.lock").write_text(json.dumps({"pid": 999999999, "host": "h"}))
    sink = open_sink(str(root))
    with destination_lock(sink, f"orders/{live.name}.lock", purpose="execute plan x"):
        [res] = collect_garbage(str(root), keep_s=0, delete=True)
        assert res.dead_runs == [f"orders/{dead.name}"] and res.staging == 1
        assert sorted(res.locks) == sorted([f"orders/{dead.name}.lock", f"orders/{applied}.lock"])
        assert len(res.live) == 1 and f"pid {os.getpid()}" in res.live[0] and "execute plan x" in res.live[0]
        assert live.exists() and (live / "part-00000.parquet").exists() and (live / "part-00001.parquet.2147483646.sparsesync-tmp").exists()
        assert (root / "orders" / f"{live.name}.lock").exists()
        assert not dead.exists() and not (root / "orders" / f"{dead.name}.lock").exists()
        assert not (root / "orders" / f"{applied}.lock").exists()
    assert (root / "orders" / applied / "manifest.json").exists()  # an applied run's folder stays
    assert "1 run(s) of a live process" in res.summary()


def test_a_run_folder_with_a_staging_file_of_a_live_process_is_kept(tmp_path):
    img = Image(tmp_path)
    img.sync({1: "a"}, [])
    folder = crashed_folder(tmp_path, "orders", "20260101T050000Z-000002")
    (folder / f"part-00002.parquet.{os.getpid()}.sparsesync-tmp").write_bytes(b"x")
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (folder / f"part-00003.parquet.{sleeper.pid}.sparsesync-tmp").write_bytes(b"x")
        [res] = collect_garbage(str(tmp_path), keep_s=0, delete=True)
        assert res.dead_runs == [] and folder.exists() and f"pid {sleeper.pid}" in res.live[0]
    finally:
        sleeper.kill()
        sleeper.wait()
    [res] = collect_garbage(str(tmp_path), keep_s=0, delete=True)
    assert res.dead_runs == [f"orders/{folder.name}"] and res.staging == 3 and not folder.exists()


def test_a_run_the_current_manifest_points_into_is_kept(tmp_path):
    """A crash between current.manifest.json and _state.json leaves the manifest ahead: a COPY may read it."""
    img = Image(tmp_path)
    img.sync({1: "a"}, [])
    folder = crashed_folder(tmp_path, "orders", "20260101T050000Z-000002")
    manifest = tmp_path / "orders" / "current.manifest.json"
    manifest.write_text(json.dumps({"entries": [{"url": str((folder / "part-00000.parquet").resolve())}]}))
    [res] = collect_garbage(str(tmp_path), keep_s=0, delete=True)
    assert res.dead_runs == [] and (folder / "part-00000.parquet").exists()


def test_durations_need_a_unit():
    with pytest.raises(UsageError) as err:
        parse_duration("7", "--keep")
    assert err.value.one_line().startswith("--keep 7 has no unit") and "7d" in err.value.one_line()
    assert parse_duration("7d") == 7 * 86400 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    for bad in ("7x", "soon", "", "-1d", "7 days"):
        with pytest.raises(UsageError):
            parse_duration(bad, "--lookback")
    res = invoke("gc", "/nonexistent-sparsesync", "--keep", "7")
    assert res.exit_code == 2 and "--keep 7 has no unit" in res.output and "Traceback" not in res.output
    res = invoke("sync", "mysql+pymysql://u@127.0.0.1:1/d", "t", "--dest", "/nonexistent-sparsesync", "--lookback", "10")
    assert res.exit_code == 2 and "--lookback 10 has no unit" in res.output
    for command, option, default in (("gc", "--keep", "7d"), ("sync", "--lookback", "10m")):
        text = invoke(command, "--help").stdout
        assert option in text and f"[default: {default}]" in text and "90s" in text
