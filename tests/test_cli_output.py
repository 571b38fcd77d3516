"""Small confusing output (issue 17, finding 8) and the options closed across plan/execute/run/sync.

The queries-vs-fixed-stride line for a key span near 2^63, a shard's summary, progress counting written rows,
``verify`` of a destination without the run (exit 8, not 9), and the options ``sync``/``run``/``plan`` gained,
each wired through to what they do. SQLite sources: small and fast.
"""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import sparsesync.cli as cli
from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.executor.shard import Shard
from sparsesync.planner.api import make_plan
from tests.executor.test_run import make_sqlite_table, sparse_keys


def invoke(*args):
    cli._register()
    return CliRunner().invoke(cli.app, [str(a) for a in args])


# ---- "79,999,999,999,996 queries saved vs a fixed 50,000-key stride" ------------------------------------------
def test_count_text_reads_like_a_number():
    from sparsesync.executor.report import count_text

    assert count_text(0) == "0" and count_text(999_999) == "999,999"
    assert count_text(92_233_720_368_531) == "about 9.2×10^13"


def test_the_fixed_stride_line_has_no_astronomical_digits(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, [1, 2, 3, 2**62, 2**62 + 1])  # a key span near 4.6·10^18
    plan = make_plan(sqlite_url, "t", rows_per_query=100, file_size=20_000, use_cache=False)
    report = execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url)
    line = next(x for x in report.summary_lines() if x.startswith("metrics:"))
    assert "queries saved" not in line
    assert not re.search(r"\d{1,3}(,\d{3}){4,}", line), line  # no 13+ digit count
    assert "would take about 9.2×10^13 queries" in line and f"{report.queries:,} queries, where" in line
    # the report keeps the exact figures for tools
    assert report.metrics["fixed_stride_queries"] == -(-(2**62 + 1) // 50_000)


# ---- a shard's summary says the whole plan's rows -------------------------------------------------------------
def test_a_shards_summary_says_its_own_rows_and_labels_the_plans(sqlite_url, tmp_path):
    keys = sparse_keys(3000, seed=11)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=200, file_size=20_000, use_cache=False)
    report = execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url, shard=Shard(1, 3))
    mine = sum(plan.files[g].est_rows for g in report.shard["groups"])
    assert 0 < mine < plan.estimates.rows
    text = "\n".join(report.summary_lines())
    assert f"t shard 1/3: {report.rows:,} rows" in text
    assert f"planned ~{mine:,} rows for this shard (~{plan.estimates.rows:,} in the whole plan)" in text
    assert f"planned ~{plan.estimates.rows:,} rows," not in text


# ---- progress counts prefetched rows ---------------------------------------------------------------------------
def test_progress_counts_rows_written_apart_from_rows_read(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(1000))
    plan = make_plan(sqlite_url, "t", rows_per_query=100, file_size=20_000, use_cache=False)
    assert len(plan.files) >= 3
    events = []
    execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url, progress=events.append)
    book = json.loads((tmp_path / "out" / output_folder(plan) / "_ledger.json").read_text())
    rows_of = {g["index"]: g["rows"] for g in book["groups"]}
    committed = 0
    for ev in events:
        if ev.kind == "group":
            committed += rows_of[ev.group]
        assert ev.rows_written == committed, ev  # only committed groups, never rows read ahead
    assert events[-1].rows_written == events[-1].rows_done == 1000
    # before the first group is committed, rows were read but none written
    first = next(i for i, ev in enumerate(events) if ev.kind == "group")
    assert any(ev.rows_done > 0 and ev.rows_written == 0 for ev in events[:first])


def test_plain_progress_lines_say_written_and_read(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(600))
    plan = make_plan(sqlite_url, "t", rows_per_query=100, file_size=20_000, use_cache=False)
    path = plan.save(tmp_path / "p.json")
    res = invoke("execute", path, "--dest", tmp_path / "out", "--source", sqlite_url)
    assert res.exit_code == 0, res.output
    lines = [x for x in res.stderr.splitlines() if "done:" in x]
    assert lines and all(re.search(r"done: [\d,]+/[\d,]+ rows written, [\d,]+ read$", x) for x in lines), lines


# ---- verify with no run exits 9 ---------------------------------------------------------------------------------
def test_verify_without_a_run_at_the_destination_exits_8(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(200))
    plan = make_plan(sqlite_url, "t", rows_per_query=100, file_size=20_000, use_cache=False)
    path = plan.save(tmp_path / "p.json")
    res = invoke("verify", path, "--dest", tmp_path / "empty", "--source", sqlite_url)
    assert res.exit_code == 8, res.output
    assert "no finished run of plan" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# ---- the options closed across the commands ------------------------------------------------------------------
def test_run_refuses_shard_in_one_line_pointing_at_plan_and_execute(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(100))
    res = invoke("run", sqlite_url, "t", "--dest", tmp_path / "out", "--plans-dir", tmp_path / "plans",
                 "--shard", "1/2")
    assert res.exit_code == 2 and "execute PLAN --shard" in res.stderr, res.output
    assert not (tmp_path / "plans").exists() and not (tmp_path / "out").exists()


def test_run_dry_run_saves_the_plan_and_exports_nothing(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(300))
    res = invoke("run", sqlite_url, "t", "--dest", tmp_path / "out", "--plans-dir", tmp_path / "plans",
                 "--no-cache", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "dry run of plan" in res.stdout and "SELECT" in res.stdout
    assert len(list((tmp_path / "plans").glob("t-*.json"))) == 1 and not (tmp_path / "out").exists()


def test_run_refuses_dask_options_without_the_dask_engine_before_planning(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(100))
    res = invoke("run", sqlite_url, "t", "--dest", tmp_path / "out", "--plans-dir", tmp_path / "plans",
                 "--scheduler", "tcp://127.0.0.1:1")
    assert res.exit_code == 2 and "--engine dask" in res.stderr, res.output
    assert not (tmp_path / "plans").exists()


def test_plan_takes_plans_dir_and_refuses_it_with_o(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(100))
    res = invoke("plan", sqlite_url, "t", "--plans-dir", tmp_path / "pl", "--no-cache")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "pl").glob("t-*.json"))) == 1
    res = invoke("plan", sqlite_url, "t", "--plans-dir", tmp_path / "pl", "-o", tmp_path / "x.json", "--no-cache")
    assert res.exit_code == 2 and "pass one of them" in res.stderr and not (tmp_path / "x.json").exists()
    res = invoke("plan", sqlite_url, "t", "-o", tmp_path / "x.json", "--no-cache")  # the old spelling
    assert res.exit_code == 0 and (tmp_path / "x.json").exists()


def test_sync_refuses_snapshot_consistency_in_one_line(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(100))
    res = invoke("sync", sqlite_url, "t", "--dest", tmp_path / "lake", "--consistency", "snapshot")
    assert res.exit_code == 2 and "not available for sync" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "lake").exists()


def test_sync_checks_oversize_nul_and_memory_limit_before_any_table(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(100))
    for args, says in ((["--oversize", "chop"], "oversize"), (["--nul", "drop"], "nul"),
                       (["--memory-limit", "10"], "--memory-limit 10 MB is too small")):
        res = invoke("sync", sqlite_url, "t", "--dest", tmp_path / "lake", *args)
        assert res.exit_code == 2 and says in res.stderr, (args, res.output)
        assert not (tmp_path / "lake").exists()


@pytest.mark.mysql
def test_sync_passes_oversize_nul_retries_memory_and_staging_to_the_export(mysql_url, mysql_engine, mysql_table,
                                                                          tmp_path, monkeypatch):
    """Each new sync option reaches execute_plan with its value (none accepted and ignored)."""
    import sparsesync.sync.table as table_mod

    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(20))")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} (id, v) VALUES (:id, :v)"),
                     [{"id": k, "v": f"v{k}"} for k in sparse_keys(200)])
    seen = {}
    real = table_mod.execute_plan

    def spy(plan, dest, **kw):
        seen.update({k: kw.get(k) for k in ("oversize", "nul", "retries", "memory_limit_mb", "staging")})
        return real(plan, dest, **kw)

    monkeypatch.setattr(table_mod, "execute_plan", spy)
    staging = tmp_path / "stage"
    staging.mkdir()
    res = invoke("sync", mysql_url, name, "--dest", tmp_path / "lake", "--oversize", "truncate", "--nul", "strip",
                 "--retries", "0", "--memory-limit", "300", "--staging", staging, "--no-cache")
    assert res.exit_code == 0, res.output
    assert seen == {"oversize": "truncate", "nul": "strip", "retries": 0, "memory_limit_mb": 300,
                    "staging": str(staging)}
    seen.clear()
    res = invoke("sync", mysql_url, name, "--dest", tmp_path / "lake2", "--no-cache")
    assert res.exit_code == 0, res.output
    assert seen == {"oversize": "fail", "nul": "fail", "retries": 5, "memory_limit_mb": 512, "staging": None}
