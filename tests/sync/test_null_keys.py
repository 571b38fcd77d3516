"""A nullable key: the image has a part of its own for the NULL-key rows; inserts, updates and deletes
of NULL-key rows (and of keyed rows) converge, with checksum and with cursor detection (Hypothesis)."""

from __future__ import annotations

import duckdb
import json

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.sync.table import SyncOptions, sync_table
from tests.conftest import unique_name

pytestmark = pytest.mark.mysql

DDL = ("CREATE TABLE {name} (pk INT AUTO_INCREMENT PRIMARY KEY, ext_id BIGINT NULL, v VARCHAR(20), "
       "updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), "
       "UNIQUE KEY (ext_id), KEY (updated_at))")
COLS = "pk, ext_id, v"


def image(dest, table):
    m = dest / table / "current.manifest.json"
    if not m.exists():
        return []
    urls = [e["url"] for e in json.loads(m.read_text())["entries"]]
    assert len(urls) == len(set(urls))
    return duckdb.sql(f"SELECT {COLS} FROM read_parquet({urls!r}) ORDER BY pk").fetchall()


def source(engine, table):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {COLS} FROM `{table}` ORDER BY pk")]


OP = st.one_of(
    st.tuples(st.just("insert_null"), st.just(0)),
    st.tuples(st.just("insert"), st.integers(-50, 3000)),
    st.tuples(st.just("update"), st.integers(0, 10_000)),
    st.tuples(st.just("null_out"), st.integers(0, 10_000)),  # a keyed row's key becomes NULL
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
)


def apply(engine, table, ops, step, deletes):
    with engine.begin() as conn:
        pks = [r[0] for r in conn.exec_driver_sql(f"SELECT pk FROM `{table}` ORDER BY pk")]
        for i, (kind, arg) in enumerate(ops):
            pick = pks[arg % len(pks)] if pks else None
            if kind == "insert_null":
                conn.execute(sa.text(f"INSERT INTO `{table}` (ext_id, v) VALUES (NULL, :v)"), {"v": f"n{step}.{i}"})
            elif kind == "insert":
                conn.execute(sa.text(f"INSERT IGNORE INTO `{table}` (ext_id, v) VALUES (:e, :v)"), {"e": arg, "v": f"i{step}.{i}"})
            elif pick is not None and kind == "update":
                conn.execute(sa.text(f"UPDATE `{table}` SET v = :v WHERE pk = :pk"), {"pk": pick, "v": f"u{step}.{i}"})
            elif pick is not None and kind == "null_out" and deletes:  # the row leaves its old key: a delete there
                conn.execute(sa.text(f"UPDATE `{table}` SET ext_id = NULL WHERE pk = :pk"), {"pk": pick})
            elif pick is not None and kind == "delete" and deletes:
                conn.execute(sa.text(f"DELETE FROM `{table}` WHERE pk = :pk"), {"pk": pick})


def run(mysql_url, engine, tmp_path, steps, detect, deletes=True):
    table = unique_name("nk")
    with engine.begin() as conn:
        conn.exec_driver_sql(DDL.format(name=table))
        conn.execute(sa.text(f"INSERT INTO `{table}` (ext_id, v, updated_at) VALUES (:e, 'init', '2020-01-01')"),
                     [{"e": None if k % 4 == 0 else k * 3} for k in range(1, 200)])
    dest = tmp_path / table
    opts = SyncOptions(key="ext_id", detect=detect, lookback_s=0, rows_per_query=30, file_size_mb=0.002,
                       reader="pymysql")
    try:
        sync_table(mysql_url, table, dest, opts, raise_errors=True)
        parts = json.loads((dest / table / "_state.json").read_text())["parts"]
        assert parts[-1]["nulls"] is True and parts[-1]["rows"] == 49
        assert image(dest, table) == source(engine, table)
        for n, ops in enumerate(steps, start=1):
            apply(engine, table, ops, n, deletes)
            sync_table(mysql_url, table, dest, opts, raise_errors=True)
            assert image(dest, table) == source(engine, table), f"after step {n}: {ops}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")


STEPS = st.lists(st.lists(OP, min_size=1, max_size=6), min_size=1, max_size=3)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_null_keys_converge_with_checksum(mysql_url, mysql_engine, tmp_path, steps):
    run(mysql_url, mysql_engine, tmp_path, steps, "checksum")


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_null_keys_converge_with_cursor(mysql_url, mysql_engine, tmp_path, steps):
    # cursor:COL sees no deletes, and a key moving to NULL is a delete at the old key (documented)
    run(mysql_url, mysql_engine, tmp_path, steps, "cursor:updated_at", deletes=False)
