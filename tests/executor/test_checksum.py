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

from sparsesync.executor.checksum import Span, SpanChecksum, parquet_span_checksums, span_checksums, spans_of_plan
from sparsesync.planner.api import make_plan
from tests.executor.test_roundtrip_types import ALL_TYPES_DDL, KEYSETS, _export, _fill


def _parquet(plan, parts, spans, **kw):
    listing = "[" + ", ".join(f"'{p.url}'" for p in parts) + "]"
    con = duckdb.connect()
    try:
        return parquet_span_checksums(con, f"read_parquet({listing})", plan, spans, **kw)
    finally:
        con.close()


@pytest.mark.mysql
@pytest.mark.parametrize("kind,keytype", [("pymysql", "BIGINT"), ("connectorx", "BIGINT"),
                                          ("connectorx", "BIGINT UNSIGNED")])
def test_all_types_source_checksum_equals_parquet_checksum(kind, keytype, mysql_engine, mysql_table, tmp_path):
    name = mysql_table(ALL_TYPES_DDL.replace("{keytype}", keytype), prefix="ck")
    keys = KEYSETS[keytype]()
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
                       "d DATETIME(6), n DECIMAL(10,2), bl VARBINARY(8), x DOUBLE, fl FLOAT)", prefix="ck")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` VALUES (:id, :a, :b, :d, :n, :bl, :x, :fl)"), [
            dict(id=i, a=f"a{i}", b="x", d=f"2020-01-01 00:00:0{i % 10}.5", n=i / 4, bl=bytes([i]), x=0.1 * i, fl=1234.5)
            for i in range(1, 21)])
    plan = make_plan(mysql_engine, name, rows_per_query=1000)
    whole = [Span(None, None)]
    base = span_checksums(mysql_engine, plan, whole)[0]
    assert base.rows == 20
    for stmt in ("UPDATE `{t}` SET a = 'a1|', b = 'x' WHERE id = 1",  # separator moved between fields
                 "UPDATE `{t}` SET b = NULL WHERE id = 2",
                 "UPDATE `{t}` SET d = '2020-01-01 00:00:02.500001' WHERE id = 2",
                 "UPDATE `{t}` SET n = n + 0.01 WHERE id = 3",
                 "UPDATE `{t}` SET bl = X'00' WHERE id = 4",
                 "UPDATE `{t}` SET x = 0.1 + 0.2 WHERE id = 3",  # 0.3 (DECIMAL sum) vs 0.30000000000000004: one ulp
                 "UPDATE `{t}` SET x = -x WHERE id = 5",
                 # beyond FLOAT's 6 printed digits (1234.5 either way): compared by value since issue 9
                 "UPDATE `{t}` SET fl = 1234.5001 WHERE id = 6"):
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(stmt.format(t=name))
        now = span_checksums(mysql_engine, plan, whole)[0]
        assert now.rows == 20 and now.checksum != base.checksum, stmt
        base = now
    from sparsesync.planner.introspect import introspect

    info = introspect(mysql_engine, name)  # the sync side passes a TableInfo, not a plan
    assert span_checksums(mysql_engine, info, whole) == [base]
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

    from sparsesync.executor.checksum import arrow_span_checksums
    from sparsesync.planner.plan import ColumnSpec

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


@pytest.mark.mysql
@pytest.mark.parametrize("kind", ["pymysql", "connectorx"])
def test_bool_columns_agree_and_a_value_2_differs(kind, mysql_engine, mysql_table, tmp_path):
    from sparsesync.planner.typemap import TypeOptions

    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY, f TINYINT(1), g BOOL NOT NULL)", prefix="ck")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` VALUES (:i, :f, :g)"),
                     [{"i": i, "f": None if i % 7 == 0 else i % 2, "g": 1 - i % 2} for i in range(100)])
    plan = make_plan(mysql_engine, name, rows_per_query=30, type_options=TypeOptions(tinyint1_as_bool=True))
    assert plan.columns[1].arrow_type == "bool"
    spans = spans_of_plan(plan)
    parts, _ = _export(mysql_engine, plan, kind, tmp_path)
    out, _ = _parquet(plan, parts, spans)
    src = span_checksums(mysql_engine, plan, spans)
    assert [(s.rows, s.checksum) for s in src] == [(o.rows, o.checksum) for o in out]
    with mysql_engine.begin() as conn:  # a value the export would refuse now differs from the output
        conn.exec_driver_sql(f"UPDATE `{name}` SET f = 2 WHERE id = 1")
    assert span_checksums(mysql_engine, plan, spans)[0].checksum != out[0].checksum


@pytest.mark.mysql
def test_double_text_matches_mysql_cast_value_by_value(mysql_engine):
    """Extremes, subnormals, every power of ten, random bit patterns: mysql_double_text == CAST(x AS CHAR),
    and DuckDB's UDF over the same Arrow doubles gives the same text."""
    import struct

    import pyarrow as pa

    from sparsesync.executor.checksum import _register_duckdb, mysql_double_text

    rng = random.Random(5)
    vals = [0.0, 0.1, 0.1 + 0.2, 123456789.0, 1.5e-7, 2.0**53, 1 / 3, 5e-324, -1.0e308, 2.2250738585072014e-308,
            1234567890123456.7, 9007199254740993.0, -1500.0]
    vals += [float(f"1e{k}") for k in range(-323, 309)] + [float(f"1.2345678901234567e{k}") for k in range(-300, 300)]
    vals += [rng.uniform(-1e6, 1e6) for _ in range(200)]
    vals += [rng.random() * 10.0 ** rng.randint(-30, 30) for _ in range(1000)]
    bits = (struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(1000))
    vals += [v for v in bits if v == v and abs(v) != float("inf")]
    with mysql_engine.connect() as conn:
        conn.exec_driver_sql("CREATE TEMPORARY TABLE dbl (i INT PRIMARY KEY, d DOUBLE)")
        conn.execute(sa.text("INSERT INTO dbl VALUES (:i, :d)"), [{"i": i, "d": v} for i, v in enumerate(vals)])
        rows = conn.execute(sa.text("SELECT i, d, CAST(d AS CHAR) FROM dbl ORDER BY i")).all()
    assert len(rows) == len(vals)
    assert [mysql_double_text(r[1]) for r in rows] == [r[2] for r in rows]
    con = duckdb.connect()
    _register_duckdb(con)
    con.register("t", pa.table({"i": [r[0] for r in rows], "d": pa.array([r[1] for r in rows], pa.float64())}))
    assert [r[0] for r in con.execute("SELECT sparsesync_mysql_double(d) FROM t ORDER BY i").fetchall()] == \
        [r[2] for r in rows]


GROUPED_DDL = ("CREATE TABLE {name} (pk INT AUTO_INCREMENT PRIMARY KEY, id {keytype} NULL, v VARCHAR(20), "
               "UNIQUE KEY (id)) ENGINE=InnoDB")


@pytest.mark.mysql
@pytest.mark.parametrize("keytype", list(KEYSETS))
def test_many_spans_in_one_grouped_statement_equal_one_statement_per_span(keytype, mysql_engine, mysql_table,
                                                                            query_log, monkeypatch):
    """Spans at both ends of the 64-bit domain (signed and unsigned), an open first and last span, the
    NULL-key span, a span past the type's maximum and overlapping spans: the grouped statements give
    what one statement per span gives, and what counting the keys in Python gives — in a few statements."""
    from sparsesync.executor import checksum as ck
    from sparsesync.planner.introspect import introspect

    name = mysql_table(GROUPED_DDL.replace("{keytype}", keytype), prefix="ckg")
    keys = KEYSETS[keytype]()
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` (id, v) VALUES (:k, :v)"),
                     [{"k": k, "v": f"v{k % 97}"} for k in keys] + [{"k": None, "v": f"n{i}"} for i in range(7)])
    info = introspect(mysql_engine, name, key="id")
    top = 2**63 - 1 if keytype == "BIGINT" else 2**64 - 1
    cuts = sorted(set(random.Random(5).sample(keys, 40)) | {keys[0], keys[-1], keys[-1] + 1})
    spans = [Span(None, cuts[0])] + [Span(a, b) for a, b in zip(cuts, cuts[1:])] + [Span(cuts[-1], None)]
    spans += [Span.null_keys(), Span(top + 1, None), Span(cuts[3], cuts[9]), Span(cuts[12], None)]  # past max; overlapping

    def in_span(k, s):
        if s.nulls:
            return k is None
        return k is not None and (s.lo is None or k >= s.lo) and (s.hi is None or k < s.hi)

    with mysql_engine.connect() as conn:
        conn.exec_driver_sql("SET GLOBAL general_log = 'ON'")
    query_log.mark()
    grouped = span_checksums(mysql_engine, info, spans)
    assert sum("md5(" in s.lower() for s in query_log.statements(name)) == 2  # disjoint spans + overlapping ones
    one_by_one = [span_checksums(mysql_engine, info, [s])[0] for s in spans]
    assert grouped == one_by_one
    every = keys + [None] * 7
    assert [g.rows for g in grouped] == [sum(in_span(k, s) for k in every) for s in spans]
    assert grouped[-3].rows == 0 and grouped[-4].rows == 7 and sum(g.rows for g in grouped[:-4]) == len(keys)
    # Many spans are batched: a bounded statement each, together the same answer.
    monkeypatch.setattr(ck, "MAX_SPANS_PER_STATEMENT", 7)
    assert span_checksums(mysql_engine, info, spans) == grouped
    query_log.mark()
    counts = span_checksums(mysql_engine, info, spans, counts_only=True)
    assert [c.rows for c in counts] == [g.rows for g in grouped] and all(c.checksum is None for c in counts)
    # counting needs no per-row bucket: plain index-range counts, UNION ALL-ed, ≤ 7 spans a statement here
    stmts = [q for q in query_log.statements(name) if "count(" in q.lower()]
    assert stmts and all("case when" not in q.lower() and q.lower().count("count(") <= 7 for q in stmts)


@pytest.mark.mysql
def test_snapshot_counts_over_a_dbapi_cursor_are_grouped(mysql_engine, mysql_table, query_log):
    """The executor's end-of-run counts inside the reader's snapshot (a raw pymysql cursor): one statement
    for all ranges, the same counts as the SQLAlchemy path."""
    from sparsesync.executor.checksum import span_counts_dbapi
    from sparsesync.planner.introspect import introspect

    name = mysql_table(GROUPED_DDL.replace("{keytype}", "BIGINT"), prefix="ckd")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{name}` (id, v) SELECT seq * 3, 'x' FROM seq_1_to_3000")
        conn.exec_driver_sql(f"INSERT INTO `{name}` (id, v) VALUES (NULL, 'n'), (NULL, 'm')")
    info = introspect(mysql_engine, name, key="id")
    spans = [Span(None, 100)] + [Span(lo, lo + 100) for lo in range(100, 9000, 100)] + [Span(9000, None), Span.null_keys()]
    with mysql_engine.connect() as conn:
        conn.exec_driver_sql("SET GLOBAL general_log = 'ON'")
    query_log.mark()
    raw = mysql_engine.raw_connection()
    try:
        with raw.cursor() as cur:
            got = span_counts_dbapi(cur, mysql_engine.dialect, info, spans)
    finally:
        raw.close()
    assert query_log.count(name) == 1
    assert got == span_checksums(mysql_engine, info, spans, counts_only=True)
    assert sum(c.rows for c in got) == 3002 and got[-1].rows == 2 and got[0].rows == 33
