"""Bad input to ``sparsesync execute``: one clear line on stderr, non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsesync.planner.api import make_plan
from sparsesync.errors import DestinationError, DriftError, PlanError, SourceError
from tests.conftest import insert_keys

CLI = [sys.executable, "-c", "from sparsesync.cli import main; main()"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    env.pop("SPARSESYNC_SOURCE_PASSWORD", None)
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=env, timeout=120)


def assert_one_line_failure(proc, exit_code: int, *words: str) -> None:
    assert proc.returncode == exit_code, (proc.returncode, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sparsesync: error: ") and "Traceback" not in proc.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


@pytest.fixture
def mysql_plan(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(20))")
    insert_keys(mysql_engine, name, range(1, 500), extra=lambda k: f"v{k}")
    plan = make_plan(mysql_url, name, rows_per_query=100)
    return plan, plan.save(tmp_path / "plan.json"), name


def test_missing_plan(tmp_path):
    proc = run_cli("execute", str(tmp_path / "nope.json"), "--dest", str(tmp_path / "out"))
    assert_one_line_failure(proc, PlanError.exit_code, "does not exist")
    assert not (tmp_path / "out").exists()


def test_malformed_plan(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format_version": "1.0", "plan_id": ')
    proc = run_cli("execute", str(bad), "--dest", str(tmp_path / "out"))
    assert_one_line_failure(proc, PlanError.exit_code, "not valid JSON")
    assert not (tmp_path / "out").exists()


def test_table_gone(mysql_plan, mysql_engine, mysql_url, tmp_path):
    plan, path, name = mysql_plan
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {name}")
    proc = run_cli("execute", str(path), "--dest", str(tmp_path / "out"), "--source", mysql_url)
    assert_one_line_failure(proc, DriftError.exit_code, "no longer exists", name)
    assert not (tmp_path / "out").exists()


def test_unwritable_destination(mysql_plan, mysql_url, tmp_path):
    _, path, _ = mysql_plan
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a directory")
    proc = run_cli("execute", str(path), "--dest", str(blocker / "sub"), "--source", mysql_url)
    assert_one_line_failure(proc, DestinationError.exit_code, "cannot")
    assert blocker.read_text() == "a file, not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "plan.json"]


def test_wrong_credentials(mysql_plan, mysql_url, tmp_path):
    _, path, _ = mysql_plan
    url = mysql_url.replace("root@", "root:wrong-secret-pw@", 1)
    proc = run_cli("execute", str(path), "--dest", str(tmp_path / "out"), "--source", url)
    assert_one_line_failure(proc, SourceError.exit_code, "access denied")
    assert "wrong-secret-pw" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_source_of_another_database_is_refused(mysql_plan, tmp_path):
    _, path, _ = mysql_plan
    proc = run_cli("execute", str(path), "--dest", str(tmp_path / "out"), "--source", f"sqlite:///{tmp_path}/x.db")
    assert_one_line_failure(proc, 2, "points at")
    assert not (tmp_path / "out").exists()
