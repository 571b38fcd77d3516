"""The ``execute``, ``verify`` and ``run`` commands: thin wrappers, one-line errors, help examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sparsesync.planner.api import make_plan
from tests.executor.test_run import assert_clean_folder, make_sqlite_table, out_dir, read_output, sparse_keys


@pytest.fixture(scope="module")
def app():
    from sparsesync.cli import _register, app

    _register()
    return app


def invoke(app, *args):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def planned(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSESYNC_SOURCE_URL", raising=False)
    keys = sparse_keys(1200, seed=2)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=150, file_size=10_000)
    return plan, plan.save(tmp_path / "plan.json"), keys


def test_execute_then_verify(app, planned, sqlite_url, tmp_path):
    plan, path, keys = planned
    dest = tmp_path / "out"
    res = invoke(app, "execute", str(path), "--dest", str(dest), "--source", sqlite_url, "--iam-role", "arn:aws:iam::1:role/r")
    assert res.exit_code == 0, res.output
    assert f"{len(keys):,} rows" in res.stdout and "manifest:" in res.stdout
    assert [r[0] for r in read_output(dest, plan, "id")] == sorted(keys)
    assert_clean_folder(dest, plan)
    assert "arn:aws:iam::1:role/r" in (out_dir(dest, plan) / "copy.sql").read_text()
    res = invoke(app, "verify", str(path), "--dest", str(dest), "--source", sqlite_url, "--all-columns")
    assert res.exit_code == 0 and "matches the source" in res.stdout
    res = invoke(app, "execute", str(path), "--dest", str(dest), "--source", sqlite_url)
    assert res.exit_code == 0 and "already completed" in res.stdout
    res = invoke(app, "execute", str(path), "--dest", str(dest), "--source", sqlite_url, "--overwrite", "--compression", "gzip")
    assert res.exit_code == 0 and json.loads((out_dir(dest, plan) / "_report.json").read_text())["compression"] == "gzip"


def test_verify_failure_exit_code(app, planned, sqlite_url, tmp_path):
    import sqlalchemy as sa

    plan, path, keys = planned
    dest = tmp_path / "out"
    assert invoke(app, "execute", str(path), "--dest", str(dest), "--source", sqlite_url).exit_code == 0
    with sa.create_engine(sqlite_url).begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO t (id, v) VALUES ({keys[-1] + 1}, 'new')")
    res = invoke(app, "verify", str(path), "--dest", str(dest), "--source", sqlite_url)
    assert res.exit_code == 9 and "missing rows: #" in res.stderr and "Traceback" not in res.output


def test_dry_run_prints_sql_and_writes_nothing(app, planned, sqlite_url, tmp_path):
    plan, path, _ = planned
    dest = tmp_path / "out"
    res = invoke(app, "execute", str(path), "--dest", str(dest), "--source", sqlite_url, "--dry-run")
    assert res.exit_code == 0, res.output
    selects = [l for l in res.stdout.splitlines() if l.startswith("SELECT")]
    assert len(selects) == len(plan.ranges) and "dry run" in res.stdout
    assert not dest.exists()


def test_bad_options_are_one_line(app, planned, sqlite_url, tmp_path):
    _, path, _ = planned
    res = invoke(app, "execute", str(path), "--dest", str(tmp_path / "o"), "--source", sqlite_url, "--compression", "lz77")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "--compression" in res.stderr
    res = invoke(app, "execute", str(path), "--dest", "ftp://x/y", "--source", sqlite_url)
    assert res.exit_code == 2 and "unsupported destination" in res.stderr
    assert not (tmp_path / "o").exists()


def test_run_plans_saves_and_executes(app, sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keys = sparse_keys(900, seed=12)
    make_sqlite_table(sqlite_url, keys)
    res = invoke(app, "run", sqlite_url, "t", "--dest", "out", "--rows-per-query", "100", "--no-cache")
    assert res.exit_code == 0, res.output
    plans = list(Path("plans").glob("t-*.json"))
    assert len(plans) == 1
    from sparsesync.planner.plan import load_plan

    plan = load_plan(plans[0])
    assert [r[0] for r in read_output(tmp_path / "out", plan, "id")] == sorted(keys)


@pytest.mark.parametrize("command", ["execute", "verify", "run"])
def test_help_has_an_example(app, command):
    res = invoke(app, command, "--help")
    assert res.exit_code == 0 and "Example" in res.stdout and "sparsesync " + command in res.stdout
