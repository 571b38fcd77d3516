"""SIGINT / SIGTERM during ``sparsesync execute`` and ``run`` (issue 17, finding 6), real subprocesses on MariaDB.

Deterministic: the ``SPARSESYNC_TEST_PAUSE`` hook of :mod:`sparsesync.interrupt` makes the run stop before a
known file group (it creates a file and waits); the test waits for that file, then sends the signal.
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

from sparsesync.executor.run import execute_plan
from sparsesync.executor.sink import STAGING_MARK
from sparsesync.planner.api import make_plan
from sparsesync.planner.plan import load_plan

EXE = Path(sys.executable).with_name("sparsesync")
CLI = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "sparsesync"]
GRACE_S = 30
WIDE = "CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(40), pad VARCHAR(2000))"


@pytest.fixture
def wide_table(mysql_engine, mysql_table):
    """3,000 rows of ~2 KB: several 1 MB file groups."""
    name = mysql_table(WIDE, prefix="sig")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{name}` SELECT seq, CONCAT('v', seq), REPEAT(MD5(seq), 60) FROM seq_1_to_3000")
        conn.exec_driver_sql(f"ANALYZE TABLE `{name}`")
    return name


def source_rows(engine, table: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT id, v, pad FROM `{table}` ORDER BY id")]


def output_rows(folder: Path) -> list[tuple]:
    urls = [e["url"] for e in json.loads((folder / "manifest.json").read_text())["entries"]]
    return duckdb.sql(f"SELECT id, v, pad FROM read_parquet({urls!r}) ORDER BY id").fetchall()


def run_until_paused(args: list[str], flag: Path, env: dict, point: str = "group") -> subprocess.Popen:
    """Start the command; return once it stopped at ``point`` of file group 1 (group 0 is read by then)."""
    proc = subprocess.Popen(CLI + args, env=dict(env, SPARSESYNC_TEST_PAUSE=f"{point}:1:{flag}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not flag.exists():  # group 0 read, group 1 about to start
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before its second file group:\n{out}\n{err[-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the second file group"
        time.sleep(0.02)
    return proc


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, str, str]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the run did not stop within {GRACE_S} s of the signal:\n{out}\n{err[-3000:]}")
    assert time.monotonic() - t0 < GRACE_S
    return proc.returncode, out, err


def assert_resumable(folder: Path, *, serial: bool, mid_group: bool = False) -> int:
    """Interrupted cleanly: no lock file, no staged part, no manifest; the ledger keeps finished groups (with one
    worker, group 0 is done before group 1 starts; with two, group 0 may have been stopped mid-read too).
    Returns how many groups are done."""
    assert not folder.with_name(folder.name + ".lock").exists()
    assert not [p for p in folder.rglob("*") if STAGING_MARK in p.name]
    assert not (folder / "manifest.json").exists()
    states = [g["state"] for g in json.loads((folder / "_ledger.json").read_text())["groups"]]
    assert len(states) >= 2 and set(states) <= {"done", "running", "pending"} and set(states) != {"done"}, states
    if serial:
        assert states[0] == "done", states
    if mid_group:  # group 1 was being written when the signal came: its staged part is gone, it is redone
        assert states[1] == "running", states
    parts = {p.name for p in folder.glob("*.parquet")}
    done = [g for g in json.loads((folder / "_ledger.json").read_text())["groups"] if g["state"] == "done"]
    assert parts == {Path(p["name"]).name for g in done for p in g["parts"]}  # only finished groups' parts
    return len(done)


@pytest.mark.parametrize("sig,workers,code,point", [(signal.SIGTERM, 1, 143, "batch"), (signal.SIGINT, 2, 130, "group")])
def test_execute_stops_between_file_groups_and_resumes(mysql_url, mysql_engine, wide_table, tmp_path, sig, workers,
                                                        code, point):
    made = make_plan(mysql_url, wide_table, rows_per_query=500, file_size=1024 * 1024, use_cache=False)
    plan, plan_id = made.save(tmp_path / "plan.json"), made.plan_id
    dest = tmp_path / "out"
    env = dict(os.environ, SPARSESYNC_SOURCE_URL=mysql_url)
    args = ["execute", str(plan), "--dest", str(dest), "--workers", str(workers)]

    proc = run_until_paused(args, tmp_path / "paused", env, point)
    if point == "batch":  # group 1's part is being written: its staged file appears (encoded on a thread)
        deadline = time.monotonic() + 60
        while not [p for p in (dest / wide_table / plan_id).iterdir() if STAGING_MARK in p.name]:
            assert time.monotonic() < deadline, "group 1's staged part never appeared"
            time.sleep(0.02)
    rc, out, err = stop(proc, sig)
    name = signal.Signals(sig).name
    assert rc == code, (out, err)
    assert err.strip().splitlines()[-1] == f"sparsesync: interrupted by {name}; re-run the same command to resume", err
    assert "Traceback" not in err
    folder = dest / wide_table / plan_id
    done = assert_resumable(folder, serial=workers == 1, mid_group=point == "batch")

    again = execute_plan(made, str(dest), source_url=mysql_url, workers=workers)  # the same run, resumed
    assert again.status == "done" and again.groups_skipped == done, again
    assert output_rows(folder) == source_rows(mysql_engine, wide_table)


def test_run_interrupted_names_the_execute_line_that_resumes(mysql_url, mysql_engine, wide_table, tmp_path):
    dest, plans = tmp_path / "out", tmp_path / "plans"
    env = dict(os.environ, SPARSESYNC_SOURCE_URL=mysql_url)
    proc = run_until_paused(["run", mysql_url, wide_table, "--dest", str(dest), "--plans-dir", str(plans),
                             "--file-size", "1", "--rows-per-query", "500", "--no-cache"], tmp_path / "paused", env)
    rc, out, err = stop(proc, signal.SIGTERM)
    assert rc == 143, (out, err)
    (plan,) = plans.glob("*.json")
    last = err.strip().splitlines()[-1]
    assert last == f"sparsesync: interrupted by SIGTERM; resume with: sparsesync execute {plan} --dest {dest} " \
                   "--source SOURCE_URL", err
    folder = dest / wide_table / json.loads(plan.read_text())["plan_id"]
    assert_resumable(folder, serial=True)
    again = execute_plan(load_plan(plan), str(dest), source_url=mysql_url)
    assert again.status == "done" and again.groups_skipped >= 1, again
    assert output_rows(folder) == source_rows(mysql_engine, wide_table)


def test_a_signal_is_a_request_inside_a_run_and_acts_at_once_outside():
    """The mechanism itself, in this process: inside a run the first SIGTERM only sets every run's stop event
    (and events made later start set); outside a run SIGINT raises at once; both leave as Interrupted."""
    from sparsesync import interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(interrupt.Interrupted) as info:
        with interrupt.handling():
            with interrupt.run_scope():
                stop = interrupt.stop_event()
                os.kill(os.getpid(), signal.SIGTERM)
                deadline = time.monotonic() + 10
                while interrupt.requested() is None:  # the handler runs at the next bytecode of this thread
                    assert time.monotonic() < deadline
                assert stop.is_set() and interrupt.stop_event().is_set()
                assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second SIGTERM would kill
            interrupt.check()
    assert info.value.exit_code == 143
    assert info.value.one_line() == "interrupted by SIGTERM; re-run the same command to resume"
    assert interrupt.requested() is None and signal.getsignal(signal.SIGTERM) == before

    with pytest.raises(interrupt.Interrupted) as info:
        with interrupt.handling(resume="resume with: X"):
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the handler raises here, outside any run
                time.sleep(0.001)
    assert info.value.exit_code == 130 and info.value.one_line() == "interrupted by SIGINT; resume with: X"
    assert interrupt.requested() is None
