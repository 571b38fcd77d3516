"""The --config file reaches the commands; command-line options override it; bad files are one line."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from sparsesync.cli import _register, app

_register()


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(1, 5001)])
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def _plan(tmp_path, *args):
    out = tmp_path / "p.json"
    result = CliRunner().invoke(app, [*args[:-2], "plan", *args[-2:], "--no-cache", "-o", str(out)])
    return result, out


def test_config_value_used_and_flag_overrides(tmp_path, source):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("plan:\n  rows_per_query: 700\n  sparse_threshold: 0.2\n")
    result, out = _plan(tmp_path, "--config", str(cfg), source, "t")
    assert result.exit_code == 0, result.output
    strategy = json.loads(out.read_text())["strategy"]
    assert strategy["rows_per_query"] == 700 and strategy["sparse_threshold"] == 0.2

    out.unlink()
    result = CliRunner().invoke(
        app, ["--config", str(cfg), "plan", source, "t", "--no-cache", "-o", str(out), "--rows-per-query", "900"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["strategy"]["rows_per_query"] == 900


def test_bad_config_is_one_line_and_writes_nothing(tmp_path, source):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("plan:\n  rows_per_query: -5\n")
    result, out = _plan(tmp_path, "--config", str(cfg), source, "t")
    assert result.exit_code == 2
    assert "plan.rows_per_query" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_config_from_environment(tmp_path, source, monkeypatch):
    cfg = tmp_path / "env.yaml"
    cfg.write_text("plan:\n  rows_per_query: 1234\n")
    monkeypatch.setenv("SPARSESYNC_CONFIG", str(cfg))
    result, out = _plan(tmp_path, source, "t")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["strategy"]["rows_per_query"] == 1234
