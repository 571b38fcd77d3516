"""``make_plan`` and ``sparsesync plan`` end to end: the roadmap case, auto density, CLI output and refusals."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import sparsesync.planner.api as api
from sparsesync.planner.api import make_plan
from sparsesync.planner.plan import load_plan
from sparsesync.cli import _register, app

REPO = Path(__file__).resolve().parents[2]
_register()


def roadmap_table(mysql_engine, mysql_table) -> str:
    """40,000 dense ids, then 10,000 ids one in 500: keys 1 … 5,040,000."""
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(20))")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {name} (id, v) SELECT seq, 'x' FROM seq_1_to_40000")
        conn.exec_driver_sql(f"INSERT INTO {name} (id, v) SELECT 40000 + seq * 500, 'y' FROM seq_1_to_10000")
    return name


def test_roadmap_case_three_selects_one_file(mysql_engine, mysql_table, query_log, tmp_path):
    name = roadmap_table(mysql_engine, mysql_table)
    query_log.mark()
    plan = make_plan(mysql_engine, name, cache_path=str(tmp_path / "c.duckdb"))
    selects = query_log.count(name)
    # A fixed 50,000-key stride over keys 1 … 5,040,000 would issue ceil(5,040,000 / 50,000) = 101
    # range queries and write 101 files (one per stride); the density-aware plan does this:
    stride_queries = math.ceil((5_040_000 - 1 + 1) / 50_000)
    assert stride_queries == 101
    assert selects <= 3, query_log.statements(name)
    assert plan.estimates.files == 1 and len(plan.files) == 1
    assert plan.estimates.queries == len(plan.ranges) == 2  # one range + the open tail
    assert plan.estimates.rows == 50_000 and plan.ranges[0].exact
    assert plan.strategy.density == "exact" and plan.strategy.density_requested == "auto"
    (region,) = plan.histogram.sparse_regions
    assert 40_000 <= region.lo <= 50_000 and region.hi == 5_040_001


def test_auto_switches_to_sampled_for_big_tables(mysql_engine, mysql_table, monkeypatch, tmp_path):
    name = roadmap_table(mysql_engine, mysql_table)
    monkeypatch.setattr(api, "AUTO_EXACT_MAX_ROWS", 1000)
    monkeypatch.setattr(api, "SAMPLED_READS_PER_RANGE", 100)
    plan = make_plan(mysql_engine, name, rows_per_query=10_000, use_cache=False)
    assert plan.strategy.density == "sampled" and "auto:" in plan.strategy.density_reason
    assert "> 1,000" in plan.strategy.density_reason
    assert not plan.histogram.exact
    assert 25_000 <= plan.estimates.rows <= 100_000
    # Many small ranges: sampling would read about as much as a scan, so auto stays exact.
    fine = make_plan(mysql_engine, name, rows_per_query=100, use_cache=False)
    assert fine.strategy.density == "exact" and "--rows-per-query 100" in fine.strategy.density_reason


def test_plan_file_round_trip_and_schema_fingerprint(tmp_path, sqlite_url):
    eng = sa.create_engine(sqlite_url)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount NUMERIC(10,2), note TEXT)")
        conn.execute(sa.text("INSERT INTO orders (id) VALUES (:k)"), [{"k": k * 7} for k in range(2000)])
    plan = make_plan(sqlite_url, "orders", rows_per_query=300, cache_path=str(tmp_path / "c.duckdb"))
    path = plan.save(tmp_path / "p.json")
    back = load_plan(path)
    assert back == plan and len(plan.fingerprint.schema_hash) == 64
    with eng.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE orders ADD COLUMN extra INT")
    eng.dispose()
    again = make_plan(sqlite_url, "orders", rows_per_query=300, cache_path=str(tmp_path / "c.duckdb"))
    assert again.fingerprint.schema_hash != plan.fingerprint.schema_hash and not again.strategy.from_cache


def test_cli_writes_plan_and_prints_execute_line(mysql_url, mysql_engine, mysql_table, tmp_path, monkeypatch):
    name = roadmap_table(mysql_engine, mysql_table)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["plan", mysql_url, name, "--rows-per-query", "20000", "--cache", str(tmp_path / "c.duckdb")])
    assert res.exit_code == 0, res.output
    written = list((tmp_path / "plans").glob(f"{name}-*.json"))
    assert len(written) == 1
    rel = Path("plans") / written[0].name
    assert f"sparsesync execute {rel} --dest" in res.stdout
    assert "ranges" in res.stdout and "file(s)" in res.stdout
    plan = load_plan(written[0])
    assert plan.strategy.rows_per_query == 20_000 and sum(r.est_rows for r in plan.ranges) == 50_000
    doc = json.loads(written[0].read_text())
    assert "password" not in json.dumps(doc).lower()
    res2 = CliRunner().invoke(app, ["plan", mysql_url, name, "--rows-per-query", "20000", "--cache", str(tmp_path / "c.duckdb"), "-o", "mine.json"])
    assert res2.exit_code == 0 and "histogram from cache" in res2.stdout and (tmp_path / "mine.json").exists()


def test_help_has_an_example():
    res = CliRunner().invoke(app, ["plan", "--help"])
    assert res.exit_code == 0
    for opt in ("--density", "--cache", "--refresh", "--no-cache", "--tinyint1-as-bool", "--wide-decimal-as-string", "--sparse-threshold", "Example"):
        assert opt in res.stdout


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["{url}", "no_such_table"], 3, "not found"),
        (["mysql+pymysql://root:wrong@127.0.0.1:3306/test", "{table}"], 3, "cannot connect"),
        (["not a url", "{table}"], 2, "cannot parse source URL"),
        (["{url}", "{table}", "--density", "fast"], 2, "--density"),
        (["{url}", "{table}", "--rows-per-query", "0"], 2, "--rows-per-query"),
        (["{url}", "{table}", "--file-size", "0"], 2, "--file-size"),
        (["{url}", "{table}", "--sparse-threshold", "3"], 2, "--sparse-threshold"),
        (["{url}", "{table}", "--no-cache", "--refresh"], 2, "--no-cache"),
        (["{url}", "{composite}"], 3, "composite primary key"),
    ],
)
def test_cli_refusals_are_one_line_and_write_nothing(mysql_url, mysql_engine, mysql_table, tmp_path, monkeypatch, args, code, needle):
    table = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY)")
    composite = mysql_table("CREATE TABLE {name} (a INT, b INT, PRIMARY KEY (a, b))")
    monkeypatch.chdir(tmp_path)
    argv = ["plan"] + [a.format(url=mysql_url, table=table, composite=composite) for a in args] + ["-o", "out.json", "--cache", str(tmp_path / "c.duckdb")]
    if "--no-cache" in argv:
        argv = argv[:-2]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sparsesync: error:") and needle in lines[0], res.stderr
    assert "wrong" not in res.stderr, "the password never appears"
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "plans").exists()


def test_real_process_prints_no_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sparsesync", "plan", f"sqlite:///{tmp_path / 'missing.db'}", "nope", "-o", str(tmp_path / "x.json"), "--no-cache"],
        capture_output=True, text=True, cwd=REPO,
    )
    if "No module named sparsesync.__main__" in out.stderr:
        out = subprocess.run(
            [str(Path(sys.executable).parent / "sparsesync"), "plan", f"sqlite:///{tmp_path / 'missing.db'}", "nope", "-o", str(tmp_path / "x.json"), "--no-cache"],
            capture_output=True, text=True, cwd=REPO,
        )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "missing.db" in out.stderr and "does not exist" in out.stderr
    assert not (tmp_path / "x.json").exists()
