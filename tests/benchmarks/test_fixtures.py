"""Fixtures are deterministic by seed, land in MySQL and SQLite intact, and their truth is right."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from sparsesync.bench.fixtures import SHAPES, SPARSE_THRESHOLD, create_fixture, density_outside, drop_fixture, generate, rows_in
from tests.conftest import unique_name
from sparsesync.errors import UsageError


@pytest.mark.parametrize("shape", SHAPES)
def test_deterministic_by_seed_and_truth_is_right(shape):
    a, b, c = generate(shape, 4000, seed=7), generate(shape, 4000, seed=7), generate(shape, 4000, seed=8)
    assert np.array_equal(a.keys, b.keys) and a.sparse_truth == b.sparse_truth
    assert not np.array_equal(a.keys, c.keys)
    assert len(a.keys) == 4000 and np.all(np.diff(a.keys) > 0)  # sorted and unique
    for lo, hi in a.sparse_truth:
        assert a.min_key <= lo < hi <= a.max_key + 1 or hi == 2**63
        assert rows_in(a, lo, hi) / (hi - lo) < SPARSE_THRESHOLD
    # Outside the truth, every 200-key window is dense (≥ 0.10 with a wide margin).
    assert density_outside(a, 200) >= 0.5
    if shape == "dense":
        assert a.sparse_truth == ()
    if shape in ("prealert", "outliers", "bursty", "purged", "uniform_sparse", "snowflake"):
        assert a.sparse_truth
    if shape == "outliers":
        assert {4 * 10**18, 2**63 - 1} <= a.key_set()


def test_unknown_shape_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown fixture shape"):
        generate("zigzag", 100)


def _check_table(engine, table, fx):
    q = f"`{table}`" if engine.dialect.name == "mysql" else f'"{table}"'
    with engine.connect() as conn:
        keys = [int(k) for k in conn.exec_driver_sql(f"SELECT id FROM {q} ORDER BY id").scalars()]
        nulls = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {q} WHERE note IS NULL").scalar()
        distinct_status = conn.exec_driver_sql(f"SELECT COUNT(DISTINCT status) FROM {q}").scalar()
    assert keys == fx.keys.tolist()
    assert 0 < nulls < fx.rows
    assert distinct_status >= 3


@pytest.mark.parametrize("shape", ["prealert", "outliers"])
def test_create_in_mysql(mysql_engine, shape):
    table = unique_name("fx")
    try:
        fx = create_fixture(mysql_engine, shape, 3000, seed=3, table=table)
        assert fx.table == table
        _check_table(mysql_engine, table, fx)
    finally:
        drop_fixture(mysql_engine, table)
    assert table not in sa.inspect(mysql_engine).get_table_names()


@pytest.mark.parametrize("shape", ["snowflake", "bursty"])
def test_create_in_sqlite(sqlite_url, shape):
    engine = sa.create_engine(sqlite_url)
    try:
        fx = create_fixture(engine, shape, 3000, seed=3, table="fx_t")
        _check_table(engine, "fx_t", fx)
        # Recreating with the same seed gives the same table.
        fx2 = create_fixture(engine, shape, 3000, seed=3, table="fx_t")
        assert np.array_equal(fx.keys, fx2.keys)
        _check_table(engine, "fx_t", fx2)
    finally:
        engine.dispose()
