"""Roadmap Phase 4 monitoring: per-range efficiency and sparse-region events, the report's metrics."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from sparsesync import logs
from sparsesync.cli import _register, app

_register()

DENSE, SPARSE_FROM, STRIDE, SPARSE_N = 3000, 1_000_000, 400, 500


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    keys = list(range(1, DENSE + 1)) + [SPARSE_FROM + STRIDE * i for i in range(SPARSE_N)]
    con.executemany("INSERT INTO t VALUES (?, 'x')", [(k,) for k in keys])
    con.commit()
    con.close()
    yield f"sqlite:///{path}"
    logs.reset()


def _run(tmp_path, source, *root_args):
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, [*root_args, "run", source, "t", "--dest", str(out), "--rows-per-query", "1000", "--no-cache",
              "--plans-dir", str(tmp_path / "plans")],
    )
    return res, out


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_info_level_logs_efficiency_and_sparse_regions_as_json(tmp_path, source):
    res, out = _run(tmp_path, source, "--log-level", "info")
    assert res.exit_code == 0, res.output
    events = _events(res.stderr)
    done = [e for e in events if e["event"] == "range_done"]
    plan = json.loads(next((tmp_path / "plans").glob("t-*.json")).read_text())
    assert len(done) == len(plan["ranges"])  # one per range, the tail included
    assert sum(e["actual_rows"] for e in done) == DENSE + SPARSE_N
    assert all(e["efficiency"] == e["actual_rows"] / e["planned_rows"] for e in done if e["planned_rows"])
    sparse = [e for e in events if e["event"] == "sparse_region"]
    assert sparse and all(e["density"] < 0.1 for e in sparse)
    assert any(int(e["lo"]) <= SPARSE_FROM + STRIDE < int(e["hi"]) for e in sparse)


def test_switches_silence_their_events_and_default_level_is_quiet(tmp_path, source):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("monitoring:\n  log_level: info\n  log_efficiency_metrics: false\n")
    res, _ = _run(tmp_path, source, "--config", str(cfg))
    assert res.exit_code == 0, res.output
    kinds = {e["event"] for e in _events(res.stderr)}
    assert "range_done" not in kinds and "sparse_region" in kinds

    res, _ = _run(tmp_path / "again", source)
    assert res.exit_code == 0, res.output
    assert not _events(res.stderr)  # warning level by default: no info events


def test_report_metrics_match_the_run(tmp_path, source):
    res, out = _run(tmp_path, source)
    assert res.exit_code == 0, res.output
    report = json.loads(next(out.rglob("_report.json")).read_text())
    m = report["metrics"]
    span = SPARSE_FROM + STRIDE * (SPARSE_N - 1) - 1 + 1
    assert m["fixed_stride_queries"] == -(-span // 50_000)
    assert m["queries_saved_vs_fixed_stride"] == m["fixed_stride_queries"] - report["queries"]
    assert m["files_consolidated"] == len(report["ranges"]) - report["files"]
    assert m["sparse_regions"] >= 1
    assert m["mean_range_efficiency"] == pytest.approx(1.0)  # exact pre-scan: estimates are the counts
    assert "metrics:" in res.stdout


def test_bad_log_level_is_one_line(tmp_path, source):
    res = CliRunner().invoke(app, ["--log-level", "loud", "plan", source, "t", "-o", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "--log-level" in res.stderr and res.stderr.count("\n") == 1
