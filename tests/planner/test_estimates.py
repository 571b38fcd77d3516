"""Range estimates on hostile key shapes (issue 8, acceptance 1): every range counted in the source.

Each generated table is planned in both modes; every range is counted from the real keys and must hold
at most 2× its estimate (+ a small absolute slack for tiny ranges), or be labelled ``heavy`` and hold one
key value only; exact mode's estimates are the counts; every key lies in exactly one range.
"""

from __future__ import annotations

import bisect
import random
import sqlite3
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.planner.api import make_plan
from sparsesync.planner.histogram import INT64_MAX, INT64_MIN

# Tiny ranges (a few dozen rows) may be off by more than 2× in sampled mode without mattering; the
# slack is the sampler's own sample size (planner.sampled.DEFAULT_SAMPLE_KEYS).
SLACK = 64


def per_range(plan, keys: list[int]) -> list[Counter]:
    """Rows of every range, by key value, counted from the real keys."""
    starts = [r.lo for r in plan.ranges]
    out = [Counter() for _ in plan.ranges]
    for k in keys:
        i = bisect.bisect_right(starts, k) - 1
        assert i >= 0 and plan.ranges[i].contains(k), f"key {k} is in no range"
        out[i][k] += 1
    return out


def check_estimates(plan, keys: list[int]) -> None:
    """The acceptance: coverage exact, non-heavy ranges ≤ 2× estimate + slack, heavy = one key value."""
    counts = per_range(plan, keys)
    assert sum(sum(c.values()) for c in counts) == len(keys)
    assert not counts[-1], "nothing above the planned max at planning"
    rpq = plan.strategy.rows_per_query
    for r, c in zip(plan.ranges, counts):
        actual = sum(c.values())
        if r.label == "heavy":
            assert set(c) == {r.heavy_key} and actual == r.est_rows > rpq, (r, dict(c))
            continue
        assert actual <= 2 * r.est_rows + SLACK, f"range {r} holds {actual} rows"
        if plan.strategy.density == "exact" and r.hi is not None:
            assert actual == r.est_rows and r.exact, f"exact plan, range {r} holds {actual}"
    heavy_keys = {r.heavy_key for r in plan.ranges if r.label == "heavy"}
    assert heavy_keys == {k for k, n in Counter(keys).items() if n > rpq}
    if plan.strategy.density == "exact":
        assert plan.histogram.exact


@st.composite
def key_shapes(draw, duplicates: bool):
    """Keys: dense blocks, regular and random sparse runs, bursts right after sparse runs, outliers near
    both 64-bit ends and (non-unique keys) heavily repeated values, in random order and sizes."""
    keys: list[int] = []
    pos = draw(st.integers(-(10**9), 10**9))
    kinds = ["dense", "sparse", "random_sparse", "burst_after_sparse"] + (["heavy"] * 2 if duplicates else [])
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=5)):
        pos += draw(st.integers(1, 10**7))
        if kind == "dense":
            n = draw(st.integers(1, 1500))
            keys += range(pos, pos + n)
            pos += n
        elif kind in ("sparse", "burst_after_sparse"):
            stride, n = draw(st.integers(2, 20_000)), draw(st.integers(1, 600))
            keys += [pos + i * stride for i in range(n)]
            pos += n * stride
            if kind == "burst_after_sparse":
                b = draw(st.integers(50, 2000))
                keys += range(pos, pos + b)
                pos += b
        elif kind == "random_sparse":
            span, n = draw(st.integers(1000, 10**7)), draw(st.integers(1, 800))
            keys += [pos + k for k in random.Random(draw(st.integers(0, 2**32))).sample(range(span), min(n, span))]
            pos += span
        else:
            keys += [pos] * draw(st.integers(2, 1500))
            pos += 1
    if draw(st.booleans()):
        keys.append(INT64_MIN + draw(st.integers(0, 1000)))
    if draw(st.booleans()):
        keys.append(INT64_MAX - draw(st.integers(0, 1000)))
    if duplicates and draw(st.booleans()):
        keys += [keys[0]] * draw(st.integers(1, 300))
    return sorted(keys)


def sqlite_source(path, keys: list[int], *, unique: bool) -> tuple[str, str, str]:
    """(url, table, key column) of a new SQLite table holding ``keys``."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    con = sqlite3.connect(path)
    if unique:
        con.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
        con.executemany(f"INSERT INTO {name} (id, v) VALUES (?, 'x')", [(k,) for k in keys])
        col = "id"
    else:
        con.execute(f"CREATE TABLE {name} (rid INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT)")
        con.execute(f"CREATE INDEX {name}_k ON {name} (k)")
        con.executemany(f"INSERT INTO {name} (k, v) VALUES (?, 'x')", [(k,) for k in keys])
        col = "k"
    con.commit()
    con.close()
    return f"sqlite:///{path}", name, col


RPQ = st.sampled_from([60, 300, 1000])
SQLITE_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MARIADB_SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("unique", [True, False], ids=["unique", "non_unique"])
@SQLITE_SETTINGS
@given(data=st.data(), rpq=RPQ)
def test_every_range_within_2x_on_sqlite(tmp_path, unique, data, rpq):
    keys = data.draw(key_shapes(duplicates=not unique))
    url, table, col = sqlite_source(tmp_path / f"{uuid.uuid4().hex[:6]}.db", keys, unique=unique)
    for density in ("exact", "sampled"):
        plan = make_plan(url, table, key=col, rows_per_query=rpq, density=density, use_cache=False)
        check_estimates(plan, keys)


@pytest.mark.parametrize("unique", [True, False], ids=["unique", "non_unique"])
@MARIADB_SETTINGS
@given(data=st.data(), rpq=RPQ)
def test_every_range_within_2x_on_mariadb(mysql_engine, unique, data, rpq):
    keys = data.draw(key_shapes(duplicates=not unique))
    name = f"est_{uuid.uuid4().hex[:10]}"
    ddl = (
        f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)"
        if unique
        else f"CREATE TABLE {name} (rid INT AUTO_INCREMENT PRIMARY KEY, k BIGINT NOT NULL, v INT, KEY (k))"
    )
    col = "id" if unique else "k"
    try:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(ddl)
            for i in range(0, len(keys), 5000):
                conn.exec_driver_sql(f"INSERT INTO {name} ({col}) VALUES " + ",".join(f"({k})" for k in keys[i : i + 5000]))
        for density in ("exact", "sampled"):
            plan = make_plan(mysql_engine, name, key=col, rows_per_query=rpq, density=density, use_cache=False)
            check_estimates(plan, keys)
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
