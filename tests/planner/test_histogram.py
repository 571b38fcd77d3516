"""Exact and sampled pre-scans end to end on SQLite and MariaDB: any key span, every key in one range."""

from __future__ import annotations

import bisect
import sqlite3
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.planner.api import make_plan
from sparsesync.planner.histogram import INT64_MAX, INT64_MIN, UINT64_MAX, KeyTable, exact_histogram
from tests.conftest import insert_keys

SIGNED_EDGES = [INT64_MIN, INT64_MIN + 1, -(10**12), -1, 0, 1, 10**12, INT64_MAX - 1, INT64_MAX]
UNSIGNED_EDGES = [0, 1, 2**63 - 1, 2**63, 2**63 + 1, UINT64_MAX - 1, UINT64_MAX]


def assert_plan_covers(plan, keys: list[int], *, exact: bool) -> None:
    """Contiguous ranges from the type minimum to the open tail; every key in exactly one range."""
    ranges = plan.ranges
    assert ranges[0].lo == (INT64_MIN if plan.source.key_signed else 0)
    assert ranges[-1].hi is None
    for a, b in zip(ranges, ranges[1:]):
        assert a.hi == b.lo and a.lo < a.hi
    starts = [r.lo for r in ranges]
    actual = [0] * len(ranges)
    for k in keys:
        i = bisect.bisect_right(starts, k) - 1
        assert ranges[i].contains(k) and (i + 1 == len(ranges) or not ranges[i + 1].contains(k))
        actual[i] += 1
    assert actual[-1] == 0, "the planned tail starts after the planned max"
    if exact:
        assert [r.est_rows for r in ranges] == actual
        assert all(n <= plan.strategy.rows_per_query for n in actual), "exact counts: the row bound holds"
    assert plan.fingerprint.min_key == min(keys) and plan.fingerprint.max_key == max(keys)


def sqlite_table(path, keys: list[int]) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany(f"INSERT INTO {name} (id, v) VALUES (?, 'x')", [(k,) for k in keys])
    con.commit()
    con.close()
    return name


@pytest.mark.parametrize("density", ["exact", "sampled"])
@pytest.mark.parametrize("ddl,edges", [("BIGINT", SIGNED_EDGES), ("BIGINT UNSIGNED", UNSIGNED_EDGES)])
def test_mariadb_extreme_keys(mysql_engine, mysql_table, ddl, edges, density):
    name = mysql_table(f"CREATE TABLE {{name}} (id {ddl} PRIMARY KEY, v INT)")
    keys = sorted(set(edges) | set(range(10**6, 10**6 + 3000)))
    insert_keys(mysql_engine, name, keys)
    plan = make_plan(mysql_engine, name, rows_per_query=500, density=density, use_cache=False)
    assert plan.source.key_signed == (ddl == "BIGINT")
    assert_plan_covers(plan, keys, exact=density == "exact")
    assert plan.histogram.total_rows == len(keys) or density == "sampled"


@pytest.mark.parametrize("density", ["exact", "sampled"])
def test_sqlite_int64_edges(tmp_path, density):
    path = tmp_path / "edges.db"
    keys = sorted(set(SIGNED_EDGES) | set(range(-5000, 5000, 3)))
    name = sqlite_table(path, keys)
    plan = make_plan(f"sqlite:///{path}", name, rows_per_query=400, density=density, use_cache=False)
    assert_plan_covers(plan, keys, exact=density == "exact")


def test_exact_refines_heavy_buckets_only(mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY)")
    # bursty: 3000 keys with stride 3 (never fully dense) next to outliers near 2^62
    keys = list(range(0, 9000, 3)) + [2**62, 2**62 + 1]
    insert_keys(mysql_engine, name, keys)
    with mysql_engine.connect() as conn:
        hist = exact_histogram(conn, KeyTable(name, "id"), rows_per_query=800)
    assert hist.total_rows == len(keys)
    assert max(b.count for b in hist.buckets) <= 800 // 8
    assert hist.queries <= 2 + 8
    for b in hist.buckets:
        assert b.lo <= b.min_key <= b.max_key < b.hi


def _keysets():
    dense = st.tuples(st.integers(-(10**15), 10**15), st.integers(1, 1500), st.integers(1, 4)).map(
        lambda t: [t[0] + i * t[2] for i in range(t[1])]
    )
    sparse = st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=60)
    edges = st.lists(st.sampled_from(SIGNED_EDGES), max_size=4)
    return st.tuples(dense, sparse, edges).map(lambda t: sorted(set(t[0]) | set(t[1]) | set(t[2])))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(keys=_keysets(), rpq=st.integers(1, 600), density=st.sampled_from(["exact", "sampled"]))
def test_sqlite_end_to_end_property(tmp_path, keys, rpq, density):
    path = tmp_path / f"{uuid.uuid4().hex[:6]}.db"
    name = sqlite_table(path, keys)
    plan = make_plan(f"sqlite:///{path}", name, rows_per_query=rpq, density=density, use_cache=False)
    assert_plan_covers(plan, keys, exact=density == "exact")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    keys=st.one_of(_keysets(), st.lists(st.integers(0, UINT64_MAX), min_size=1, max_size=80).map(sorted)),
    rpq=st.integers(1, 600),
    density=st.sampled_from(["exact", "sampled"]),
)
def test_mariadb_end_to_end_property(mysql_engine, keys, rpq, density):
    unsigned = max(keys) > INT64_MAX or min(keys) >= 0 and len(keys) % 2 == 0
    name = f"tp_{uuid.uuid4().hex[:10]}"
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id BIGINT{' UNSIGNED' if unsigned else ''} PRIMARY KEY, v INT)")
    try:
        insert_keys(mysql_engine, name, sorted(set(keys)))
        plan = make_plan(mysql_engine, name, rows_per_query=rpq, density=density, use_cache=False)
        assert_plan_covers(plan, sorted(set(keys)), exact=density == "exact")
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def test_exact_histogram_matches_group_by_on_sqlite(tmp_path):
    path = tmp_path / "g.db"
    keys = [-(2**63), -7, -6, -5, 0, 3, 2**40, 2**63 - 1]
    name = sqlite_table(path, keys)
    eng = sa.create_engine(f"sqlite:///{path}")
    with eng.connect() as conn:
        hist = exact_histogram(conn, KeyTable(name, "id"), rows_per_query=3)
    eng.dispose()
    seen = sorted(k for k in keys if any(b.min_key <= k <= b.max_key for b in hist.buckets))
    assert seen == keys and hist.total_rows == len(keys)


def test_columns_named_like_the_bucket_labels_do_not_hijack_grouping(tmp_path, mysql_table, mysql_engine):
    """Regression: GROUP BY by label resolved to a table column named ``b``/``w`` on SQLite and MySQL."""
    from sparsesync.planner.histogram import KeyTable, exact_histogram

    keys = list(range(1, 3001)) + [10_000 + 7 * i for i in range(500)]
    sqlite_engine = sa.create_engine(f"sqlite:///{tmp_path / 'labels.db'}")
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE lab (id INTEGER PRIMARY KEY, b BLOB, w INTEGER, n INTEGER)")
    insert_keys(sqlite_engine, "lab", keys)
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, b BLOB, w INT, n INT)")
    insert_keys(mysql_engine, name, keys)
    for engine, table in ((sqlite_engine, "lab"), (mysql_engine, name)):
        with engine.connect() as conn:
            hist = exact_histogram(conn, KeyTable(table, "id"), rows_per_query=200)
        assert hist.total_rows == len(keys)
        assert len(hist.buckets) > 10, "all rows fell into one bucket: grouped by the column, not the bucket"
        assert sum(bk.count for bk in hist.buckets if bk.min_key >= 10_000) == 500
