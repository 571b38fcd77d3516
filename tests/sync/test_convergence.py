"""Convergence: syncs alternate with a writer inserting, updating and deleting rows (below the max, in
sparse regions, below the minimum); after every sync the rows of ``current.manifest.json``'s parts, read
with DuckDB, equal the source table, and so does a DuckDB warehouse table after ``load_pending``. Hypothesis drives the operation sequences (small tables, few examples).

Also (issue 16): a table without a primary key synced with ``--key k``, every row present twice, under
``checksum`` (identical rows must not cancel); and ``cursor:`` with rows stamped far in the future (the
watermark must not freeze).
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

# Duplicate rows under a non-unique key: pairs inserted, both copies updated or deleted, one copy deleted or
# added (the table then holds singles and pairs side by side).
DUP_OP = st.one_of(
    st.tuples(st.just("insert_pair"), KEYS),
    st.tuples(st.just("insert_one"), KEYS),
    st.tuples(st.just("update_key"), st.integers(0, 10_000)),
    st.tuples(st.just("delete_key"), st.integers(0, 10_000)),
    st.tuples(st.just("delete_one"), st.integers(0, 10_000)),
)
DUP_STEPS = st.lists(st.lists(DUP_OP, min_size=1, max_size=6), min_size=2, max_size=3)
# cursor: rows moved to (or inserted at) a far-future COL among the usual inserts and updates.
FUTURE_OP = st.one_of(OP, st.tuples(st.just("future"), st.integers(0, 10_000)),
                      st.tuples(st.just("insert_future"), KEYS))
FUTURE_STEPS = st.lists(st.lists(FUTURE_OP, min_size=1, max_size=8), min_size=2, max_size=3)
DUP_DDL = "CREATE TABLE {name} (k BIGINT NOT NULL, v VARCHAR(40), n INT NULL, KEY (k))"


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
            elif keys and kind == "future":
                conn.execute(sa.text(f"UPDATE `{table}` SET v = :v, updated_at = '2030-01-01' WHERE id = :id"),
                             {"id": keys[arg % len(keys)], "v": f"fut{step}.{i}"})
            elif kind == "insert_future":
                conn.execute(sa.text(f"INSERT IGNORE INTO `{table}` (id, v, updated_at) VALUES (:id, :v, '2031-06-01')"),
                             {"id": arg, "v": f"insfut{step}.{i}"})


def apply_dup_ops(engine, table: str, ops, step: int, *, deletes: bool = True) -> None:
    with engine.begin() as conn:
        keys = [r[0] for r in conn.exec_driver_sql(f"SELECT DISTINCT k FROM `{table}` ORDER BY k")]
        for i, (kind, arg) in enumerate(ops):
            pick = keys[arg % len(keys)] if keys else None
            if kind in ("insert_pair", "insert_one"):
                row = {"k": arg, "v": f"ins{step}.{i}"}
                conn.execute(sa.text(f"INSERT INTO `{table}` (k, v, n) VALUES (:k, :v, NULL)"),
                             [row, row] if kind == "insert_pair" else [row])
            elif pick is not None and kind == "update_key":  # every copy: equal rows stay equal
                conn.execute(sa.text(f"UPDATE `{table}` SET v = :v, n = :n WHERE k = :k"),
                             {"k": pick, "v": f"upd{step}.{i}", "n": step})
            elif pick is not None and kind == "delete_key":
                conn.execute(sa.text(f"DELETE FROM `{table}` WHERE k = :k"), {"k": pick})
            elif pick is not None and kind == "delete_one":
                conn.execute(sa.text(f"DELETE FROM `{table}` WHERE k = :k LIMIT 1"), {"k": pick})


def run_sequence(mysql_url, engine, tmp_path, steps, detect: str, *, deletes: bool = True, dup: bool = False) -> None:
    table = unique_name("cv")
    dest = tmp_path / table
    cols, order = ("k, v, n", "k, v, n") if dup else ("id, v, n", "id")
    with engine.begin() as conn:
        if dup:  # no primary key; every row twice
            conn.exec_driver_sql(DUP_DDL.format(name=table))
            conn.execute(sa.text(f"INSERT INTO `{table}` (k, v, n) VALUES (:k, :v, 1)"),
                         [{"k": k, "v": f"init{k}"} for k in INITIAL for _ in range(2)])
        else:
            conn.exec_driver_sql(SYNC_DDL.format(name=table))
            conn.execute(sa.text(f"INSERT INTO `{table}` (id, v, n, updated_at) VALUES (:id, :v, 1, '2020-01-01')"),
                         [{"id": k, "v": f"init{k}"} for k in INITIAL])
    opts = SyncOptions(detect=detect, lookback_s=0, rows_per_query=25, file_size_mb=0.002, reader="pymysql",
                       key="k" if dup else None)
    warehouse = tmp_path / f"{table}-warehouse.duckdb"

    def canon(rows):  # duplicate rows: compared as multisets (same order on both sides, NULL first)
        rows = [tuple(r) for r in rows]
        return sorted(rows, key=lambda r: (r[0], r[1], r[2] is not None, r[2] or 0)) if dup else rows

    def image():
        return canon(image_rows(dest, table, "k AS id, v, n" if dup else cols))

    def source():
        with engine.connect() as conn:
            return canon(conn.exec_driver_sql(f"SELECT {cols} FROM `{table}` ORDER BY {order}"))

    try:
        r = sync_table(mysql_url, table, dest, opts, raise_errors=True)
        assert image() == source()
        for n, ops in enumerate(steps, start=1):
            (apply_dup_ops if dup else apply_ops)(engine, table, ops, n, deletes=deletes)
            r = sync_table(mysql_url, table, dest, opts, raise_errors=True)
            assert r.status in ("ok", "empty")
            assert image() == source(), f"after sync {n + 1}: {ops}"
            # (b) applying the pending runs to a DuckDB warehouse makes its table equal to the source too
            load_pending(str(dest), table, f"duckdb:///{warehouse}")
            with duckdb.connect(str(warehouse)) as con:
                got = canon(con.execute(f'SELECT {cols} FROM "{table}" ORDER BY {order}').fetchall())
            assert got == source(), f"warehouse after sync {n + 1}: {ops}"
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


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=DUP_STEPS)
def test_checksum_sync_converges_with_duplicate_rows_under_a_non_unique_key(mysql_url, mysql_engine, tmp_path, steps):
    # Every row twice, no primary key, --key k: equal rows must not cancel in the span checksum.
    run_sequence(mysql_url, mysql_engine, tmp_path, steps, "checksum", dup=True)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=FUTURE_STEPS)
def test_cursor_sync_converges_with_future_timestamps(mysql_url, mysql_engine, tmp_path, steps):
    # Rows stamped in 2030/2031 among inserts and updates: the watermark is capped at the server's clock.
    run_sequence(mysql_url, mysql_engine, tmp_path, steps, "cursor:updated_at", deletes=False)
