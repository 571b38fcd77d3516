"""Crash and resume: SIGKILL ``sparsesync execute`` at seeded random moments, resume, compare exactly.

Each trial exports into a fresh destination, kills the process after a random delay (calibrated on an
uninterrupted run so most kills land mid-run), then re-runs the same command to completion. The output
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

from planner.api import make_plan
from tests.executor.test_run import MYSQL_DDL, assert_clean_folder, fill_mysql, out_dir, read_output, sparse_keys

TRIALS = 10
CLI = [sys.executable, "-c", "from sparsesync.cli import main; main()"]


def _cmd(plan_path, dest, url):
    return CLI + ["execute", str(plan_path), "--dest", str(dest), "--source", url]


def _env():
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    return env


def test_sigkill_at_random_points_then_resume(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(3000, seed=42)
    fill_mysql(mysql_engine, name, keys)
    plan = make_plan(mysql_url, name, rows_per_query=60, file_size=600)
    assert len(plan.files) >= 10, "many small file groups, so kills land between and inside groups"
    plan_path = plan.save(tmp_path / "plan.json")
    with mysql_engine.connect() as conn:
        want = conn.exec_driver_sql(f"SELECT id, v, CAST(n AS CHAR), b FROM {name} ORDER BY id").all()
    want = [(r[0], r[1], r[2], bytes(r[3])) for r in want]

    started = time.monotonic()
    subprocess.run(_cmd(plan_path, tmp_path / "calib", mysql_url), check=True, env=_env(), capture_output=True)
    full = time.monotonic() - started

    rng = random.Random(20240601)
    mid_run = 0
    for trial in range(TRIALS):
        dest = tmp_path / f"d{trial}"
        proc = subprocess.Popen(_cmd(plan_path, dest, mysql_url), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.35, 1.0) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        folder = out_dir(dest, plan)
        if (folder / "_ledger.json").exists() and not (folder / "manifest.json").exists():
            mid_run += 1
        done = subprocess.run(_cmd(plan_path, dest, mysql_url), env=_env(), capture_output=True, text=True)
        assert done.returncode == 0, f"trial {trial}: {done.stderr}"
        got = read_output(dest, plan, "id, v, CAST(n AS VARCHAR), b")
        assert [(r[0], r[1], r[2], bytes(r[3])) for r in got] == want, f"trial {trial}"
        assert_clean_folder(dest, plan)
        report = json.loads((folder / "_report.json").read_text())
        assert report["rows"] == len(keys)
    assert mid_run >= TRIALS // 2, f"only {mid_run} of {TRIALS} kills landed mid-run"
