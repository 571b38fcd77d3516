"""Server-side span checksums (executor.checksum) against their DuckDB twin over the written Parquet.

The source side is computed by MariaDB / SQLite in SQL; the output side by DuckDB from the Arrow values;
they must agree on every range of an export with every type of the type map, and disagree when one value,
one row or one NULL changes.
"""

from __future__ import annotations

import random

import duckdb
import pytest
import sqlalchemy as sa

from executor.checksum import Span, SpanChecksum, parquet_span_checksums, span_checksums, spans_of_plan
from planner.api import make_plan
from tests.executor.test_roundtrip_types import ALL_TYPES_DDL, KEYSETS, _export, _fill


def _parquet(plan, parts, spans, **kw):
    listing = "[" + ", ".join(f"'{p.url}'" for p in parts) + "]"
    con = duckdb.connect()
    try:
        return parquet_span_checksums(con, f"read_parquet({listing})", plan, spans, **kw)
    finally:
        con.close()


@pytest.mark.mysql
@pytest.mark.parametrize("kind", ["pymysql", "connectorx"])
def test_all_types_source_checksum_equals_parquet_checksum(kind, mysql_engine, mysql_table, tmp_path):
    name = mysql_table(ALL_TYPES_DDL.replace("{keytype}", "BIGINT"), prefix="ck")
    keys = KEYSETS["BIGINT"]()
    _fill(mysql_engine, name, keys)
    plan = make_plan(mysql_engine, name, rows_per_query=60, file_size=5_000)
    spans = spans_of_plan(plan)
    parts, _ = _export(mysql_engine, plan, kind, tmp_path)
    src = span_checksums(mysql_engine, plan, spans)
    out, stray = _parquet(plan, parts, spans)
    assert stray == 0
    assert sum(s.rows for s in src) == len(keys)
    assert [(s.rows, s.checksum) for s in src] == [(o.rows, o.checksum) for o in out]
    assert len({s.checksum for s in src if s.rows}) == sum(1 for s in src if s.rows)  # not a constant

    # One changed value, one NULLed value, one deleted row: each shows in exactly its range.
    k_mid = keys[150]
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE `{name}` SET vc = CONCAT(COALESCE(vc, ''), '|') WHERE id = :k"), {"k": k_mid})
    after = span_checksums(mysql_engine, plan, spans)
    changed = [i for i, (a, b) in enumerate(zip(src, after)) if a != b]
    assert changed == [next(i for i, s in enumerate(spans) if s.lo <= k_mid and (s.hi is None or k_mid < s.hi))]
    assert after[changed[0]].rows == src[changed[0]].rows


@pytest.mark.mysql
def test_checksum_sees_every_kind_of_change(mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, a VARCHAR(10), b VARCHAR(10), "
                       "d DATETIME(6), n DECIMAL(10,2), bl VARBINARY(8))", prefix="ck")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` VALUES (:id, :a, :b, :d, :n, :bl)"), [
            dict(id=i, a=f"a{i}", b="x", d=f"2020-01-01 00:00:0{i % 10}.5", n=i / 4, bl=bytes([i])) for i in range(1, 21)])
    plan = make_plan(mysql_engine, name, rows_per_query=1000)
    whole = [Span(None, None)]
    base = span_checksums(mysql_engine, plan, whole)[0]
    assert base.rows == 20
    for stmt in ("UPDATE `{t}` SET a = 'a1|', b = 'x' WHERE id = 1",  # separator moved between fields
                 "UPDATE `{t}` SET b = NULL WHERE id = 2",
                 "UPDATE `{t}` SET d = '2020-01-01 00:00:02.500001' WHERE id = 2",
                 "UPDATE `{t}` SET n = n + 0.01 WHERE id = 3",
                 "UPDATE `{t}` SET bl = X'00' WHERE id = 4"):
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(stmt.format(t=name))
        now = span_checksums(mysql_engine, plan, whole)[0]
        assert now.rows == 20 and now.checksum != base.checksum, stmt
        base = now
    key_only = span_checksums(mysql_engine, plan, whole, columns=["id"])[0]
    counts = span_checksums(mysql_engine, plan, whole, counts_only=True)[0]
    assert counts == SpanChecksum(whole[0], 20, None) and key_only.checksum != base.checksum


def test_sqlite_source_checksum_equals_parquet_checksum(tmp_path):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    rng = random.Random(3)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER, r REAL, num NUMERIC(12,3), "
                             "t TEXT, b BLOB, d DATE, ts DATETIME, flag BOOLEAN)")
        rows = [dict(id=k, n=None if k % 5 == 0 else rng.randint(-10**12, 10**12), r=rng.random(),
                     num=f"{rng.randint(-10**6, 10**6)}.{rng.randint(0, 999):03d}", t=f"ü|{k}", b=bytes([k % 256, 0]),
                     d=f"2020-0{1 + k % 9}-1{k % 10}", ts=f"2021-03-04 05:06:{k % 60:02d}.{abs(k) % 10**6:06d}", flag=k % 2)
                for k in rng.sample(range(-10**6, 10**6), 300)]
        conn.execute(sa.text("INSERT INTO items VALUES (:id, :n, :r, :num, :t, :b, :d, :ts, :flag)"), rows)
    plan = make_plan(engine, "items", rows_per_query=70, file_size=4_000)
    spans = spans_of_plan(plan)
    parts, _ = _export(engine, plan, "sqlalchemy", tmp_path / "out")
    src = span_checksums(engine, plan, spans)
    out, stray = _parquet(plan, parts, spans)
    assert stray == 0 and sum(s.rows for s in src) == 300
    assert [(s.rows, s.checksum) for s in src] == [(o.rows, o.checksum) for o in out]
    engine.dispose()


def test_merge_of_pieces_equals_checksum_of_the_whole(tmp_path):
    import pyarrow as pa

    from executor.checksum import arrow_span_checksums
    from planner.plan import ColumnSpec

    class Info:  # a TableInfo-shaped stand-in: the API takes a plan or a TableInfo
        table, schema, key, key_signed = "t", None, "id", True
        columns = (ColumnSpec("id", "bigint", "int64", "BIGINT"), ColumnSpec("s", "text", "string", "VARCHAR"))

    t = pa.table({"id": pa.array([1, 2, 3, 4, None], pa.int64()), "s": ["a", "b", None, "d", "n"]})
    spans = [Span(None, 3), Span(3, None), Span.null_keys()]
    whole, stray = arrow_span_checksums(t, Info, spans)
    assert stray == 0 and [w.rows for w in whole] == [2, 2, 1]
    a, _ = arrow_span_checksums(t.slice(0, 3), Info, spans)
    b, _ = arrow_span_checksums(t.slice(3), Info, spans)
    assert [x.merge(y) for x, y in zip(a, b)] == whole
