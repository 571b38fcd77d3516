"""Regression tests for issue 8's findings: burst after sparse keys, heavy duplicates, refinement cost,
one scan, cache granularity and drift, relative SQLite paths, plan contract at scale, corrupt cache."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from dataclasses import replace

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from sparsesync.planner import partition
from sparsesync.planner.api import make_plan
from sparsesync.planner.plan import Estimates, load_plan
from sparsesync.planner.show import summarize
from sparsesync.errors import PlanError
from tests.planner.test_estimates import check_estimates, per_range


def sqlite_keys(path, keys, *, table: str = "t") -> str:
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany(f"INSERT INTO {table} (id) VALUES (?)", [(k,) for k in keys])
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def mariadb_seq(engine, name: str, *selects: str) -> None:
    with engine.begin() as conn:
        for sel in selects:
            conn.exec_driver_sql(f"INSERT INTO {name} (id) {sel}")


BURST = [k * 10_000 for k in range(1, 4_001)] + list(range(40_000_001, 40_020_001))


def test_sampled_sees_a_dense_burst_after_sparse_keys_sqlite(tmp_path):
    """Finding 1: 4,000 keys one every 10,000, then 20,000 dense keys. Extrapolating the first 64 keys of
    the last sub-interval estimated the burst at a few hundred rows."""
    url = sqlite_keys(tmp_path / "b.db", BURST)
    plan = make_plan(url, "t", rows_per_query=4000, density="sampled", use_cache=False)
    check_estimates(plan, BURST)
    assert abs(plan.estimates.rows - len(BURST)) <= 0.25 * len(BURST)


def test_sampled_sees_a_dense_burst_after_sparse_keys_mariadb(mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
    mariadb_seq(mysql_engine, name, "SELECT seq * 10000 FROM seq_1_to_4000", "SELECT 40000000 + seq FROM seq_1_to_20000")
    plan = make_plan(mysql_engine, name, rows_per_query=4000, density="sampled", use_cache=False)
    check_estimates(plan, BURST)


@pytest.mark.parametrize("density", ["exact", "sampled"])
def test_heavy_duplicate_values_get_their_own_labelled_range(mysql_engine, mysql_table, density):
    """Finding 2: k=5 ×3,000 and k=100 ×3,000 among k=1..1,000, --key k, rows_per_query 1,000: no range
    may be cut as if the duplicates were spread out; each heavy value is one ``heavy`` range."""
    name = mysql_table("CREATE TABLE {name} (id INT AUTO_INCREMENT PRIMARY KEY, k BIGINT NOT NULL, KEY (k))")
    with mysql_engine.begin() as conn:
        for sel in ("SELECT 5 FROM seq_1_to_3000", "SELECT 100 FROM seq_1_to_3000", "SELECT seq FROM seq_1_to_1000"):
            conn.exec_driver_sql(f"INSERT INTO {name} (k) {sel}")
    keys = sorted([5] * 3000 + [100] * 3000 + list(range(1, 1001)))
    plan = make_plan(mysql_engine, name, key="k", rows_per_query=1000, density=density, use_cache=False)
    check_estimates(plan, keys)
    heavy = [r for r in plan.ranges if r.label == "heavy"]
    assert [(r.heavy_key, r.est_rows) for r in heavy] == [(5, 3001), (100, 3001)]
    found = summarize(plan).findings
    assert sum(f.kind == "heavy" for f in found) == 2
    assert any("label heavy" in w for w in plan.warnings)
    said_exact = any(f.kind == "estimate" and "exact" in f.message for f in found)
    assert said_exact == all(r.exact for r in plan.ranges if r.hi is not None)
    loaded = load_plan(plan.save(tmp_path_of(plan)))
    assert [r.heavy_key for r in loaded.ranges if r.label == "heavy"] == [5, 100]


def tmp_path_of(plan):
    import tempfile

    return os.path.join(tempfile.mkdtemp(prefix="i8-"), plan.default_filename())


def _statements(engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cur, stmt, *a: seen.append(stmt))
    return seen


def test_exact_refinement_on_sqlite_any_rows_per_query(tmp_path):
    """Finding 3: 30,000 random keys over 3·10^7 at rows_per_query 60 failed on SQLite with "Expression
    tree is too large" (one CASE branch and one OR per heavy bucket); refinement statements stay small."""
    keys = sorted(random.Random(8).sample(range(30_000_000), 30_000))
    url = sqlite_keys(tmp_path / "r.db", keys)
    engine = sa.create_engine(url)
    seen = _statements(engine)
    plan = make_plan(engine, "t", rows_per_query=60, density="exact", use_cache=False)
    engine.dispose()
    check_estimates(plan, keys)
    assert all(r.est_rows <= 60 for r in plan.ranges)
    prescan = [s for s in seen if "GROUP BY" in s.upper()]
    assert prescan and not any("CASE" in s.upper() for s in prescan)
    assert max(len(s) for s in prescan) < 40_000, "statement size is bounded by windows per statement"


def test_exact_prescan_reads_the_index_once(mysql_url, mysql_table, mysql_engine):
    """Finding 4: a COUNT(*) pass before the GROUP BY pass read every row twice. Handler_read_next
    (session counters of the one connection the planner used) stays within 1.1× the row count."""
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
    mariadb_seq(mysql_engine, name, "SELECT seq * 37 FROM seq_1_to_50000")
    engine = sa.create_engine(mysql_url, poolclass=StaticPool)
    seen = _statements(engine)
    try:
        with engine.connect() as conn:
            before = int(conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Handler_read_next'").one()[1])
        plan = make_plan(engine, name, rows_per_query=100_000, density="exact", use_cache=False)
        with engine.connect() as conn:
            after = int(conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Handler_read_next'").one()[1])
    finally:
        engine.dispose()
    assert plan.estimates.rows == 50_000
    reads = after - before
    assert reads <= 1.1 * 50_000, f"Handler_read_next {reads} for 50,000 rows"
    assert not any("count(" in s.lower() and "group by" not in s.lower() and name in s for s in seen)


def test_cache_is_not_reused_at_a_finer_rows_per_query(tmp_path):
    """Finding 5a: a sampled histogram cached at 5,000 rows per query, re-planned at 200, gave ranges
    of several times their estimate."""
    rng = random.Random(5)
    keys = sorted(set(list(range(1, 15_001)) + rng.sample(range(10**6, 10**8), 5000)))
    url = sqlite_keys(tmp_path / "g.db", keys)
    cache = str(tmp_path / "c.duckdb")
    coarse = make_plan(url, "t", rows_per_query=5000, density="sampled", cache_path=cache)
    fine = make_plan(url, "t", rows_per_query=200, density="sampled", cache_path=cache)
    assert not fine.strategy.from_cache and "finer (200) asked for" in fine.strategy.density_reason
    check_estimates(fine, keys)
    again = make_plan(url, "t", rows_per_query=5000, density="sampled", cache_path=cache)
    assert again.strategy.from_cache, "a coarser re-plan reuses the finer histogram"
    check_estimates(again, keys)
    assert coarse.strategy.rows_per_query == 5000


def test_rows_added_inside_the_key_span_refresh_the_cache(mysql_engine, mysql_table, tmp_path):
    """Finding 5b: rows inserted between MIN and MAX (both unchanged) left a cached range 8× its estimate
    although TABLE_ROWS disagreed with the cached total."""
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
    mariadb_seq(mysql_engine, name, "SELECT seq * 100 FROM seq_0_to_20000")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {name}")
    cache = str(tmp_path / "c.duckdb")
    make_plan(mysql_engine, name, rows_per_query=2000, cache_path=cache)
    mariadb_seq(mysql_engine, name, "SELECT 500001 + seq FROM seq_0_to_59999 WHERE MOD(500001 + seq, 100) <> 0")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {name}")
        keys = [int(k) for k in conn.exec_driver_sql(f"SELECT id FROM {name} ORDER BY id").scalars()]
    plan = make_plan(mysql_engine, name, rows_per_query=2000, cache_path=cache)
    assert not plan.strategy.from_cache and "TABLE_ROWS" in plan.strategy.density_reason
    check_estimates(plan, keys)


def test_sqlite_sources_are_identified_by_their_real_path(tmp_path, monkeypatch):
    """Finding 6: A/data.db (2 rows) then B/data.db (5,000 rows), both as sqlite:///data.db from their
    own directory, shared one cache entry; the plan's database was relative."""
    cache = str(tmp_path / "c.duckdb")
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    monkeypatch.chdir(tmp_path / "A")
    sqlite_keys("data.db", [1, 2])
    small = make_plan("sqlite:///data.db", "t", rows_per_query=100, cache_path=cache)
    monkeypatch.chdir(tmp_path / "B")
    sqlite_keys("data.db", list(range(1, 5001)))
    big = make_plan("sqlite:///data.db", "t", rows_per_query=100, cache_path=cache)
    assert not big.strategy.from_cache and big.estimates.rows == 5000 and len(big.ranges) == 51
    assert small.source.database == os.path.realpath(tmp_path / "A" / "data.db")
    assert big.source.database == os.path.realpath(tmp_path / "B" / "data.db")


def test_plans_with_more_than_99999_files_load(tmp_path):
    """Finding 7: file names part-{j:05d} reach six digits at 100,000 groups; the schema allowed five."""
    url = sqlite_keys(tmp_path / "s.db", [1, 2, 3])
    base = make_plan(url, "t", rows_per_query=100, use_cache=False)
    n = 100_001
    ranges = tuple(partition.KeyRange(i, i * 10, i * 10 + 10, 1, "dense", True) for i in range(n))
    ranges = (replace(ranges[0], lo=base.ranges[0].lo),) + ranges[1:] + (partition.KeyRange(n, n * 10, None, 0, "tail"),)
    files = partition.group_files(ranges, 1.0, 1)
    assert files[-1].name == "part-100000.parquet"
    big = replace(base, ranges=ranges, files=files, estimates=Estimates(n + 1, n, n, len(files))).sealed()
    back = load_plan(big.save(tmp_path / "big.json"))
    assert back.files[-1].name == "part-100000.parquet" and len(back.ranges) == n + 1


def test_planner_refuses_to_hand_out_a_plan_the_schema_rejects(tmp_path, monkeypatch):
    url = sqlite_keys(tmp_path / "s.db", list(range(100)))
    monkeypatch.setattr(partition, "part_name", lambda j: f"file {j}.parquet")
    with pytest.raises(PlanError, match="internal planner error.*plans/schema.json at files/0/name"):
        make_plan(url, "t", rows_per_query=10, use_cache=False)


def test_gaps_are_capped_with_a_count(tmp_path):
    """Finding 8: every gap of rows_per_query keys was listed (27,859 in a 3.4 MB plan)."""
    keys = [c * 10**9 + 2 * i for c in range(300) for i in range(40)]  # 300 clusters, 299 gaps between
    url = sqlite_keys(tmp_path / "g.db", keys)
    plan = make_plan(url, "t", rows_per_query=50, use_cache=False)
    h = plan.histogram
    assert h.gaps_total == 299 and len(h.gaps) == 100
    gap_findings = [f.message for f in summarize(plan).findings if f.kind == "gap"]
    assert gap_findings[-1] == "… 289 more gaps"
    assert json.loads(plan.to_json())["histogram"]["gaps_total"] == 299
    check_estimates(plan, keys)


def test_a_corrupt_cache_file_is_moved_aside_once(tmp_path):
    """Finding 9: a corrupt cache file warned on every plan, forever."""
    url = sqlite_keys(tmp_path / "s.db", list(range(1000)))
    cache = tmp_path / "c.duckdb"
    cache.write_bytes(b"this is not a duckdb file" * 100)
    first = make_plan(url, "t", rows_per_query=100, cache_path=str(cache))
    moved = [w for w in first.warnings if "moved aside" in w]
    assert len(moved) == 1 and "c.duckdb.corrupt-" in moved[0]
    assert len(list(tmp_path.glob("c.duckdb.corrupt-*"))) == 1
    second = make_plan(url, "t", rows_per_query=100, cache_path=str(cache))
    assert second.strategy.from_cache and not any("cache" in w for w in second.warnings)
    assert sum(sum(c.values()) for c in per_range(second, list(range(1000)))) == 1000


def test_png_of_a_plan_with_heavy_values_and_null_keys(tmp_path):
    """The PNG marks heavy key values and skips the NULL-key range (it has no key bounds)."""
    from sparsesync.planner.chart import render_png

    con = sqlite3.connect(tmp_path / "n.db")
    con.execute("CREATE TABLE t (rid INTEGER PRIMARY KEY, k INTEGER)")
    con.execute("CREATE INDEX t_k ON t (k)")
    con.executemany("INSERT INTO t (k) VALUES (?)", [(k,) for k in list(range(1, 2001)) + [700] * 500 + [None] * 3])
    con.commit()
    con.close()
    plan = make_plan(f"sqlite:///{tmp_path / 'n.db'}", "t", key="k", rows_per_query=200, use_cache=False)
    assert plan.ranges[-1].nulls and [r.heavy_key for r in plan.ranges if r.label == "heavy"] == [700]
    out = render_png(plan, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plan_restricted_to_key_spans_keeps_heavy_ranges_valid(tmp_path):
    """A sync run's span restriction cuts ranges; a heavy range keeps its key value or its label goes."""
    con = sqlite3.connect(tmp_path / "h.db")
    con.execute("CREATE TABLE t (rid INTEGER PRIMARY KEY, k INTEGER NOT NULL)")
    con.execute("CREATE INDEX t_k ON t (k)")
    con.executemany("INSERT INTO t (k) VALUES (?)", [(k,) for k in list(range(1, 1001)) + [500] * 400])
    con.commit()
    con.close()
    url = f"sqlite:///{tmp_path / 'h.db'}"
    for spans in ([(400, 600), (900, None)], [(600, None)]):
        plan = make_plan(url, "t", key="k", rows_per_query=100, use_cache=False, spans=spans)
        heavy = [r.heavy_key for r in plan.ranges if r.label == "heavy"]
        assert heavy == ([500] if spans[0][0] <= 500 else [])
