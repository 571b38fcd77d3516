"""Readers: one ``SELECT … WHERE key >= lo AND key < hi ORDER BY key`` per planned range, streamed as
Arrow RecordBatches of exactly the plan's schema.

* ``pymysql`` — MySQL/MariaDB, always available: server-side cursor, one REPEATABLE READ consistent
  snapshot per session (serial runs see one snapshot for every range).
* ``connectorx`` — MySQL/MariaDB, Arrow-native (Rust), much faster; every query on its own connection,
  so consistency is per range. Special columns are selected through SQL expressions connectorx can carry
  (see :func:`_cx_select_expr`) so the output is identical to the pymysql reader's.
* ``sqlalchemy`` — generic streaming for SQLite (the demo source) and PostgreSQL.

Identifiers from the plan are always quoted by the dialect; keys are bound parameters, except in the
connectorx SQL string, where they are rendered from validated Python ints (see :func:`_int_literal`).
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator, Protocol

import pyarrow as pa
from sparsesync.lazy import lazy_module

from sparsesync.planner.plan import ColumnSpec, KeyRange, Plan
from sparsesync.errors import SourceError, SparsesyncError, TransientSourceError, UsageError, ValueConversionError
from sparsesync.direct import sa_dialect
from sparsesync.source import is_mysql, quoted_table, short_db_error, text_name, text_table

from .budget import MAX_BATCH_BYTES, MemoryBudget, RowWidth, cut_by_bytes
from .convert import Context, ReadStats, RowBatcher, batches_of, cast_array, empty_batch, int_to_bool

pc = lazy_module("pyarrow.compute")  # imported on first use: an empty table never needs it
sa = lazy_module("sqlalchemy")  # the connectorx reader over a direct source (sparsesync.direct) never needs it

__all__ = [
    "Reader", "ReadSession", "ReadStats", "make_reader", "available_readers", "range_query", "key_bounds",
    "PyMySQLReader", "ConnectorXReader", "SQLAlchemyReader",
]

READER_KINDS = ("auto", "pymysql", "connectorx", "sqlalchemy")
# MySQL error codes a retry may cure: server gone / lost connection, lock wait timeout, deadlock,
# too many connections, query interrupted by a server shutdown; and "can't connect" (2003), which a reader
# only meets when reconnecting after a fault (a server unreachable from the start fails before reading).
TRANSIENT_MYSQL_CODES = {2003, 2006, 2013, 2055, 1205, 1213, 1040, 1053}


class ReadSession(Protocol):
    """An open source connection (and, in snapshot mode, one consistent snapshot)."""

    def read_range(self, r: KeyRange) -> Iterator[pa.RecordBatch]: ...


class Reader(Protocol):
    """Reads a plan's ranges; ``session()`` opens the connection(s)."""

    name: str
    consistency: str
    stats: ReadStats

    def session(self) -> ContextManager[ReadSession]: ...


# ---- SQL -----------------------------------------------------------------------------------------------------
def _table_clause(plan: Plan) -> sa.TableClause:
    src = plan.source
    return sa.table(src.table, schema=src.schema) if src.schema else sa.table(src.table)


def key_bounds(plan: Plan, r: KeyRange) -> tuple[int, int | None] | None:
    """The range's bounds clipped to the key type's domain; ``None`` when no key can be in it.

    A plan whose maximum key is the type's maximum has a tail starting one past it (2^63 for a signed
    BIGINT), which SQLite cannot even bind; such a range is empty by construction, and an upper bound
    past the maximum is the same as no upper bound.
    """
    if r.nulls:  # the NULL-key range: no bounds, always queried
        return None, None
    top = 2**63 - 1 if plan.source.key_signed else 2**64 - 1
    lo, hi = _check_key(r.lo), (None if r.hi is None else _check_key(r.hi))
    if lo > top:
        return None
    if hi is not None and hi > top:
        hi = None
    return lo, hi


def range_query(plan: Plan, r: KeyRange) -> tuple[sa.Select, dict[str, int]] | None:
    """The range SELECT (SQLAlchemy Core, identifiers quoted at compile time) and its bound keys.

    ``None`` when the range cannot hold a key (see :func:`key_bounds`)."""
    bounds = key_bounds(plan, r)
    if bounds is None:
        return None
    lo, hi = bounds
    key = sa.column(plan.source.key)
    stmt = sa.select(*[_select_column(plan, c) for c in plan.columns]).select_from(_table_clause(plan))
    if r.nulls:  # rows whose key is NULL: no order to keep among them
        return stmt.where(key.is_(None)), {}
    params = {"lo": lo}
    stmt = stmt.where(key >= sa.bindparam("lo", type_=sa.BigInteger))
    if hi is not None:
        params["hi"] = hi
        stmt = stmt.where(key < sa.bindparam("hi", type_=sa.BigInteger))
    return stmt.order_by(key), params


def _select_column(plan: Plan, c: ColumnSpec):
    """The column as the range SELECT reads it.

    MySQL's text protocol prints FLOAT with 6 significant digits (694867.47 arrives as "694868"), so a
    FLOAT is read as DOUBLE (``col + 0e0``: exact for every float32, MySQL 8 and MariaDB alike) and cast
    back to float32 by the plan's schema — the value the server stores, as the binary-protocol reader gets it.
    """
    col = sa.column(c.name)
    if plan.source.dialect in ("mysql", "mariadb") and c.arrow_type == "float":
        return (col + sa.literal_column("0e0")).label(c.name)
    return col


def _check_key(value: Any) -> int:
    """Keys come from the plan as Python ints; refuse anything else before it reaches SQL."""
    if type(value) is not int or not (-(2**63) <= value <= 2**64):
        raise UsageError(f"range bound {value!r} is not an integer key within BIGINT / BIGINT UNSIGNED")
    return value


def _int_literal(value: Any) -> str:
    """Render a key as SQL text for connectorx (which takes a string, not parameters).

    Safe because the value is checked to be a real ``int`` (not a subclass, not a string) in the
    BIGINT/BIGINT UNSIGNED domain, and ``int.__str__`` yields only an optional ``-`` and digits.
    """
    return str(_check_key(value))


def _guarded_fetch(fetchmany, plan, r):
    """``fetchmany`` whose driver errors become the range's SourceError (transient ones are retried)."""
    def fetch(n: int):
        try:
            return fetchmany(n)
        except Exception as exc:  # noqa: BLE001
            raise _source_error(exc, plan, r, "reading the range") from exc

    return fetch


def _source_error(exc: BaseException, plan: Plan, r: KeyRange | None, what: str) -> SparsesyncError:
    """Map a driver exception to TransientSourceError / SourceError with table and range context."""
    if isinstance(exc, SparsesyncError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    code = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
    transient = code in TRANSIENT_MYSQL_CODES
    text = short_db_error(exc)
    low = text.lower()
    if not transient and any(s in low for s in ("lost connection", "server has gone away", "deadlock",
                                                "lock wait timeout", "connection reset", "broken pipe")):
        transient = True
    cls = TransientSourceError if transient else SourceError
    return cls(
        f"{what} failed: {text}",
        hint="a retry (or resume) may cure it" if transient else "check the source, the table and its permissions",
        table=plan.source.qualified_table,
        key_range=None if r is None else (r.lo, r.hi),
    )


class _ReaderBase:
    """What every reader holds; ``supports_snapshot`` says whether one session can share one snapshot."""

    supports_snapshot = True

    def __init__(self, engine: sa.Engine, plan: Plan, *, batch_rows: int = 65536, strict_dates: bool = False,
                 snapshot: bool = True, batch_bytes: int | None = None) -> None:
        self.engine = engine
        self.plan = plan
        self.batch_rows = batch_rows
        # Batches are cut at whichever comes first: batch_rows rows or about batch_bytes bytes.
        self.batch_bytes = batch_bytes or MemoryBudget().batch_bytes
        self.width = RowWidth(plan)
        self.strict_dates = strict_dates
        self.snapshot = snapshot and self.supports_snapshot
        self.consistency = "snapshot" if self.snapshot else "per-range"
        self.stats = ReadStats()
        # Local directory a span statement spills to when its writer lags (executor.spill); None: $TMPDIR.
        self.spill_dir: str | None = None


# ---- pymysql -------------------------------------------------------------------------------------------------
class PyMySQLReader(_ReaderBase):
    """MySQL/MariaDB through pymysql with a server-side cursor and bulk column conversion."""

    name = "pymysql"

    def __init__(self, engine: sa.Engine, plan: Plan, **options) -> None:
        super().__init__(engine, plan, **options)
        self._stmt_cache: dict[bool, str] = {}

    def _connect(self):
        import pymysql

        # Opened through the engine (so a connection budget on it counts this one too), then detached from
        # its pool: the session's settings never leak into pooled connections and close() really closes.
        try:
            conn = self.engine.raw_connection()
        except Exception as exc:  # noqa: BLE001 - mapped to SourceError
            raise _source_error(exc, self.plan, None, "connecting to the source") from exc
        conn.detach()
        if not isinstance(conn.dbapi_connection, pymysql.connections.Connection):
            conn.close()
            raise UsageError("the pymysql reader needs a mysql+pymysql:// source URL", table=self.plan.source.table)
        return conn

    def sql(self, tail: bool | str) -> str:
        """The compiled range statement (pyformat parameters) for a closed range, the tail (``True``) or
        the NULL-key range (``"nulls"``)."""
        if tail not in self._stmt_cache:
            r = KeyRange(0, None, None, 0, "nulls", nulls=True) if tail == "nulls" else \
                KeyRange(0, 0, None if tail else 1, 0, "dense")
            stmt, _ = range_query(self.plan, r)  # type: ignore[misc] - [0, 1) is always in the domain
            self._stmt_cache[tail] = str(stmt.compile(dialect=sa_dialect(self.engine)))
        return self._stmt_cache[tail]

    @contextlib.contextmanager
    def session(self) -> Iterator["PyMySQLSession"]:
        """One connection; in snapshot mode one REPEATABLE READ consistent snapshot for all its ranges."""
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                # TIMESTAMP values come out in UTC; long streams must not hit the server's write timeout.
                cur.execute("SET SESSION time_zone = '+00:00', SESSION net_write_timeout = 3600, "
                            "SESSION net_read_timeout = 3600")
                if self.snapshot:
                    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                else:
                    # Without autocommit the first SELECT would open an implicit REPEATABLE READ
                    # transaction and pin a snapshot anyway; per-range means each query sees the present.
                    conn.autocommit(True)
        except Exception as exc:  # noqa: BLE001
            conn.close()
            raise _source_error(exc, self.plan, None, "opening a read session") from exc
        try:
            yield PyMySQLSession(self, conn)
        finally:
            with contextlib.suppress(Exception):
                if self.snapshot:
                    conn.rollback()  # read-only; ends the snapshot
            with contextlib.suppress(Exception):
                conn.close()


class PyMySQLSession:
    """Reads ranges over one pymysql connection."""

    def __init__(self, reader: PyMySQLReader, conn) -> None:
        self.reader = reader
        self.conn = conn
        self.batcher = RowBatcher(reader.plan, strict_dates=reader.strict_dates, stats=reader.stats)

    def read_range(self, r: KeyRange) -> Iterator[pa.RecordBatch]:
        """Stream range ``r`` ordered by key, in batches of ``batch_bytes`` (at most ``batch_rows`` rows)."""
        import pymysql.cursors

        rd = self.reader
        bounds = key_bounds(rd.plan, r)
        if bounds is None:
            return
        params = {} if r.nulls else {"lo": bounds[0]}
        if bounds[1] is not None:
            params["hi"] = bounds[1]
        cur = self.conn.cursor(pymysql.cursors.SSCursor)
        try:
            try:
                cur.execute(rd.sql("nulls" if r.nulls else bounds[1] is None), params)
            except Exception as exc:  # noqa: BLE001
                raise _source_error(exc, rd.plan, r, "range query") from exc
            rd.stats.add_query()

            fetch = _guarded_fetch(cur.fetchmany, rd.plan, r)
            for rows in cut_by_bytes(fetch, rd.width, rd.batch_bytes, rd.batch_rows):
                for batch in batches_of(self.batcher.build(rows, r)):
                    rd.width.observe(batch)
                    rd.stats.add_batch(batch)
                    yield batch
        finally:
            # Closing an SSCursor drains unread rows; on a broken connection that may fail too.
            with contextlib.suppress(Exception):
                cur.close()
            result = getattr(cur, "_result", None)
            if result is not None:  # a broken stream: nothing to drain when it is garbage-collected either
                result.unbuffered_active = False

    def count_rows(self) -> int:
        """``COUNT(*)`` of the table inside this session's snapshot."""
        rd = self.reader
        src = rd.plan.source
        table = quoted_table(rd.engine.dialect, src.table, src.schema)
        try:
            with self.conn.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                n = cur.fetchone()[0]
        except Exception as exc:  # noqa: BLE001
            raise _source_error(exc, rd.plan, None, "counting rows") from exc
        rd.stats.add_query()
        return int(n)


# ---- SQLAlchemy (SQLite, PostgreSQL) ---------------------------------------------------------------------------
class SQLAlchemyReader(_ReaderBase):
    """Generic streaming reader (``stream_results``/``yield_per``) for SQLite and PostgreSQL.

    One transaction per session: SQLite (a read transaction) and PostgreSQL (REPEATABLE READ) give every
    range of the session the same view.
    """

    name = "sqlalchemy"

    @contextlib.contextmanager
    def session(self) -> Iterator["SQLAlchemySession"]:
        """One connection inside one transaction."""
        try:
            conn = self.engine.connect()
            if self.snapshot and self.engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            tx = conn.begin()
        except Exception as exc:  # noqa: BLE001
            raise _source_error(exc, self.plan, None, "connecting to the source") from exc
        try:
            yield SQLAlchemySession(self, conn)
        finally:
            with contextlib.suppress(Exception):
                tx.rollback()
            with contextlib.suppress(Exception):
                conn.close()


class SQLAlchemySession:
    """Reads ranges over one SQLAlchemy connection."""

    def __init__(self, reader: SQLAlchemyReader, conn: sa.Connection) -> None:
        self.reader = reader
        self.conn = conn
        self.batcher = RowBatcher(reader.plan, strict_dates=reader.strict_dates, stats=reader.stats,
                                  loose_types=reader.engine.dialect.name == "sqlite")

    def read_range(self, r: KeyRange) -> Iterator[pa.RecordBatch]:
        """Stream range ``r`` ordered by key."""
        rd = self.reader
        query = range_query(rd.plan, r)
        if query is None:
            return
        stmt, params = query
        try:
            result = self.conn.execution_options(stream_results=True, yield_per=rd.batch_rows).execute(stmt, params)
        except Exception as exc:  # noqa: BLE001
            raise _source_error(exc, rd.plan, r, "range query") from exc
        rd.stats.add_query()
        fetch = _guarded_fetch(result.fetchmany, rd.plan, r)
        try:
            for rows in cut_by_bytes(fetch, rd.width, rd.batch_bytes, rd.batch_rows):
                for batch in batches_of(self.batcher.build([tuple(row) for row in rows], r)):
                    rd.width.observe(batch)
                    rd.stats.add_batch(batch)
                    yield batch
        finally:
            with contextlib.suppress(Exception):
                result.close()

    def count_rows(self) -> int:
        """``COUNT(*)`` of the table inside this session's transaction."""
        rd = self.reader
        stmt = sa.select(sa.func.count()).select_from(_table_clause(rd.plan))
        try:
            n = self.conn.execute(stmt).scalar_one()
        except Exception as exc:  # noqa: BLE001
            raise _source_error(exc, rd.plan, None, "counting rows") from exc
        rd.stats.add_query()
        return int(n)


# ---- connectorx -----------------------------------------------------------------------------------------------
def connectorx_available() -> bool:
    """True when the connectorx package imports."""
    try:
        import connectorx  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def _cx_select_expr(spec: ColumnSpec, quoted: str) -> tuple[str, str]:
    """(SQL expression, kind) for one column as connectorx should fetch it.

    connectorx 0.4 panics on zero dates, rejects DECIMAL values whose scale differs from the column's,
    maps TIME to a 24-hour time type and BIT to bytes, so those columns are fetched as expressions whose
    result it carries faithfully, and converted back to the plan's type in Arrow:
    DATE/DATETIME → text (zero/invalid dates detected like pymysql does), TIMESTAMP → UNIX microseconds
    (independent of the session time zone; 0 is the zero timestamp, as TIMESTAMP starts at 1970-01-01
    00:00:01 UTC), TIME → signed microseconds, BIT → unsigned integer, wide DECIMAL → text.
    """
    t = spec.source_type.lower()
    tag = spec.conversion
    if tag == "zero_date":
        if t.startswith("timestamp"):
            return f"CAST(UNIX_TIMESTAMP({quoted}) * 1000000 AS SIGNED)", "unix_us"
        return f"CAST({quoted} AS CHAR)", "date_text"
    if tag == "time_us":
        # Integer parts only: TIME_TO_SEC() keeps the fraction on MariaDB (a DECIMAL) but drops it on MySQL 8
        # (an integer). HOUR() of a TIME goes up to 838; the sign is read from the text form ('-00:00:00.5').
        return (f"IF(LEFT(CAST({quoted} AS CHAR), 1) = '-', -1, 1) * ((HOUR({quoted}) * 3600 + MINUTE({quoted}) * 60 "
                f"+ SECOND({quoted})) * 1000000 + MICROSECOND({quoted}))"), "plain"
    if tag == "bool":
        # As the integer stored (connectorx would turn any non-zero into true); 0/1 are checked in Arrow.
        return f"CAST({quoted} AS SIGNED)", "bool"
    if tag == "bit_int":
        return f"CAST({quoted} AS UNSIGNED)", "plain"
    if tag == "decimal_str":
        return f"CAST({quoted} AS CHAR)", "plain"
    if t.startswith(("decimal", "numeric", "dec", "fixed")):
        # connectorx hands every DECIMAL over as decimal128(38, 10) through a 96-bit decimal: exact only
        # when the scale is ≤ 10 and the integer part has ≤ 18 digits; anything else travels as text.
        ty = spec.pa_type
        if pa.types.is_decimal(ty) and ty.scale <= 10 and ty.precision - ty.scale <= 18:
            return quoted, "plain"
        return f"CAST({quoted} AS CHAR)", "plain"
    return quoted, "plain"


# A range read whole may hold this many reader batches of bytes: half of the reader's share of --memory-limit
# (ten batches), the rest for the writer's row group and the batches in flight; a range and the next one read
# meanwhile take half of that each.
WHOLE_RANGE_BATCHES = 5
PROBE_ROWS = 1000  # rows whose widths size the first range's batches (the old first batch held ~500)
_CX_DROP_PARAMS = {"charset", "binary_prefix", "use_unicode", "client_flag", "local_infile"}


class ConnectorXReader(_ReaderBase):
    """MySQL/MariaDB through connectorx's Arrow output; each query on its own connection."""

    name = "connectorx"
    supports_snapshot = False  # every query opens its own connection

    def __init__(self, engine: sa.Engine, plan: Plan, **options) -> None:
        super().__init__(engine, plan, **options)
        self.schema = plan.arrow_schema()
        # connectorx sends the text as is: identifiers with single % (see single_percents)
        d = engine.dialect
        src = plan.source

        def quote(name: str) -> str:
            return text_name(d, name)

        self._table = text_table(d, src.table, src.schema)
        self._key = quote(src.key)
        exprs = [_cx_select_expr(c, quote(c.name)) for c in plan.columns]
        self._exprs = [e for e, _ in exprs]
        self._kinds = [k for _, k in exprs]
        self._select = ", ".join(
            e if e == quote(c.name) else f"{e} AS {quote(c.name)}" for (e, _), c in zip(exprs, plan.columns)
        )
        names = [c.name for c in plan.columns]
        self._key_pos = names.index(src.key) if src.key in names else None

    def _conn_str(self) -> str:
        # Never logged; the password is URL-escaped by SQLAlchemy's renderer. connectorx refuses unknown
        # URL parameters: drop the driver-only ones that do not change what is read (it always speaks
        # utf8mb4); anything else (TLS options…) is passed on, so it fails loudly rather than silently.
        query = {k: v for k, v in self.engine.url.query.items() if k not in _CX_DROP_PARAMS}
        url = self.engine.url.set(drivername="mysql", query=query)
        return url.render_as_string(hide_password=False)

    def _where(self, r: KeyRange) -> str | None:
        bounds = key_bounds(self.plan, r)
        if bounds is None:
            return None
        if r.nulls:
            return f"{self._key} IS NULL"
        cond = f"{self._key} >= {_int_literal(bounds[0])}"
        if bounds[1] is not None:
            cond += f" AND {self._key} < {_int_literal(bounds[1])}"
        return cond

    def sql(self, r: KeyRange) -> str | None:
        """The range SELECT as text (identifiers quoted by the dialect, keys validated ints)."""
        cond = self._where(r)
        if cond is None:
            return None
        order = "" if r.nulls else f" ORDER BY {self._key}"
        return f"SELECT {self._select} FROM {self._table} WHERE {cond}{order}"

    def probe_sql(self, r: KeyRange, columns: list[int], rows: int = PROBE_ROWS) -> str | None:
        """Widest value, in bytes, of each of ``columns`` among the first ``rows`` rows of range ``r``."""
        cond = self._where(r)
        if cond is None or not columns:
            return None
        inner = ", ".join(f"{self._exprs[i]} AS c{n}" for n, i in enumerate(columns))
        outer = ", ".join(f"MAX(LENGTH(c{n})) AS w{n}" for n in range(len(columns)))
        order = "" if r.nulls else f" ORDER BY {self._key}"
        return f"SELECT {outer} FROM (SELECT {inner} FROM {self._table} WHERE {cond}{order} LIMIT {int(rows)}) AS probe"

    def warm_up(self) -> None:
        """One trivial statement: connectorx's first call loads its runtime (~0.25 s), best done early."""
        try:
            cx_read_sql(self, KeyRange(0, None, None, 0, "dense"), "SELECT 1", return_type="arrow")
        except SparsesyncError:
            pass  # the real statements report any fault

    def probe_widths(self, r: KeyRange) -> None:
        """Before the first range is streamed, measure the text/binary columns still guessed wide.

        connectorx fixes a statement's batch size when it starts. Sized from the guess for an unbounded
        column (64 KB a value) a first range with a JSON/TEXT column streamed in ~500-row batches, each
        costing connectorx and the conversion a fixed overhead (the issue-11 table: 218 batches in all, 36
        with the probe; benchmarks/results/speed.md).
        The first rows' real widths, read by one small statement, size it like every later range (from the
        widest values seen so far), and decide whether it may be read whole (ConnectorXSession).
        Best effort: if the probe fails the range query itself will say why.
        """
        columns = self.width.guessed(at_least=1)  # every text/binary column not seen yet: one statement anyway
        query = self.probe_sql(r, columns)
        if query is None:
            return
        try:
            got = cx_read_sql(self, r, query, return_type="arrow")
        except SparsesyncError:
            return  # the range query reports faults
        widths = {i: got.column(n)[0].as_py() for n, i in enumerate(columns) if got.num_rows}
        self.width.note({i: w for i, w in widths.items() if w is not None})

    @contextlib.contextmanager
    def session(self) -> Iterator["ConnectorXSession"]:
        """connectorx opens its own connection per query; the session carries state and the range read ahead."""
        s = ConnectorXSession(self)
        try:
            yield s
        finally:
            s.close()

    def convert(self, table: pa.Table | pa.RecordBatch, r: KeyRange) -> pa.RecordBatch:
        """connectorx's Arrow output → a RecordBatch of exactly the plan's schema."""
        if table.num_rows == 0:
            return empty_batch(self.schema)
        cols = [table.column(i) for i in range(table.num_columns)]
        cols = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]
        keys = None
        if self._key_pos is not None:
            keys = _LazyKeys(cols[self._key_pos])
        ctx = Context(self.plan.source.qualified_table, r, keys)
        arrays = []
        for i, (spec, kind, arr) in enumerate(zip(self.plan.columns, self._kinds, cols)):
            f = self.schema.field(i)
            if kind == "date_text":
                arr = self._zero_dates(arr, spec, ctx, texts=True)
            elif kind == "unix_us":
                arr = self._zero_dates(arr, spec, ctx, texts=False)
            elif kind == "bool":
                arr = int_to_bool(arr, spec.name, f.type, ctx)
            # DECIMAL text, uint64 → decimal128(20,0), uint32 → int64, large_binary → binary, µs → timestamp:
            # all safe Arrow casts; a value that does not fit raises with its column and key.
            arr = cast_array(arr, f.type, spec.name, ctx)
            if not f.nullable and arr.null_count:
                j = arr.is_null().index(True).as_py()
                raise ctx.error(spec.name, j, None, f.type, "NULL in a NOT NULL column")
            arrays.append(arr)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _zero_dates(self, arr: pa.Array, spec: ColumnSpec, ctx: Context, *, texts: bool) -> pa.Array:
        """Zero/invalid dates → NULL and counted (or ValueConversionError with strict dates).

        Text columns take a fast path: one Arrow cast of the whole column, then a numeric check for year 0
        (which Arrow parses but Python, hence pymysql, cannot hold). Only a column whose cast fails goes
        through the per-value path that finds every zero/invalid date.
        """
        target = self.schema.field(spec.name).type
        if texts:
            parse_to = pa.date32() if pa.types.is_date(target) else pa.timestamp("us")
            try:
                parsed = pc.cast(arr, parse_to)
                bad = pc.fill_null(pc.less(parsed.cast(pa.int64() if pa.types.is_timestamp(parse_to) else pa.int32()),
                                           _MIN_PY[parse_to.id == pa.date32().id]), False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                parsed = None
                bad = pa.array([_invalid_text(v) for v in arr.to_pylist()], type=pa.bool_())
        else:
            parsed = arr
            bad = pc.fill_null(pc.equal(arr, 0), False)
        n = pc.sum(bad).as_py() or 0
        if n:
            if self.strict_dates:
                j = bad.index(True).as_py()
                raise ValueConversionError(
                    f"column {spec.name!r}: zero or invalid date {_zero_text(arr[j].as_py())!r} at key {ctx.key_at(j)}",
                    hint="drop --strict-dates to export such dates as NULL (they are counted in the run report)",
                    table=ctx.table, key_range=(ctx.key_range.lo, ctx.key_range.hi),
                )
            self.stats.add_zero_dates(spec.name, int(n))
            if parsed is None or texts:
                arr = pc.if_else(bad, pa.scalar(None, arr.type), arr)
                parsed = pc.cast(arr, parse_to) if texts else arr
            else:
                parsed = pc.if_else(bad, pa.scalar(None, parsed.type), parsed)
        if parsed is None:  # Arrow refused a value Python accepts: report it with its key
            parsed = cast_array(arr, parse_to, spec.name, ctx)
        return parsed


# Smallest value Python's datetime can hold (0001-01-01), as µs since the epoch and as days (date32).
_MIN_PY = {False: pa.scalar(-62135596800 * 1_000_000, pa.int64()), True: pa.scalar(-719162, pa.int32())}


def _zero_text(v: Any) -> str:
    return "0000-00-00 00:00:00" if v == 0 else str(v)


def _invalid_text(v: Any) -> bool:
    """True when Python's datetime cannot hold the MySQL date text ``v`` (pymysql's rule)."""
    import datetime as dt

    if v is None:
        return False
    try:
        if len(v) <= 10:
            dt.date.fromisoformat(v)
        else:
            dt.datetime.fromisoformat(v)
    except ValueError:
        return True
    return False


class _LazyKeys:
    """Keys of an Arrow column, materialised only when an error message needs one."""

    def __init__(self, arr: pa.Array) -> None:
        self.arr = arr

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i: int) -> Any:
        return self.arr[i].as_py()


class ConnectorXSession:
    """Reads ranges with connectorx: a range that fits the memory budget whole is read in one call, with the
    next expected range fetched meanwhile; any other range is streamed in batches.

    Why whole ranges: connectorx's streaming iterator holds the GIL while it waits for and decodes the next
    batch, so the Parquet encoder thread (executor.pipeline) could hardly run while a range streamed;
    ``read_sql(..., return_type="arrow")`` releases it for the whole call. Reading the next range on a
    helper thread while this one is converted and encoded overlaps the two for real (results/speed.md).
    Each range is still one statement (one consistent read of it). A whole read asks for at most the rows
    that fit the budget plus one: a range that grew past that since planning (a burst) is streamed instead.
    """

    def __init__(self, reader: ConnectorXReader) -> None:
        self.reader = reader
        self._expected: list[KeyRange] = []
        self._ahead: tuple[int, Any] | None = None  # (range index, Future of its whole-range read)
        self._pool = None

    def expect(self, ranges) -> None:
        """The ranges this session will be asked for next, in order (a file group's): each may be fetched
        while the one before it is written."""
        self._expected = list(ranges)

    def close(self) -> None:
        """Drop a read-ahead nobody asked for (its statement finishes on the helper thread and is freed)."""
        self._drop_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def read_range(self, r: KeyRange) -> Iterator[pa.RecordBatch]:
        """Range ``r``'s rows ordered by key, converted to the plan's schema."""
        rd = self.reader
        query = rd.sql(r)
        if query is None:
            return
        if rd.width.guessed():
            rd.probe_widths(r)
        fetched, table = self._take_ahead(r)
        if not fetched and self._whole_rows(r):
            table = self._read_whole(r)
        self._fetch_next(r)
        if table is None:
            yield from self._stream(r, query)
            return
        for batch in table.to_batches(max_chunksize=rd.width.rows_for(rd.batch_bytes, rd.batch_rows)):
            yield from self._converted(batch, r)

    # -- whole ranges ------------------------------------------------------------------------------------------
    def _whole_rows(self, r: KeyRange, *, pair: bool = False) -> int:
        """Rows a whole read of ``r`` may hold (0: stream it). Bounded ranges only (the open tail and the
        NULL keys can grow without limit). Rows are counted at twice the widest value seen per column, as
        for batches (``RowWidth.estimate``); a range read alone may take :data:`WHOLE_RANGE_BATCHES` reader
        batches of bytes, one of a ``pair`` (read while the one before it is written) half of that."""
        rd = self.reader
        if r.nulls or r.hi is None:
            return 0
        share = WHOLE_RANGE_BATCHES / 2 if pair else WHOLE_RANGE_BATCHES
        limit = int(rd.batch_bytes * share) // rd.width.estimate()
        return limit if 0 < r.est_rows <= limit else 0

    def _read_whole(self, r: KeyRange, *, pair: bool = False) -> pa.Table | None:
        """The whole range in one call (GIL released), or None when it holds more rows than fit."""
        rd = self.reader
        limit = self._whole_rows(r, pair=pair)
        if not limit:
            return None
        table = cx_read_sql(rd, r, rd.sql(r) + f" LIMIT {int(limit) + 1}", return_type="arrow")
        rd.stats.add_query()
        if table.num_rows > limit:  # grew since planning: streamed instead, by a statement of its own
            return None
        return table

    def _fetch_next(self, r: KeyRange) -> None:
        """Start the whole read of the range expected after ``r`` on the helper thread."""
        try:
            nxt = self._expected[self._expected.index(r) + 1]
        except (ValueError, IndexError):
            return
        if (self._ahead is not None or not self._whole_rows(r, pair=True) or not self._whole_rows(nxt, pair=True)
                or self.reader.sql(nxt) is None):
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsesync-cx-ahead")
        self._ahead = (nxt.index, self._pool.submit(self._read_whole, nxt, pair=True))

    def _take_ahead(self, r: KeyRange) -> tuple[bool, pa.Table | None]:
        """(whether ``r`` was read ahead, its table or None when it did not fit)."""
        if self._ahead is None or self._ahead[0] != r.index:
            self._drop_ahead()
            return False, None
        fut = self._ahead[1]
        self._ahead = None
        return True, fut.result()  # a fault of the read ahead is this range's (same error classes, same retries)

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None

    # -- streamed ranges ---------------------------------------------------------------------------------------
    def _stream(self, r: KeyRange, query: str) -> Iterator[pa.RecordBatch]:
        rd = self.reader
        # Rows per batch follow the widest values seen so far.
        stream = cx_read_sql(rd, r, query, return_type="arrow_stream",
                             batch_size=rd.width.rows_for(rd.batch_bytes, rd.batch_rows))
        rd.stats.add_query()
        while True:
            try:
                batch = stream.read_next_batch()
            except StopIteration:
                break
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                raise _cx_error(exc, rd, r) from exc
            yield from self._converted(batch, r)

    def _converted(self, batch: pa.RecordBatch, r: KeyRange) -> Iterator[pa.RecordBatch]:
        rd = self.reader
        if batch.num_rows == 0:
            return
        for piece in _byte_slices(batch, MAX_BATCH_BYTES):  # each cast to 32-bit offsets must fit
            out = rd.convert(piece, r)
            rd.width.observe(out)
            rd.stats.add_batch(out)
            yield out


def _byte_slices(batch: pa.RecordBatch, limit: int) -> Iterator[pa.RecordBatch]:
    """``batch`` cut into row slices of at most about ``limit`` bytes each (one row may exceed it)."""
    n = batch.num_rows
    if batch.nbytes <= limit or n <= 1:
        yield batch
        return
    step = max(1, int(n * limit / batch.nbytes))
    for off in range(0, n, step):
        yield batch.slice(off, step)


# connectorx reports faults as text (often a Rust panic): a connection killed mid-stream shows up as
# "CodecError { IO error: `bytes remaining on stream' }" or "IoError { server disconnected }", a refused
# reconnect as "Connection refused".
_CX_TRANSIENT = ("lost connection", "gone away", "deadlock", "lock wait", "broken pipe", "connection reset",
                 "timed out", "2013", "2006", "1205", "1213", "io error", "bytes remaining on stream",
                 "unexpected eof", "connection refused", "connection closed", "too many connections", "ioerror",
                 "server disconnected")


def cx_read_sql(rd: ConnectorXReader, r: KeyRange, query: str, **kw):
    """``connectorx.read_sql(rd's URL, query, **kw)`` with its faults as range ``r``'s SourceError kinds."""
    import connectorx as cx

    try:
        return cx.read_sql(rd._conn_str(), query, **kw)
    except BaseException as exc:  # connectorx raises pyo3 PanicException (a BaseException) on bad values
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise _cx_error(exc, rd, r) from exc


def _cx_error(exc: BaseException, rd: ConnectorXReader, r: KeyRange) -> SparsesyncError:
    text = str(exc).split("\n", 1)[0]
    # connectorx errors can echo the connection string; never let a password through.
    pw = rd.engine.url.password
    if pw:
        text = text.replace(str(pw), "***")
    low = text.lower()
    transient = any(s in low for s in _CX_TRANSIENT)
    cls = TransientSourceError if transient else SourceError
    return cls(f"connectorx range query failed: {text[:300]}",
               hint="a retry may cure it" if transient else "try --reader pymysql",
               table=rd.plan.source.qualified_table, key_range=(r.lo, r.hi))


# ---- choosing a reader -----------------------------------------------------------------------------------------
def available_readers(engine: sa.Engine) -> list[str]:
    """The reader kinds usable for ``engine``'s dialect, preferred first."""
    if is_mysql(engine):
        return (["connectorx"] if connectorx_available() else []) + ["pymysql"]
    return ["sqlalchemy"]


def make_reader(engine: sa.Engine, plan: Plan, *, kind: str = "auto", batch_rows: int = 65536,
                strict_dates: bool = False, snapshot: bool = True, batch_bytes: int | None = None) -> Reader:
    """A reader of ``plan``'s ranges over ``engine``.

    ``kind="auto"`` picks connectorx for MySQL when importable, else pymysql; sqlalchemy for other
    dialects. ``snapshot`` asks for one consistent snapshot per session (serial runs).
    """
    if kind not in READER_KINDS:
        raise UsageError(f"unknown reader {kind!r}", hint=f"use one of {', '.join(READER_KINDS)}")
    if batch_rows < 1:
        raise UsageError(f"batch_rows must be at least 1, got {batch_rows}")
    avail = available_readers(engine)
    if kind == "auto":
        kind = avail[0]
    if kind not in avail:
        why = "connectorx is not installed" if kind == "connectorx" and is_mysql(engine) else \
            f"the {engine.dialect.name} source supports {', '.join(avail)}"
        raise UsageError(f"reader {kind!r} is not available: {why}", hint=f"use --reader {avail[0]}")
    cls = {"pymysql": PyMySQLReader, "connectorx": ConnectorXReader, "sqlalchemy": SQLAlchemyReader}[kind]
    return cls(engine, plan, batch_rows=batch_rows, strict_dates=strict_dates, snapshot=snapshot,
               batch_bytes=batch_bytes)
