"""Convergence over a table's life (issue 16, acceptance 3): a writer inserts, updates and deletes while the
table's schema changes (ADD, a widening, a rename, a VARCHAR length change, DROP), gc removes what no image
needs between loads, one warehouse loads after every sync, one lags (loads every other sync) and a fresh
one is loaded only at the end. After every sync the image equals the source in every column of every row,
and so does each warehouse once loaded. Hypothesis drives the writes and where the changes fall.
"""

from __future__ import annotations

import json

import duckdb
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.sync.gc import collect_garbage
from sparsesync.sync.load import load_pending
from sparsesync.sync.table import SyncOptions, sync_table
from tests.conftest import unique_name

pytestmark = pytest.mark.mysql

DDL = "CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(40), n INT NULL)"
INITIAL = list(range(1, 121)) + list(range(200, 3000, 89)) + [40_000]

# In this order: each is (statement, column renames it makes).
CHANGES = [
    ("ALTER TABLE `{t}` ADD COLUMN x INT NULL", {}),
    ("ALTER TABLE `{t}` MODIFY n BIGINT NULL", {}),
    ("ALTER TABLE `{t}` CHANGE v w VARCHAR(40)", {"v": "w"}),
    ("ALTER TABLE `{t}` MODIFY w VARCHAR(90)", {}),
    ("ALTER TABLE `{t}` DROP COLUMN x", {}),
]

OP = st.one_of(
    st.tuples(st.just("insert"), st.integers(-50, 5000)),
    st.tuples(st.just("update"), st.integers(0, 10_000)),
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
)
STEP = st.tuples(st.lists(OP, max_size=6), st.booleans(), st.booleans())  # (writes, next change?, gc?)
STEPS = st.lists(STEP, min_size=3, max_size=6)


def _columns(conn, table: str) -> list[str]:
    return [r[0] for r in conn.exec_driver_sql(f"SELECT * FROM `{table}` LIMIT 0").cursor.description]


def _write(engine, table: str, ops, step: int) -> None:
    with engine.begin() as conn:
        cols = _columns(conn, table)
        text = "v" if "v" in cols else "w"
        keys = [r[0] for r in conn.exec_driver_sql(f"SELECT id FROM `{table}` ORDER BY id")]
        wide = conn.execute(sa.text("SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                                    "AND TABLE_NAME = :t AND COLUMN_NAME = 'n'"), {"t": table}).scalar() == "bigint"
        for i, (kind, arg) in enumerate(ops):
            if kind == "insert":
                conn.execute(sa.text(f"INSERT IGNORE INTO `{table}` (id, `{text}`, n) VALUES (:id, :v, :n)"),
                             {"id": arg, "v": f"ins{step}.{i}", "n": 2**40 + i if wide else i})  # past INT once n is a BIGINT
            elif keys and kind == "update":
                extra = ", x = :n" if "x" in cols else ""
                conn.execute(sa.text(f"UPDATE `{table}` SET `{text}` = :v, n = :n{extra} WHERE id = :id"),
                             {"id": keys[arg % len(keys)], "v": f"upd{step}.{i}", "n": step})
            elif keys and kind == "delete":
                conn.execute(sa.text(f"DELETE FROM `{table}` WHERE id = :id"), {"id": keys[arg % len(keys)]})


def _source(engine, table: str) -> tuple[list[str], list[tuple]]:
    with engine.connect() as conn:
        cols = _columns(conn, table)
        return cols, [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM `{table}` ORDER BY id")]


def _image(dest, table: str) -> tuple[list[str], list[tuple]]:
    manifest = dest / table / "current.manifest.json"
    return _image_of([e["url"] for e in json.loads(manifest.read_text())["entries"]])


def _warehouse(path, table: str) -> tuple[list[str], list[tuple]]:
    with duckdb.connect(str(path)) as con:
        rel = con.sql(f'SELECT * FROM "{table}" ORDER BY id')
        return list(rel.columns), [tuple(r) for r in rel.fetchall()]


def _same(got, want, what: str) -> None:
    (gcols, grows), (wcols, wrows) = got, want
    assert sorted(gcols) == sorted(wcols), f"{what}: columns {gcols} != {wcols}"
    order = [gcols.index(c) for c in wcols]
    assert [tuple(r[i] for i in order) for r in grows] == wrows, f"{what}: rows differ"


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_sync_and_load_converge_through_schema_changes_gc_and_late_warehouses(mysql_url, mysql_engine, tmp_path,
                                                                             steps):
    table = unique_name("lc")
    dest = tmp_path / table
    every, lagging, late = (tmp_path / f"{table}-{k}.duckdb" for k in ("every", "lagging", "late"))
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(DDL.format(name=table))
        conn.execute(sa.text(f"INSERT INTO `{table}` (id, v, n) VALUES (:id, :v, :n)"),
                     [{"id": k, "v": f"init{k}", "n": k % 7} for k in INITIAL])
    opts = SyncOptions(detect="checksum", rows_per_query=40, file_size_mb=0.002, reader="pymysql")
    changes = iter(CHANGES)
    try:
        sync_table(mysql_url, table, dest, opts, raise_errors=True)
        # The changes hypothesis did not place are made in extra steps at the end: every run sees all five.
        steps = list(steps)
        steps += [([("update", k)], True, k % 2 == 0) for k in range(len(CHANGES) - sum(c for _, c, _ in steps))]
        for n, (ops, change, gc) in enumerate(steps, start=1):
            _write(mysql_engine, table, ops, n)
            if change and (c := next(changes, None)) is not None:
                with mysql_engine.begin() as conn:
                    conn.exec_driver_sql(c[0].format(t=table))
            r = sync_table(mysql_url, table, dest, opts, raise_errors=True)
            assert r.status in ("ok", "empty")
            source = _source(mysql_engine, table)
            _same(_image(dest, table), source, f"image after sync {n + 1}")
            load_pending(str(dest), table, f"duckdb:///{every}")
            _same(_warehouse(every, table), source, f"warehouse after sync {n + 1}")
            if n % 2 == 0:
                load_pending(str(dest), table, f"duckdb:///{lagging}")
                _same(_warehouse(lagging, table), source, f"lagging warehouse after sync {n + 1}")
            if gc:  # nothing the image needs is removed; the lagging warehouse then loads from the image
                collect_garbage(str(dest), table, keep_s=0, delete=True)
        assert next(changes, None) is None and r.schema_version == len(CHANGES) + 1
        source = _source(mysql_engine, table)
        for wh in (lagging, late):
            load_pending(str(dest), table, f"duckdb:///{wh}")
            _same(_warehouse(wh, table), source, f"{wh.stem} at the end")
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")


def _s3_image(s3_client, bucket: str, prefix: str, table: str, tmp_path) -> tuple[list[str], list[tuple]]:
    """The image's parts downloaded from S3 (sizes as the manifest says), one schema, read with DuckDB."""
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=f"{prefix}/{table}/current.manifest.json")["Body"].read())
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, e in enumerate(manifest["entries"]):
        key = e["url"].removeprefix(f"s3://{bucket}/")
        assert s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"] == e["meta"]["content_length"]
        s3_client.download_file(bucket, key, str(tmp_path / f"p{i}.parquet"))
        paths.append(str(tmp_path / f"p{i}.parquet"))
    return _image_of(paths)


def _image_of(paths: list[str]) -> tuple[list[str], list[tuple]]:
    schemas = {str(duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{p}')").fetchall()) for p in paths}
    assert len(schemas) == 1, f"the image's parts have {len(schemas)} schemas"
    rel = duckdb.sql(f"SELECT * FROM read_parquet({paths!r}) ORDER BY id")
    return list(rel.columns), [tuple(r) for r in rel.fetchall()]


@pytest.mark.s3
def test_schema_changes_on_s3_alternate_sync_and_load(mysql_url, mysql_engine, s3_bucket, s3_client, tmp_path):
    """Every change of CHANGES in turn on an S3 image: sync, then load; image and warehouse equal the source
    after each; a warehouse that starts after the last change is loaded from the image."""
    table, prefix = unique_name("lc3"), "lake/evolve"
    dest = f"s3://{s3_bucket}/{prefix}"
    wh, late = tmp_path / "wh.duckdb", tmp_path / "late.duckdb"
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(DDL.format(name=table))
        conn.execute(sa.text(f"INSERT INTO `{table}` (id, v, n) VALUES (:id, :v, :n)"),
                     [{"id": k, "v": f"init{k}", "n": k % 7} for k in INITIAL])
    opts = SyncOptions(detect="checksum", rows_per_query=40, file_size_mb=0.002, reader="pymysql")
    try:
        sync_table(mysql_url, table, dest, opts, raise_errors=True)
        load_pending(dest, table, f"duckdb:///{wh}")
        for n, (statement, _) in enumerate(CHANGES, start=1):
            _write(mysql_engine, table, [("insert", 4000 + n), ("update", n), ("delete", 3 * n)], n)
            with mysql_engine.begin() as conn:
                conn.exec_driver_sql(statement.format(t=table))
            r = sync_table(mysql_url, table, dest, opts, raise_errors=True)
            assert r.status == "ok" and r.schema_version == n + 1
            source = _source(mysql_engine, table)
            _same(_s3_image(s3_client, s3_bucket, prefix, table, tmp_path / f"s{n}"), source, f"S3 image after {statement}")
            load_pending(dest, table, f"duckdb:///{wh}")
            _same(_warehouse(wh, table), source, f"warehouse after {statement}")
        result = load_pending(dest, table, f"duckdb:///{late}")
        assert result.from_image is not None
        _same(_warehouse(late, table), _source(mysql_engine, table), "late warehouse")
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
