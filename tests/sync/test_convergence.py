"""Convergence: syncs alternate with a writer inserting, updating and deleting rows (below the max, in
sparse regions, below the minimum); after every sync the rows of ``current.manifest.json``'s parts, read
with DuckDB, equal the source table, and so does a DuckDB warehouse table after ``load_pending``. Hypothesis drives the operation sequences (small tables, few examples).
"""

from __future__ import annotations

import duckdb
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.sync.load import load_pending
from sparsesync.sync.table import SyncOptions, sync_table
from tests.conftest import unique_name
from tests.sync.conftest import SYNC_DDL, image_rows, source_rows, state_of

pytestmark = pytest.mark.mysql

# Dense head 1..150, a sparse stretch (every 97th key up to ~5000), a few far outliers.
INITIAL = list(range(1, 151)) + list(range(200, 5000, 97)) + [40_000, 2**40]

KEYS = st.one_of(
    st.integers(-300, 0),  # below the minimum
    st.integers(1, 160),  # in and just above the dense head
    st.integers(151, 6000),  # the sparse stretch
    st.integers(5001, 50_000),  # above the max of the bulk, below the outliers
    st.just(2**40 + 1),
)
OP = st.one_of(
    st.tuples(st.just("insert"), KEYS),
    st.tuples(st.just("update"), st.integers(0, 10_000)),
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
)
STEPS = st.lists(st.lists(OP, min_size=0, max_size=8), min_size=2, max_size=4)


def apply_ops(engine, table: str, ops, step: int, *, deletes: bool = True) -> None:
    with engine.begin() as conn:
        keys = [r[0] for r in conn.exec_driver_sql(f"SELECT id FROM `{table}` ORDER BY id")]
        for i, (kind, arg) in enumerate(ops):
            if kind == "insert":
                conn.execute(sa.text(f"INSERT IGNORE INTO `{table}` (id, v, n) VALUES (:id, :v, NULL)"),
                             {"id": arg, "v": f"ins{step}.{i}"})
            elif keys and kind == "update":
                conn.execute(sa.text(f"UPDATE `{table}` SET v = :v, n = :n WHERE id = :id"),
                             {"id": keys[arg % len(keys)], "v": f"upd{step}.{i}", "n": step})
            elif keys and kind == "delete" and deletes:
                conn.execute(sa.text(f"DELETE FROM `{table}` WHERE id = :id"), {"id": keys[arg % len(keys)]})


def run_sequence(mysql_url, engine, tmp_path, steps, detect: str, *, deletes: bool = True) -> None:
    table = unique_name("cv")
    dest = tmp_path / table
    with engine.begin() as conn:
        conn.exec_driver_sql(SYNC_DDL.format(name=table))
        conn.execute(sa.text(f"INSERT INTO `{table}` (id, v, n, updated_at) VALUES (:id, :v, 1, '2020-01-01')"),
                     [{"id": k, "v": f"init{k}"} for k in INITIAL])
    opts = SyncOptions(detect=detect, lookback_s=0, rows_per_query=25, file_size_mb=0.002, reader="pymysql")
    warehouse = tmp_path / f"{table}-warehouse.duckdb"
    try:
        r = sync_table(mysql_url, table, dest, opts, raise_errors=True)
        assert image_rows(dest, table) == source_rows(engine, table)
        for n, ops in enumerate(steps, start=1):
            apply_ops(engine, table, ops, n, deletes=deletes)
            r = sync_table(mysql_url, table, dest, opts, raise_errors=True)
            assert r.status in ("ok", "empty")
            assert image_rows(dest, table) == source_rows(engine, table), f"after sync {n + 1}: {ops}"
            # (b) applying the pending runs to a DuckDB warehouse makes its table equal to the source too
            load_pending(str(dest), table, f"duckdb:///{warehouse}")
            with duckdb.connect(str(warehouse)) as con:
                got = con.execute(f'SELECT id, v, n FROM "{table}" ORDER BY id').fetchall()
            assert got == source_rows(engine, table), f"warehouse after sync {n + 1}: {ops}"
            parts = state_of(dest, table)["parts"]
            paths = [p["path"] for p in parts if p["path"]]
            assert len(paths) == len(set(paths))
            assert all(a["hi"] == b["lo"] for a, b in zip(parts, parts[1:])) and parts[-1]["hi"] is None
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_checksum_sync_converges(mysql_url, mysql_engine, tmp_path, steps):
    run_sequence(mysql_url, mysql_engine, tmp_path, steps, "checksum")


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_cursor_sync_converges_without_deletes(mysql_url, mysql_engine, tmp_path, steps):
    # cursor:COL cannot see deletes (documented); inserts anywhere and updates it must not miss.
    run_sequence(mysql_url, mysql_engine, tmp_path, steps, "cursor:updated_at", deletes=False)
