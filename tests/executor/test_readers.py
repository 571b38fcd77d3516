"""Readers: SQL quoting, batching and order, snapshot consistency, reader choice, error mapping."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pymysql
import pytest
import sqlalchemy as sa

from sparsesync.executor.readers import (
    ConnectorXReader,
    PyMySQLReader,
    _source_error,
    available_readers,
    key_bounds,
    make_reader,
    range_query,
)
from sparsesync.planner.api import make_plan
from sparsesync.planner.plan import KeyRange
from sparsesync.errors import SourceError, TransientSourceError, UsageError
from tests.conftest import insert_keys

MYSQL_KINDS = ["pymysql", "connectorx"]


def _read_all(reader, plan) -> list[pa.RecordBatch]:
    out = []
    with reader.session() as s:
        for r in plan.ranges:
            out += list(s.read_range(r))
    return out


@pytest.mark.parametrize("kind", MYSQL_KINDS)
def test_odd_identifiers_are_quoted(kind, mysql_engine, mysql_table):
    """Table and column names that are keywords or hold quotes/backticks/spaces are quoted, not pasted."""
    name = mysql_table("CREATE TABLE `{name}` (`select` BIGINT PRIMARY KEY, `we``ird col` VARCHAR(10), "
                       "`from` INT)", prefix="odd-name")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` VALUES (:a, :b, :c)"),
                     [{"a": k, "b": f"v{k}", "c": k * 2} for k in range(1, 301)])
    plan = make_plan(mysql_engine, name, rows_per_query=50)
    assert plan.source.key == "select"
    table = pa.Table.from_batches(_read_all(make_reader(mysql_engine, plan, kind=kind), plan), plan.arrow_schema())
    assert table.column("select").to_pylist() == list(range(1, 301))
    assert table.column("we`ird col").to_pylist() == [f"v{k}" for k in range(1, 301)]


@pytest.mark.parametrize("kind", MYSQL_KINDS)
def test_batches_bounded_ordered_and_schema_exact(kind, mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id BIGINT UNSIGNED PRIMARY KEY, v VARCHAR(20))")
    keys = [k * 7919 % 100_003 + 2**63 for k in range(1, 2001)]  # keys above 2^63, inserted out of order
    insert_keys(mysql_engine, name, keys, extra=lambda k: str(k))
    plan = make_plan(mysql_engine, name, rows_per_query=700)
    reader = make_reader(mysql_engine, plan, kind=kind, batch_rows=128)
    batches = _read_all(reader, plan)
    assert all(b.schema.equals(plan.arrow_schema()) for b in batches)
    assert max(b.num_rows for b in batches) <= 128
    got = [int(x) for b in batches for x in b.column("id").to_pylist()]
    assert got == sorted(keys)
    assert reader.stats.rows == len(keys) and reader.stats.batches == len(batches)


def test_pymysql_snapshot_sees_one_point_in_time(mysql_engine, mysql_table):
    """Serial mode: rows inserted after the session starts are invisible to later ranges and to count_rows."""
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
    insert_keys(mysql_engine, name, range(1, 1001))
    plan = make_plan(mysql_engine, name, rows_per_query=300)
    for snapshot, expect_extra in ((True, 0), (False, 1)):
        reader = make_reader(mysql_engine, plan, kind="pymysql", snapshot=snapshot)
        assert reader.consistency == ("snapshot" if snapshot else "per-range")
        seen = []
        with reader.session() as s:
            for i, r in enumerate(plan.ranges):
                seen += [k for b in s.read_range(r) for k in b.column("id").to_pylist()]
                if i == 0:  # a concurrent writer adds a row in a later range
                    with mysql_engine.begin() as conn:
                        conn.exec_driver_sql(f"INSERT INTO {name} (id) VALUES (999999 + {int(snapshot)})")
            counted = s.count_rows()
        assert len(seen) == 1000 + expect_extra + (0 if snapshot else 1)  # per-range also sees the first insert
        assert counted == len(seen)


def test_abandoned_range_does_not_break_the_session(mysql_engine, mysql_table):
    """Closing a range's generator early (a failed write) must leave the connection usable."""
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
    insert_keys(mysql_engine, name, range(1, 3001))
    plan = make_plan(mysql_engine, name, rows_per_query=1500)
    reader = make_reader(mysql_engine, plan, kind="pymysql", batch_rows=100)
    with reader.session() as s:
        it = s.read_range(plan.ranges[0])
        next(it)
        it.close()
        rows = sum(b.num_rows for r in plan.ranges for b in s.read_range(r))
    assert rows == 3000


def test_make_reader_choices(mysql_engine, mysql_table, tmp_path):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY)")
    insert_keys(mysql_engine, name, [1, 2, 3])
    plan = make_plan(mysql_engine, name)
    assert available_readers(mysql_engine) == ["connectorx", "pymysql"]
    assert isinstance(make_reader(mysql_engine, plan), ConnectorXReader)
    assert make_reader(mysql_engine, plan).consistency == "per-range"
    assert isinstance(make_reader(mysql_engine, plan, kind="pymysql"), PyMySQLReader)
    with pytest.raises(UsageError, match="unknown reader"):
        make_reader(mysql_engine, plan, kind="odbc")
    with pytest.raises(UsageError, match="not available"):
        make_reader(mysql_engine, plan, kind="sqlalchemy")
    sqlite = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    assert available_readers(sqlite) == ["sqlalchemy"]
    with pytest.raises(UsageError, match="not available"):
        make_reader(sqlite, plan, kind="pymysql")


def test_range_sql_binds_keys_and_clips_to_the_domain(mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY)")
    insert_keys(mysql_engine, name, [5])
    plan = make_plan(mysql_engine, name)
    stmt, params = range_query(plan, KeyRange(0, -(2**63), 10, 1, "dense"))
    sql = str(stmt.compile(dialect=mysql_engine.dialect))
    assert "%(lo)s" in sql and "%(hi)s" in sql and "ORDER BY" in sql and str(2**63) not in sql
    assert params == {"lo": -(2**63), "hi": 10}
    assert key_bounds(plan, KeyRange(1, 2**63, None, 0, "tail")) is None  # past BIGINT: cannot hold a row
    assert key_bounds(plan, KeyRange(1, 7, 2**63, 0, "dense")) == (7, None)
    unsigned = dataclasses.replace(plan, source=dataclasses.replace(plan.source, key_signed=False))
    assert key_bounds(unsigned, KeyRange(1, 2**63, None, 0, "tail")) == (2**63, None)
    with pytest.raises(UsageError):
        key_bounds(plan, KeyRange(1, "1 OR 1=1", None, 0, "tail"))  # type: ignore[arg-type]
    cx = make_reader(mysql_engine, plan, kind="connectorx")
    assert cx.sql(KeyRange(0, -5, 10, 1, "dense")).endswith("WHERE id >= -5 AND id < 10 ORDER BY id")
    assert cx.sql(KeyRange(0, 2**63, None, 0, "tail")) is None


def test_driver_errors_map_to_transient_or_not(mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY)")
    insert_keys(mysql_engine, name, [1])
    plan = make_plan(mysql_engine, name)
    r = plan.ranges[0]
    for code in (2013, 2006, 1205, 1213):
        err = _source_error(pymysql.err.OperationalError(code, "boom"), plan, r, "range query")
        assert isinstance(err, TransientSourceError) and err.transient and err.table == name
        assert err.key_range == (r.lo, r.hi)
    err = _source_error(pymysql.err.ProgrammingError(1146, "Table 'x' doesn't exist"), plan, r, "range query")
    assert type(err) is SourceError and not err.transient and "1146" in err.one_line()


@pytest.mark.parametrize("kind", MYSQL_KINDS)
def test_missing_table_is_a_source_error_without_password(kind, mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY)")
    insert_keys(mysql_engine, name, [1, 2])
    plan = make_plan(mysql_engine, name)
    reader = make_reader(mysql_engine, plan, kind=kind)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {name}")
    with pytest.raises(SourceError) as err:
        _read_all(reader, plan)
    assert name in err.value.one_line() and not err.value.transient


def test_sqlite_reader_streams_and_counts(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute(sa.text("INSERT INTO t VALUES (:i, :v)"), [{"i": i * 3, "v": str(i)} for i in range(1500)])
    plan = make_plan(engine, "t", rows_per_query=400)
    reader = make_reader(engine, plan, batch_rows=100)
    assert reader.name == "sqlalchemy"
    with reader.session() as s:
        batches = [b for r in plan.ranges for b in s.read_range(r)]
        assert s.count_rows() == 1500
    assert max(b.num_rows for b in batches) <= 100
    assert [k for b in batches for k in b.column("id").to_pylist()] == [i * 3 for i in range(1500)]
    engine.dispose()


def test_connectorx_url_drops_driver_only_parameters(mysql_url, mysql_table):
    engine = sa.create_engine(mysql_url + ("&" if "?" in mysql_url else "?") + "charset=utf8mb4")
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(10))")
    insert_keys(engine, name, [1, 2, 3], extra=lambda k: "é" * k)
    plan = make_plan(engine, name)
    batches = _read_all(make_reader(engine, plan, kind="connectorx"), plan)
    assert [v for b in batches for v in b.column("v").to_pylist()] == ["é", "éé", "ééé"]
    engine.dispose()


def test_connectorx_probes_wide_columns_once_before_the_first_range(mysql_engine, mysql_table, query_log):
    """An unbounded column (TEXT/JSON) is guessed at 64 KB a value until seen, which made the whole first
    range stream in ~500-row batches. One small statement measures the first rows' real widths (hostile
    column names quoted), and the first range's batches are sized from them like every later range's."""
    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, `bo``dy; --` LONGTEXT, doc JSON, "
                       "tag VARCHAR(8))", prefix="probe")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` VALUES (:k, :b, :d, 'x')"),
                     [{"k": k, "b": "é" * (k % 50), "d": '{"k": %d}' % k} for k in range(1, 3001)])
    plan = make_plan(mysql_engine, name, rows_per_query=1000, use_cache=False)
    reader = make_reader(mysql_engine, plan, kind="connectorx", batch_rows=1_000_000, batch_bytes=8 << 20)
    body, doc = 1, 2
    assert set(reader.width.guessed()) == {body, doc}
    unprobed = reader.width.rows_for(reader.batch_bytes, reader.batch_rows)
    first = plan.ranges[0]
    query_log.mark()
    batches = list(reader.session().__enter__().read_range(first))
    assert reader.width.guessed() == []
    # the probe saw the first 1,000 rows: at most 49 two-byte characters, '{"k": 1000}' = 11 bytes
    assert reader.width.seen[body] == 98 and reader.width.seen[doc] == 11
    assert reader.width.rows_for(reader.batch_bytes, reader.batch_rows) > 50 * unprobed
    assert len(batches) == 1 and batches[0].num_rows == first.est_rows
    probes = [q for q in query_log.statements(name) if "MAX(LENGTH(" in q]
    assert len(probes) == 1 and "`bo``dy; --`" in probes[0]
    # later ranges need no probe: every wide column has been seen
    list(reader.session().__enter__().read_range(plan.ranges[1]))
    assert len([q for q in query_log.statements(name) if "MAX(LENGTH(" in q]) == 1


def _whole_table(mysql_engine, mysql_table, n=3000, prefix="whole"):
    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(40))", prefix=prefix)
    insert_keys(mysql_engine, name, range(1, n + 1), extra=lambda k: f"v{k}")
    return name


def test_connectorx_reads_ranges_whole_with_the_next_one_ahead(mysql_engine, mysql_table, query_log):
    """Bounded ranges that fit the budget are read by one statement each (LIMIT = rows that fit + 1, so a
    range that grew is noticed), the next range of the group fetched while this one is consumed."""
    name = _whole_table(mysql_engine, mysql_table)
    plan = make_plan(mysql_engine, name, rows_per_query=500, use_cache=False)
    ranges = [r for r in plan.ranges if r.hi is not None and r.est_rows]
    assert len(ranges) >= 5
    reader = make_reader(mysql_engine, plan, kind="connectorx")
    query_log.mark()
    seen = []
    with reader.session() as s:
        s.expect(plan.ranges)
        for r in plan.ranges:
            if r is ranges[1]:
                assert s._ahead is not None and s._ahead[0] == r.index  # fetched while range 0 was consumed
            seen += [k for b in s.read_range(r) for k in b.column("id").to_pylist()]
    assert seen == list(range(1, 3001))
    stmts = [q for q in query_log.statements(name) if "LENGTH(" not in q]
    assert sum(" LIMIT " in q for q in stmts) == len(ranges), stmts  # one whole read per bounded range, no retry
    assert reader.stats.queries == sum(1 for r in plan.ranges if key_bounds(plan, r) is not None)


def test_a_range_that_grew_past_the_budget_is_streamed_instead(mysql_engine, mysql_table, query_log):
    """A burst inserted after planning: the whole read sees more rows than fit, so that range is read again
    as a stream (one statement of its own); every row exactly once, in key order."""
    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(40))", prefix="burst")
    insert_keys(mysql_engine, name, range(10, 10_001, 10), extra=lambda k: f"v{k}")  # 1,000 keys, gaps of 9
    plan = make_plan(mysql_engine, name, rows_per_query=200, use_cache=False)
    grown = next(r for r in plan.ranges if r.hi is not None and r.lo <= 4_000 < r.hi)
    burst = [k for k in range(grown.lo, grown.hi) if k % 10]  # fill the range's gaps: ~10× its planned rows
    insert_keys(mysql_engine, name, burst, extra=lambda k: "burst")
    # a budget that holds about 500 rows of this table whole: the planned ranges (~200 rows) fit, the grown one not
    reader = make_reader(mysql_engine, plan, kind="connectorx", batch_bytes=3_000)
    reader.probe_widths(grown)
    with reader.session() as s:
        assert grown.est_rows < s._whole_rows(grown) < grown.est_rows + len(burst)
        query_log.mark()
        s.expect(plan.ranges)
        got = [k for r in plan.ranges for b in s.read_range(r) for k in b.column("id").to_pylist()]
    assert got == sorted(list(range(10, 10_001, 10)) + burst)
    mine = [q for q in query_log.statements(name) if f"< {grown.hi}" in q and f">= {grown.lo}" in q
            and "LENGTH(" not in q]
    assert len(mine) == 2 and " LIMIT " in mine[0] and " LIMIT " not in mine[1]


def test_a_fault_of_the_read_ahead_is_its_own_range_s_and_retried(mysql_engine, mysql_url, mysql_table, tmp_path,
                                                                    monkeypatch):
    """The next range's read runs on a helper thread; its fault reaches the run when that range is due,
    as the same transient error, and the group's retry reads everything once."""
    import connectorx as cx

    from sparsesync.executor.run import execute_plan

    name = _whole_table(mysql_engine, mysql_table, n=2000, prefix="ahead")
    plan = make_plan(mysql_engine, name, rows_per_query=400, use_cache=False)
    second = [r for r in plan.ranges if r.hi is not None and r.est_rows][1]
    real, failed = cx.read_sql, []

    def flaky(conn, query, **kw):
        if kw.get("return_type") == "arrow" and f">= {second.lo}" in query and " LIMIT " in query and not failed:
            failed.append(query)
            raise RuntimeError("IoError { server disconnected }")  # what connectorx says for a dropped link
        return real(conn, query, **kw)

    monkeypatch.setattr(cx, "read_sql", flaky)
    rep = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader="connectorx", retry_base_s=0.01)
    assert failed and rep.retries == 1 and rep.rows == 2000
