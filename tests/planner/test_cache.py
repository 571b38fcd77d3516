"""DuckDB histogram cache: exact round trip of extreme keys, warm re-plan = one MIN/MAX probe, tail append,
rescans when the key span changed otherwise, age warning, and a locked cache never failing a plan."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sparsesync.planner.api import make_plan
from sparsesync.planner.cache import CacheKey, HistogramCache, default_cache_path
from sparsesync.planner.histogram import Bucket, Histogram
from sparsesync.source import identity_of
from tests.conftest import insert_keys

REPO = Path(__file__).resolve().parents[2]


def test_round_trip_keeps_extreme_keys(tmp_path):
    cache = HistogramCache(tmp_path / "h.duckdb")
    buckets = [
        Bucket(-(2**63), -(2**63) + 10, 2, -(2**63), -(2**63) + 3, True),
        Bucket(5, 9, 4, 5, 8, False),
        Bucket(2**64 - 8, 2**64, 3, 2**64 - 5, 2**64 - 1, True),
    ]
    hist = Histogram("sampled", buckets, -(2**63), 2**64 - 1, 9, width=2**61, queries=7, exact=False, notes=["n"], unique_key=False)
    ck = CacheKey("mysql://u@h:3306/db", "t", "id", "abc")
    cache.store(ck, hist, seconds=1.5)
    got = cache.load(ck)
    assert got is not None and got.histogram.buckets == buckets
    h = got.histogram
    assert (h.method, h.exact, h.unique_key, h.width, h.min_key, h.max_key, h.total_rows) == (
        "sampled", False, False, 2**61, -(2**63), 2**64 - 1, 9
    )
    assert got.seconds == 1.5 and got.age_hours() < 1
    assert cache.load(replace(ck, schema_hash="other")) is None
    cache.store(ck, replace(hist, buckets=buckets[:1], total_rows=2), seconds=0.1)  # replaces, never duplicates
    assert cache.load(ck).histogram.buckets == buckets[:1] and len(cache.entries()) == 1


def test_default_location_and_identity_without_password(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "sparsesync" / "histograms.duckdb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_path() == Path.home() / ".cache" / "sparsesync" / "histograms.duckdb"
    key = identity_of("mysql+pymysql://etl:s3cr3t@db.example:3307/shop").cache_key()
    assert "s3cr3t" not in key and "db.example" in key and "3307" in key


def _table(mysql_engine, mysql_table, keys):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
    insert_keys(mysql_engine, name, keys)
    return name


def test_warm_replan_is_one_min_max_probe(mysql_engine, mysql_table, query_log, tmp_path):
    keys = list(range(1, 30_001)) + [10**7 + 37 * i for i in range(2000)] + [3 * 10**18]
    name = _table(mysql_engine, mysql_table, keys)
    cache = tmp_path / "c.duckdb"
    cold = make_plan(mysql_engine, name, rows_per_query=3000, cache_path=str(cache))
    assert not cold.strategy.from_cache
    query_log.mark()
    warm = make_plan(mysql_engine, name, rows_per_query=3000, cache_path=str(cache))
    stmts = [s for s in query_log.statements(name) if s.lstrip().lower().startswith("select") and "information_schema" not in s.lower()]
    assert len(stmts) == 1, stmts
    low = stmts[0].lower()
    assert "min(" in low and "max(" in low and "group by" not in low and "count(" not in low
    assert warm.strategy.from_cache and warm.strategy.prescan_queries == 1
    assert warm.ranges == cold.ranges and warm.histogram.outliers == cold.histogram.outliers == (3 * 10**18,)
    assert "cache" in warm.strategy.density_reason


def test_grown_max_scans_only_the_tail(mysql_engine, mysql_table, query_log, tmp_path):
    keys = list(range(1, 20_001))
    name = _table(mysql_engine, mysql_table, keys)
    cache = str(tmp_path / "c.duckdb")
    make_plan(mysql_engine, name, rows_per_query=2500, cache_path=cache)
    new = list(range(50_000, 53_000))
    insert_keys(mysql_engine, name, new)
    query_log.mark()
    plan = make_plan(mysql_engine, name, rows_per_query=2500, cache_path=cache)
    assert plan.strategy.from_cache and "only keys [20001, 52999]" in plan.strategy.density_reason
    scans = [s for s in query_log.statements(name) if "group by" in s.lower()]
    assert scans and all("20001" in s for s in scans), "the re-scan is bounded below by the old max + 1"
    assert sum(r.est_rows for r in plan.ranges) == len(keys) + len(new)
    assert plan.fingerprint.max_key == 52_999 and plan.histogram.exact
    again = make_plan(mysql_engine, name, rows_per_query=2500, cache_path=cache)  # the extended entry is stored
    assert again.strategy.from_cache and again.ranges == plan.ranges


@pytest.mark.parametrize("change", ["lower_min", "shrunk_max", "refresh", "schema"])
def test_rescans_when_the_cache_cannot_answer(mysql_engine, mysql_table, tmp_path, change):
    keys = list(range(100, 10_100))
    name = _table(mysql_engine, mysql_table, keys)
    cache = str(tmp_path / "c.duckdb")
    make_plan(mysql_engine, name, rows_per_query=1000, cache_path=cache)
    refresh = False
    with mysql_engine.begin() as conn:
        if change == "lower_min":
            conn.exec_driver_sql(f"INSERT INTO {name} (id) VALUES (5)")
        elif change == "shrunk_max":
            conn.exec_driver_sql(f"DELETE FROM {name} WHERE id > 10000")
        elif change == "schema":
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN extra INT")
        else:
            refresh = True
    plan = make_plan(mysql_engine, name, rows_per_query=1000, cache_path=cache, refresh=refresh)
    assert not plan.strategy.from_cache
    with mysql_engine.connect() as conn:
        n = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {name}").scalar()
    assert sum(r.est_rows for r in plan.ranges) == n


def test_old_entry_warns(tmp_path, sqlite_url):
    import sqlalchemy as sa

    eng = sa.create_engine(sqlite_url)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.execute(sa.text("INSERT INTO t (id) VALUES (:k)"), [{"k": k} for k in range(500)])
    eng.dispose()
    cache = HistogramCache(tmp_path / "c.duckdb")
    plan = make_plan(sqlite_url, "t", rows_per_query=100, cache_path=str(cache.path))
    (source, table, key, schema_hash, _, _) = cache.entries()[0]
    ck = CacheKey(source, table, key, schema_hash)
    entry = cache.load(ck)
    cache.store(
        ck, entry.histogram, seconds=0.1, measured_at=datetime.now(timezone.utc) - timedelta(hours=50),
        rows_per_query=entry.rows_per_query,
    )
    warm = make_plan(sqlite_url, "t", rows_per_query=100, cache_path=str(cache.path))
    assert warm.strategy.from_cache and warm.ranges == plan.ranges
    assert any("50 h old" in w and "--refresh" in w for w in warm.warnings)


def _sqlite_with_rows(url: str, n: int) -> None:
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.execute(sa.text("INSERT INTO t (id) VALUES (:k)"), [{"k": k * 3} for k in range(n)])
    eng.dispose()


def test_locked_cache_plans_without_it(tmp_path, sqlite_url):
    _sqlite_with_rows(sqlite_url, 1000)
    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        plan = make_plan(sqlite_url, "t", rows_per_query=100, cache_path=str(path))
    finally:
        holder.kill()
        holder.wait()
    assert not plan.strategy.from_cache and sum(r.est_rows for r in plan.ranges) == 1000
    assert any("unavailable" in w and "without the cache" in w for w in plan.warnings)


def test_concurrent_plans_share_the_cache(tmp_path, sqlite_url):
    _sqlite_with_rows(sqlite_url, 3000)
    cache = tmp_path / "shared.duckdb"
    code = (
        "from sparsesync.planner.api import make_plan; import sys; "
        f"p = make_plan({sqlite_url!r}, 't', rows_per_query=500, cache_path={str(cache)!r}); "
        "print(sum(r.est_rows for r in p.ranges))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [o[1][-300:] for o in outs]
    assert all(o[0].strip() == "3000" for o in outs)
    entries = HistogramCache(cache).entries()
    assert len(entries) == 1, "one entry per (source, table, key, schema), never duplicated or corrupt"
    warm = make_plan(sqlite_url, "t", rows_per_query=500, cache_path=str(cache))
    assert warm.strategy.from_cache
