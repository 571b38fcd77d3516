"""Crash and resume: SIGKILL ``sparsesync execute`` at seeded random moments, resume, compare exactly.

Each trial exports into a fresh destination, waits until the process starts writing (its ledger
appears), kills it after a seeded random delay spread over the writing time of an uninterrupted run,
then resumes the same plan to completion. The output
must then equal the source row for row (DuckDB read-back of keys and values) and the folder must hold
only the manifest's parts and the run's own files: no staging leftover, no orphan part.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from sparsesync.executor.run import execute_plan
from sparsesync.planner.api import make_plan
from tests.executor.test_run import MYSQL_DDL, assert_clean_folder, fill_mysql, out_dir, read_output, sparse_keys

TRIALS = 10
CLI = [sys.executable, "-c", "from sparsesync.cli import main; main()"]


def _cmd(plan_path, dest, url, workers: int = 1):
    return CLI + ["execute", str(plan_path), "--dest", str(dest), "--source", url, "--reader", "pymysql",
                  "--workers", str(workers)]


def _env():
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    return env


def test_sigkill_at_random_points_then_resume(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(3000, seed=42)
    fill_mysql(mysql_engine, name, keys)
    with mysql_engine.begin() as conn:  # fresh statistics: bytes/row, hence the grouping, is stable
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()
    plan = make_plan(mysql_url, name, rows_per_query=60, file_size=3_000)
    assert len(plan.files) >= 10, "many small file groups, so kills land between and inside groups"
    plan_path = plan.save(tmp_path / "plan.json")
    with mysql_engine.connect() as conn:
        want = conn.exec_driver_sql(f"SELECT id, v, CAST(n AS CHAR), b FROM {name} ORDER BY id").all()
    want = [(r[0], r[1], r[2], bytes(r[3])) for r in want]

    # Calibrate: when does the run start writing (ledger appears) and how long does the rest take?
    calib = out_dir(tmp_path / "calib", plan) / "_ledger.json"
    started = time.monotonic()
    proc = subprocess.Popen(_cmd(plan_path, tmp_path / "calib", mysql_url), env=_env(), stdout=subprocess.DEVNULL)
    _wait_for(calib, proc)
    writing = time.monotonic()
    assert proc.wait(timeout=120) == 0
    run_time = time.monotonic() - writing
    print(f"calibration: start {writing - started:.2f} s, writing {run_time:.2f} s, {len(plan.files)} groups")

    rng = random.Random(20240601)
    mid_run = 0
    for trial in range(TRIALS):
        dest = tmp_path / f"d{trial}"
        folder = out_dir(dest, plan)
        workers = 1 + trial % 2  # odd trials kill a parallel run: several groups in flight at once
        proc = subprocess.Popen(_cmd(plan_path, dest, mysql_url, workers), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait_for(folder / "_ledger.json", proc)  # kill while it writes, not while Python imports
        time.sleep(rng.uniform(0.0, 1.1) * run_time)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (folder / "manifest.json").exists():
            mid_run += 1
        # Resume in-process (saves an interpreter start per trial; the CLI path is the same library call).
        t_resume = time.monotonic()
        report = execute_plan(plan, str(dest), source_url=mysql_url)
        print(f"trial {trial} (workers {workers}): resumed in {time.monotonic() - t_resume:.2f} s, skipped {report.groups_skipped}")
        got = read_output(dest, plan, "id, v, CAST(n AS VARCHAR), b")
        assert [(r[0], r[1], r[2], bytes(r[3])) for r in got] == want, f"trial {trial}"
        assert_clean_folder(dest, plan)
        assert json.loads((folder / "_report.json").read_text())["rows"] == len(keys)
        assert report.status in ("done", "already-complete")
    assert mid_run >= TRIALS // 2, f"only {mid_run} of {TRIALS} kills landed mid-run"


def _wait_for(path, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            return  # finished (or failed) before we looked: the trial still resumes and checks
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)
