"""The sampled pre-scan: few ranges despite outliers, estimates within 2×, query count independent of rows."""

from __future__ import annotations

import bisect
import math

import pytest
import sqlalchemy as sa

from sparsesync.planner.api import make_plan
from sparsesync.planner.histogram import KeyTable
from sparsesync.planner.sampled import sampled_histogram


def fill_shaped(engine, name: str, n: int) -> None:
    """60 % dense ids, 30 % one key in 50, 10 % in ten stride-2 bursts — via MariaDB's SEQUENCE engine."""
    dense, sparse, burst = int(n * 0.6), int(n * 0.3), n // 100
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT seq FROM seq_1_to_{dense}")
        conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT 10000000 + seq * 50 FROM seq_1_to_{sparse}")
        for j in range(10):
            conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT {10**9 + j * 10**7} + seq * 2 FROM seq_1_to_{burst}")


def keys_of(engine, name: str) -> list[int]:
    with engine.connect() as conn:
        return [int(k) for k in conn.exec_driver_sql(f"SELECT id FROM {name} ORDER BY id").scalars()]


def actual_per_range(plan, keys: list[int]) -> list[int]:
    starts = [r.lo for r in plan.ranges]
    out = [0] * len(plan.ranges)
    for k in keys:
        out[bisect.bisect_right(starts, k) - 1] += 1
    return out


@pytest.mark.parametrize("density", ["exact", "sampled"])
def test_outliers_cost_no_extra_ranges(mysql_engine, mysql_table, density):
    """20,000 dense ids + 3 ids near 4·10^18: at most ceil(N / rows_per_query) + 1 ranges (tail included)."""
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT seq FROM seq_1_to_20000")
        conn.exec_driver_sql(f"INSERT INTO {name} (id) VALUES (4000000000000000000), (4000000000000000007), (4000000000000000100)")
    plan = make_plan(mysql_engine, name, rows_per_query=2000, density=density, use_cache=False)
    n = 20_003
    assert len(plan.ranges) <= math.ceil(n / 2000) + 1
    assert list(plan.histogram.outliers) == [4 * 10**18, 4 * 10**18 + 7, 4 * 10**18 + 100]
    assert sum(actual_per_range(plan, keys_of(mysql_engine, name))) == n
    assert plan.strategy.density == density


def test_sampled_accuracy_and_flat_query_count(mysql_engine, mysql_table, query_log):
    """10k vs 100k rows of the same shape, rows_per_query scaled with them (same number of ranges).

    Asserts ≥ 95 % of ranges estimated within 2× of their real rows, and that the number of
    statements the server saw for the sampled pre-scan does not grow with the 10× larger table.
    """
    counts, bad_share, n_ranges = {}, {}, {}
    for n in (10_000, 100_000):
        name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
        fill_shaped(mysql_engine, name, n)
        query_log.mark()
        plan = make_plan(mysql_engine, name, rows_per_query=n // 40, density="sampled", use_cache=False)
        counts[n] = query_log.count(name)
        actual = actual_per_range(plan, keys_of(mysql_engine, name))
        body = [(r.est_rows, a) for r, a in zip(plan.ranges, actual) if r.hi is not None]
        assert sum(actual) == n
        bad = [(e, a) for e, a in body if not (a / 2 <= e <= 2 * a)]
        bad_share[n] = len(bad) / len(body)
        n_ranges[n] = len(body)
        assert bad_share[n] <= 0.05, f"{len(bad)} of {len(body)} ranges off by more than 2×: {bad[:5]}"
    assert counts[100_000] <= counts[10_000] + 1, f"sampled statements grew with rows: {counts}"
    assert abs(n_ranges[100_000] - n_ranges[10_000]) <= 0.2 * n_ranges[10_000]
    assert counts[10_000] < n_ranges[10_000], "cheaper than one statement per range"


def test_sampled_jumps_gaps_on_sqlite(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    keys = [-(2**63), -5, 0] + list(range(10**15, 10**15 + 5000)) + [2**63 - 1]
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE g (id INTEGER PRIMARY KEY)")
        conn.execute(sa.text("INSERT INTO g (id) VALUES (:k)"), [{"k": k} for k in keys])
    with eng.connect() as conn:
        hist = sampled_histogram(conn, KeyTable("g", "id"), rows_per_query=1000)
    eng.dispose()
    assert hist.method == "sampled" and hist.min_key == -(2**63) and hist.max_key == 2**63 - 1
    assert hist.queries <= 12, "a 2^64-wide span with a dense block is a handful of levels"
    assert abs(hist.total_rows - len(keys)) <= len(keys) * 0.05
    for k in keys:
        assert sum(b.min_key <= k <= b.max_key for b in hist.buckets) == 1
