"""Order-independent per-span checksums, computed where the data lives: in the source's SQL engine and,
as an exact twin, by DuckDB over the Parquet parts.

The check is independent of the export: the source side never goes through the export's reader, it
asks the server (as pt-table-checksum does) for, per key span (many spans in one grouped statement),
``COUNT(*)`` and ``SUM(h)`` modulo 2^64, where ``h`` is the first 64 bits of the MD5 of a canonical text of
the row. The Parquet side computes the same ``h`` from the Arrow values with DuckDB.

The canonical text is one field per column joined with ``|``; a NULL is ``N`` (no other field text can
be ``N``). Per Arrow type of the plan:

* integers, BIT, YEAR, DECIMAL, BIGINT UNSIGNED: decimal digits (DECIMAL with exactly its scale);
* bool (``--tinyint1-as-bool``): ``0``/``1`` — a source value 2 shows as ``2`` and differs;
* DATE: ``YYYY-MM-DD``; DATETIME: ``YYYY-MM-DD HH:MM:SS.ffffff``; TIMESTAMP: UNIX microseconds (no time
  zone involved); zero/invalid dates are NULL, as the export writes them; TIME: signed microseconds;
* text, ENUM, SET, JSON, wide DECIMAL as text: ``<UTF-8 byte length>:<text>`` (the length prefix keeps
  ``|`` inside a value from shifting fields);
* binary: upper-case hex;
* DOUBLE: MySQL's own ``CAST(x AS CHAR)`` (shortest round-trip digits, ``1e20``, ``0.00001``); DuckDB's
  side renders the same text with :func:`mysql_double_text` (a Python UDF), as DuckDB's own layout differs;
* FLOAT: the stored single-precision value widened to DOUBLE (``col + 0e0``, exact) and printed as a DOUBLE
  (MariaDB's ``CAST(float AS CHAR)`` has 6 significant digits, fewer than the value the export holds); DuckDB
  casts the Parquet float to DOUBLE and renders it the same way.

The checksum string is the sum modulo 2^64 as 16 hex digits; checksums of disjoint pieces of one span
combine with :meth:`SpanChecksum.merge` (their sum). A sum, not a xor: under a non-unique key two identical
rows are two equal hashes, which a xor cancels (an update of both copies, or one duplicated pair deleted and
another inserted, left the xor and the count unchanged); in a sum each copy counts. Only the sum, no second
aggregate: building the row text is most of the cost (``benchmarks/results/checksum.md``), and a second
aggregate over ``h`` makes the server build it twice. The server's ``SUM`` of 64-bit unsigned values is an
exact DECIMAL (DuckDB's a HUGEINT); the modulo is taken here.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import pyarrow as pa

from sparsesync.errors import SourceError, UsageError
from sparsesync.lazy import lazy_module
from sparsesync.direct import is_direct
from sparsesync.source import is_mysql, quoted_table, short_db_error, text_name, text_table

sa = lazy_module("sqlalchemy")  # the after-run counts over a direct source (sparsesync.direct) do without it
if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["Span", "SpanChecksum", "span_checksums", "span_counts_dbapi", "parquet_span_checksums", "spans_of_plan",
           "grouped_statements", "EMPTY_CHECKSUM", "MAX_SPANS_PER_STATEMENT"]

_MASK = 2**64 - 1
EMPTY_CHECKSUM = "0" * 16
NULL_MARK = "N"


@dataclass(frozen=True)
class Span:
    """Half-open key span ``[lo, hi)``; ``hi is None`` is open above. ``nulls`` is the span of the rows
    whose key is NULL (``lo``/``hi`` are then ignored)."""

    lo: int | None = None
    hi: int | None = None
    nulls: bool = False

    @classmethod
    def null_keys(cls) -> "Span":
        return cls(None, None, True)

    @classmethod
    def of_range(cls, r) -> "Span":
        """The span of a plan's :class:`~sparsesync.planner.plan.KeyRange` (its NULL-key range included)."""
        return cls(None, None, True) if getattr(r, "nulls", False) else cls(r.lo, r.hi)

    def describe(self) -> str:
        if self.nulls:
            return "key IS NULL"
        return f"[{'-∞' if self.lo is None else self.lo}, {'∞' if self.hi is None else self.hi})"


@dataclass(frozen=True)
class SpanChecksum:
    """What one span holds: ``rows`` and, unless counts only were asked for, a 16-hex-digit ``checksum``."""

    span: Span
    rows: int
    checksum: str | None = None

    def merge(self, other: "SpanChecksum") -> "SpanChecksum":
        """The checksum of the union of two disjoint row sets of the same span."""
        if self.checksum is None or other.checksum is None:
            return SpanChecksum(self.span, self.rows + other.rows, None)
        x = int(self.checksum, 16) + int(other.checksum, 16)
        return SpanChecksum(self.span, self.rows + other.rows, _fmt(x))


def _fmt(total: int) -> str:
    """The checksum text: a sum of row hashes modulo 2^64 as 16 hex digits."""
    return f"{int(total) & _MASK:016x}"


def spans_of_plan(plan, *, unplanned: bool = False) -> list[Span]:
    """One span per planned range, in range order. With ``unplanned``, plus the NULL-key span when the key
    column is nullable but the plan has no range for it (plans made before format 1.1)."""
    spans = [Span.of_range(r) for r in plan.ranges]
    if unplanned and plan.null_range is None and any(c.name == plan.source.key and c.nullable for c in plan.columns):
        spans.append(Span.null_keys())
    return spans


# ---- what is hashed --------------------------------------------------------------------------------------
def _kind(spec) -> str:
    """The canonical-text family of a column, from the plan's Arrow type (and MySQL declared type)."""
    t = spec.arrow_type
    src = (spec.source_type or "").lower()
    if t == "bool":
        return "bool"
    if t == "double":
        return "double"
    if t == "float":
        return "float"
    if t.startswith(("int", "uint")):
        if spec.conversion == "time_us":
            return "time_us"
        if spec.conversion == "bit_int":
            return "bit"
        if src.startswith("year"):
            return "year"
        return "int"
    if t.startswith("decimal"):
        return "bit" if spec.conversion == "bit_int" else "decimal"
    if t.startswith("date32"):
        return "date"
    if t.startswith("timestamp"):
        return "timestamp_tz" if "tz=" in t else "datetime"
    if t in ("binary", "large_binary"):
        return "binary"
    return "string"


def _columns(info, columns: Sequence[str] | None):
    specs = list(info.columns)
    if columns is None:
        return specs
    by_name = {c.name: c for c in specs}
    missing = [c for c in columns if c not in by_name]
    if missing:
        raise UsageError(f"unknown column(s) for a checksum: {', '.join(missing)}")
    return [by_name[c] for c in columns]


def _identity(info) -> tuple[str, str | None, str, bool]:
    src = getattr(info, "source", None)
    if src is not None:  # a Plan
        return src.table, src.schema, src.key, src.key_signed
    return info.table, info.schema, info.key, info.key_signed  # a TableInfo


# ---- source side ------------------------------------------------------------------------------------------
def span_checksums(
    engine: Engine | sa.Connection,
    plan_or_table_info,
    spans: Iterable[Span],
    *,
    columns: Sequence[str] | None = None,
    counts_only: bool = False,
) -> list[SpanChecksum]:
    """Per span, ``COUNT(*)`` and the row checksum computed by the source's SQL engine (MySQL/MariaDB, or
    SQLite with functions registered on the connection), in the order of ``spans``.

    One grouped statement measures up to :data:`MAX_SPANS_PER_STATEMENT` spans in one pass over their rows
    (:func:`grouped_statements`; keys bound): an image of a hundred spans costs one statement, not a hundred.

    ``columns`` limits the hashed columns (e.g. the key only); ``counts_only`` skips hashing.
    ``plan_or_table_info`` is a :class:`~sparsesync.planner.plan.Plan` or a :class:`~sparsesync.planner.introspect.TableInfo`.
    """
    spans = list(spans)
    if counts_only and is_direct(engine):  # execute's own MySQL source: PyMySQL, no SQLAlchemy
        return span_counts_direct(engine, plan_or_table_info, spans)
    table, schema, key, signed = _identity(plan_or_table_info)
    specs = [] if counts_only else _columns(plan_or_table_info, columns)
    if isinstance(engine, sa.Connection):
        return _source_checksums(engine, table, schema, key, signed, specs, spans, counts_only)
    with engine.connect() as conn:
        return _source_checksums(conn, table, schema, key, signed, specs, spans, counts_only)


def _source_checksums(conn, table, schema, key, signed, specs, spans, counts_only) -> list[SpanChecksum]:
    dialect = conn.dialect
    def quote(name: str) -> str:
        return text_name(dialect, name)

    qtable = text_table(dialect, table, schema)
    qkey = quote(key)
    top = 2**63 - 1 if signed else 2**64 - 1
    if counts_only and is_mysql(dialect):
        def run(sql, params):
            return conn.execute(sa.text(sql), params).all()

        return _in_order(spans, top, _mysql_counts(run, qtable, qkey, spans, top, table), counts_only)
    if counts_only:
        agg = "COUNT(*)"
    elif is_mysql(dialect):
        row = "CONCAT_WS('|', " + ", ".join(_mysql_field(c, quote(c.name)) for c in specs) + ")"
        h = f"CAST(CONV(SUBSTRING(MD5({row}), 1, 16), 16, 10) AS UNSIGNED)"
        agg = f"COUNT(*), SUM({h})"  # an exact DECIMAL: the modulo 2^64 is taken in _fmt
    elif dialect.name == "sqlite":
        _register_sqlite(conn, specs)
        args = ", ".join(quote(c.name) for c in specs)
        agg = f"COUNT(*), sparsesync_sum64(sparsesync_row_hash({args}))"
    else:
        raise UsageError(f"checksums are computed on MySQL/MariaDB and SQLite, not {dialect.name}",
                         hint="verify without --all-columns, or export from MySQL/MariaDB")
    found: dict[Span, tuple[int, int]] = {}
    for stmt in grouped_statements(qkey, spans, top):
        sql = f"SELECT {stmt.bucket}, {agg} FROM {qtable} WHERE {stmt.where} GROUP BY 1"
        try:
            rows = conn.execute(sa.text(sql), stmt.params).all()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"checksum query failed: {short_db_error(exc)}", table=table,
                              key_range=stmt.key_range) from exc
        for res in rows:
            found[stmt.spans[int(res[0])]] = (int(res[1]), 0 if counts_only else int(res[2] or 0))
    return _in_order(spans, top, found, counts_only)


def _mysql_counts(run, qtable: str, qkey: str, spans, top: int, table: str, mark=lambda name: f":{name}") -> dict:
    """``COUNT(*)`` of each distinct span, up to :data:`MAX_SPANS_PER_STATEMENT` per statement, as a
    ``UNION ALL`` of one plain count per span. Counting needs no per-row bucket: each part is an index
    range scan, where the grouped CASE statement evaluated a binary search and a GROUP BY for every row
    (on the issue-11 table, 1M rows in 12 ranges: 0.44–0.57 s against 0.62–0.77 s on one connection).
    ``run(sql, params)`` executes one statement whose binds are written by ``mark`` (``:k0`` for
    ``sa.text``, ``%(k0)s`` for a PyMySQL cursor)."""
    distinct = list(dict.fromkeys(c for c in (_clamped(sp, top) for sp in spans) if c is not None))
    found: dict[Span, tuple[int, int]] = {}
    for at in range(0, len(distinct), MAX_SPANS_PER_STATEMENT):
        chunk = distinct[at:at + MAX_SPANS_PER_STATEMENT]
        params: dict[str, int] = {}
        bind = _binder(params, mark)
        parts = [f"SELECT {i}, COUNT(*) FROM {qtable} WHERE {_span_cond(qkey, sp, bind)}" for i, sp in enumerate(chunk)]
        try:
            rows = run(" UNION ALL ".join(parts), params)
        except Exception as exc:  # noqa: BLE001 - a driver or SQLAlchemy error, mapped with its ranges
            keyed = [s for s in chunk if not s.nulls]
            raise SourceError(f"count query failed: {short_db_error(exc)}", table=table,
                              key_range=(keyed[0].lo, keyed[-1].hi) if keyed else None) from exc
        for i, n in rows:
            found[chunk[int(i)]] = (int(n), 0)
    return found


def _binder(params: dict[str, int], mark):
    """``bind(value)``: adds ``value`` to ``params`` under a new name and returns its placeholder."""
    def bind(value: int) -> str:
        name = f"k{len(params)}"
        params[name] = int(value)
        return mark(name)

    return bind


def _span_cond(qkey: str, sp: Span, bind) -> str:
    """The WHERE condition of one span, keys bound through ``bind``."""
    if sp.nulls:
        return f"{qkey} IS NULL"
    conds = ([f"{qkey} >= {bind(sp.lo)}"] if sp.lo is not None else []) + \
            ([f"{qkey} < {bind(sp.hi)}"] if sp.hi is not None else [])
    return " AND ".join(conds) or f"{qkey} IS NOT NULL"


# ---- one grouped statement for many spans ----------------------------------------------------------------
MAX_SPANS_PER_STATEMENT = 500  # bounds one statement's text (~60 bytes and 2-3 bound keys per span)


@dataclass(frozen=True)
class GroupedStatement:
    """The parts of one ``SELECT <bucket>, <aggregates> FROM t WHERE <where> GROUP BY 1`` over many spans.

    ``bucket`` maps a row's key to the index of its span in ``spans`` (an ordered binary search of nested
    ``CASE WHEN key < :bN``, so each row costs ~log2(spans) integer comparisons); ``where`` selects exactly
    the rows of those spans as key ranges the server's range optimizer turns into index ranges."""

    bucket: str
    where: str
    params: dict[str, int]
    spans: tuple[Span, ...]

    @property
    def key_range(self):
        keyed = [s for s in self.spans if not s.nulls]
        return (keyed[0].lo, keyed[-1].hi) if keyed else None


def _clamped(sp: Span, top: int) -> Span | None:
    """``sp`` with a bound above the key type's maximum dropped; ``None`` when no key can be in it."""
    if sp.nulls:
        return Span.null_keys()
    if sp.lo is not None and sp.lo > top:
        return None
    if sp.hi is not None and sp.hi > top:
        return Span(sp.lo, None)
    if sp.lo is not None and sp.hi is not None and sp.hi <= sp.lo:
        return None
    return sp


def grouped_statements(qkey: str, spans: Iterable[Span], top: int, mark=lambda name: f":{name}",
                       max_spans: int | None = None) -> list[GroupedStatement]:
    """Statements that together measure every distinct span of ``spans`` (clamped to the key type's
    maximum ``top``; spans that cannot hold a key need no statement): one statement for up to
    ``max_spans`` disjoint spans. Overlapping spans (never made by the tool, but allowed) go to separate
    statements, so each row counts in exactly one span per statement."""
    max_spans = max_spans or MAX_SPANS_PER_STATEMENT
    distinct = sorted({c for c in (_clamped(sp, top) for sp in spans) if c is not None},
                      key=lambda s: (not s.nulls, -(2**65) if s.lo is None else s.lo))
    nulls = [s for s in distinct if s.nulls]
    passes: list[list[Span]] = []  # each: sorted, disjoint key spans
    for sp in (s for s in distinct if not s.nulls):
        for p in passes:
            last = p[-1]
            if last.hi is not None and sp.lo is not None and last.hi <= sp.lo:
                p.append(sp)
                break
        else:
            passes.append([sp])
    chunks = [p[i:i + max_spans] for p in passes for i in range(0, len(p), max_spans)]
    if nulls:
        if chunks and len(chunks[0]) < max_spans:
            chunks[0] = nulls + chunks[0]
        else:
            chunks.insert(0, nulls)
    return [_grouped(qkey, c, mark) for c in chunks]


def _grouped(qkey: str, chunk: list[Span], mark) -> GroupedStatement:
    params: dict[str, int] = {}
    bind = _binder(params, mark)

    keyed = [(i, s) for i, s in enumerate(chunk) if not s.nulls]
    null_idx = next((i for i, s in enumerate(chunk) if s.nulls), None)
    # WHERE: adjacent spans merged into one key range each (one index range per run of spans).
    runs: list[list[int | None]] = []
    for _, s in keyed:
        if runs and runs[-1][1] is not None and runs[-1][1] == s.lo:
            runs[-1][1] = s.hi
        else:
            runs.append([s.lo, s.hi])
    conds = [_span_cond(qkey, Span(lo, hi), bind) for lo, hi in runs]
    if null_idx is not None:
        conds.append(f"{qkey} IS NULL")
    where = " OR ".join(f"({c})" for c in conds) if len(conds) > 1 else conds[0]

    # Bucket: the last span whose lo <= key. Rows outside every span are excluded by WHERE, and the spans
    # are disjoint, so that span is the row's span.
    def search(a: int, b: int) -> str:
        if b - a == 1:
            return str(keyed[a][0])
        mid = (a + b) // 2
        return f"CASE WHEN {qkey} < {bind(keyed[mid][1].lo)} THEN {search(a, mid)} ELSE {search(mid, b)} END"

    if keyed:
        bucket = search(0, len(keyed))
        if null_idx is not None:
            bucket = f"CASE WHEN {qkey} IS NULL THEN {null_idx} ELSE {bucket} END"
    else:
        bucket = str(null_idx)
    return GroupedStatement(bucket, where, params, tuple(chunk))


def _in_order(spans, top, found: dict, counts_only: bool) -> list[SpanChecksum]:
    """One :class:`SpanChecksum` per requested span (in the caller's order) from the grouped results."""
    out = []
    for sp in spans:
        c = _clamped(sp, top)
        n, x = found.get(c, (0, 0)) if c is not None else (0, 0)
        out.append(SpanChecksum(sp, n, None if counts_only else _fmt(x)))
    return out


def span_counts_dbapi(cursor, dialect, plan_or_table_info, spans: Iterable[Span]) -> list[SpanChecksum]:
    """``COUNT(*)`` per span over a raw DBAPI cursor of a ``pyformat`` driver (pymysql: inside a reader's
    snapshot, or on a :class:`sparsesync.direct.DirectSource`), as the after-run counts take them
    (:func:`_mysql_counts`). The dialect's quoting doubles ``%`` in identifiers for such drivers; the
    driver's own ``%`` formatting (always applied: parameters are always passed) undoes it."""
    spans = list(spans)
    table, schema, key, signed = _identity(plan_or_table_info)
    qtable = quoted_table(dialect, table, schema)
    qkey = dialect.identifier_preparer.quote(key)
    top = 2**63 - 1 if signed else 2**64 - 1
    if dialect.paramstyle != "pyformat":
        raise UsageError(f"span_counts_dbapi needs a pyformat driver, not {dialect.driver}")

    def run(sql, params):
        cursor.execute(sql, params)
        return cursor.fetchall()

    return _in_order(spans, top, _mysql_counts(run, qtable, qkey, spans, top, table, mark=lambda n: f"%({n})s"), True)


def span_counts_direct(src, plan_or_table_info, spans: Iterable[Span]) -> list[SpanChecksum]:
    """:func:`span_counts_dbapi` on a connection of a :class:`sparsesync.direct.DirectSource` (autocommit:
    counted as the table is now)."""
    with src.connection() as conn, conn.cursor() as cur:
        return span_counts_dbapi(cur, src.dialect, plan_or_table_info, spans)


def mysql_double_text(x: float) -> str:
    """``CAST(x AS CHAR)`` of a MySQL/MariaDB DOUBLE, computed in Python (DuckDB and SQLite side).

    Both print the shortest digits that round-trip (as ``repr`` does); MySQL's ``my_gcvt`` lays them out
    fixed for decimal exponents −14…15 (0.<digits> × 10^exponent, and 16 with 17 digits), otherwise as
    ``d.ddde±x`` without ``+`` or leading zeros. Checked value by value against MariaDB in the tests.
    """
    if x == 0:
        return "0"
    m, _, e = repr(abs(x)).partition("e")
    ip, _, fp = m.partition(".")
    digits = ip + fp
    lead = digits.lstrip("0")
    sig = lead.rstrip("0")
    decpt = len(ip) + int(e or 0) - (len(digits) - len(lead))
    n = len(sig)
    sign = "-" if x < 0 else ""
    if -14 <= decpt <= 15 or (decpt == 16 and n >= 17):
        if decpt <= 0:
            return f"{sign}0.{'0' * -decpt}{sig}"
        if decpt < n:
            return f"{sign}{sig[:decpt]}.{sig[decpt:]}"
        return f"{sign}{sig}{'0' * (decpt - n)}"
    return f"{sign}{sig[0]}{'.' + sig[1:] if n > 1 else ''}e{decpt - 1}"


def _duckdb_mysql_double(values: pa.Array) -> pa.Array:
    """Vectorised :func:`mysql_double_text` for DuckDB (an Arrow UDF)."""
    return pa.array([None if v is None else mysql_double_text(v) for v in values.to_pylist()], pa.string())


def _mysql_field(spec, q: str) -> str:
    """The canonical text of one column in MySQL/MariaDB SQL (NULL → ``N``), as a binary string."""
    kind = _kind(spec)
    # Numbers cast straight to BINARY (the same ASCII digits as CAST AS CHAR, one conversion less).
    if kind in ("int", "decimal", "bool"):
        return f"COALESCE(CAST({q} AS BINARY), '{NULL_MARK}')"
    if kind == "year":
        return f"COALESCE(CAST({q} + 0 AS BINARY), '{NULL_MARK}')"
    if kind == "bit":
        return f"COALESCE(CAST(CAST({q} AS UNSIGNED) AS BINARY), '{NULL_MARK}')"
    if kind == "float":
        text = f"CAST({q} + 0e0 AS CHAR)"  # exact widening; the FLOAT's own text has only 6 digits
    elif kind == "double":
        text = f"CAST({q} AS CHAR)"
    elif kind == "time_us":
        text = (f"CAST(IF({q} < 0, -1, 1) * ((HOUR({q}) * 3600 + MINUTE({q}) * 60 + SECOND({q})) * 1000000 "
                f"+ MICROSECOND({q})) AS CHAR)")
    elif kind in ("date", "datetime"):
        fmt = "%Y-%m-%d" if kind == "date" else "%Y-%m-%d %H:%i:%s.%f"
        # Zero and invalid dates (month/day 0, year 0) are exported as NULL.
        text = f"IF(YEAR({q}) = 0 OR MONTH({q}) = 0 OR DAYOFMONTH({q}) = 0, NULL, DATE_FORMAT({q}, '{fmt}'))"
    elif kind == "timestamp_tz":
        # UNIX_TIMESTAMP of a TIMESTAMP column is its stored UTC instant (no session time zone); 0 is the zero date.
        text = f"CAST(NULLIF(ROUND(UNIX_TIMESTAMP({q}) * 1000000), 0) AS CHAR)"
    elif kind == "binary":
        text = f"HEX({q})"
    else:
        u = f"CONVERT({q} USING utf8mb4)"
        text = f"CONCAT(LENGTH({u}), ':', {u})"
    # Binary: every field is compared as bytes (no collation mixing); UTF-8 text stays UTF-8 bytes.
    return f"COALESCE(CAST({text} AS BINARY), '{NULL_MARK}')"


def _py_field(kind: str, v: Any, spec) -> str:
    """The canonical text of one value in Python (for SQLite, whose values are loosely typed)."""
    if v is None:
        return NULL_MARK
    if kind == "bool":
        return "1" if v else "0"
    if kind in ("int", "year", "bit"):
        return str(int(v))
    if kind == "decimal":
        scale = spec_scale(spec)
        return f"{Decimal(str(v)).quantize(Decimal(1).scaleb(-scale)):f}" if scale else str(int(Decimal(str(v))))
    if kind == "float":  # the export writes float32: the value as it holds it
        return mysql_double_text(struct.unpack("<f", struct.pack("<f", float(v)))[0])
    if kind == "double":
        return mysql_double_text(float(v))
    if kind == "time_us":
        return str(int(v))
    if kind in ("date", "datetime", "timestamp_tz"):
        d = _py_datetime(v)
        if kind == "date":
            return d.strftime("%Y-%m-%d")
        if kind == "datetime":
            return d.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        delta = d - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return str((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)
    if kind == "binary":
        return bytes(v).hex().upper()
    text = v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)
    return f"{len(text.encode('utf-8'))}:{text}"


def spec_scale(spec) -> int:
    t = spec.arrow_type
    return int(t.rsplit(",", 1)[1].strip(" )")) if "," in t else 0


def _py_datetime(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day)
    return datetime.fromisoformat(str(v).strip())


def row_hash(text: str) -> int:
    """The 64-bit row hash: the first 16 hex digits of the MD5 of the canonical row text."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:16], 16)


class _SqliteSum64:
    """SUM of 64-bit row hashes modulo 2^64 (SQLite's own SUM overflows; its integers are signed)."""

    def __init__(self) -> None:
        self.v = 0

    def step(self, h) -> None:
        if h is not None:
            self.v = (self.v + (int(h) & _MASK)) & _MASK

    def finalize(self) -> str:
        return str(self.v)


def _register_sqlite(conn: sa.Connection, specs) -> None:
    """Register the row hash and its aggregates on this SQLite connection (Python, exact integers)."""
    kinds = [(_kind(c), c) for c in specs]

    def row(*values):
        text = "|".join(_py_field(k, v, c) for (k, c), v in zip(kinds, values))
        h = row_hash(text)
        return h - 2**64 if h >= 2**63 else h  # SQLite integers are signed 64-bit

    raw = conn.connection.driver_connection
    raw.create_function("sparsesync_row_hash", len(specs), row, deterministic=True)
    raw.create_aggregate("sparsesync_sum64", 1, _SqliteSum64)


# ---- Parquet side (DuckDB) --------------------------------------------------------------------------------
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duckdb_field(spec) -> str:
    """The canonical text of one column as DuckDB computes it from the Parquet values (NULL → ``N``)."""
    q = _q(spec.name)
    kind = _kind(spec)
    if kind in ("int", "year", "bit", "decimal", "time_us"):
        text = f"CAST({q} AS VARCHAR)"
        if kind == "decimal" and spec_scale(spec) and spec.pa_type.precision == spec_scale(spec):
            text = f"regexp_replace({text}, '^(-?)[.]', '\\10.')"  # DuckDB prints DECIMAL(18,18) as .5
    elif kind == "bool":
        text = f"CAST(CAST({q} AS TINYINT) AS VARCHAR)"
    elif kind == "float":
        text = f"sparsesync_mysql_double(CAST({q} AS DOUBLE))"
    elif kind == "double":
        text = f"sparsesync_mysql_double({q})"
    elif kind == "date":
        text = f"strftime({q}, '%Y-%m-%d')"
    elif kind == "datetime":
        text = f"strftime({q}, '%Y-%m-%d %H:%M:%S.%f')"
    elif kind == "timestamp_tz":
        text = f"CAST(epoch_us({q}) AS VARCHAR)"
    elif kind == "binary":
        text = f"hex({q})"
    else:
        text = f"CAST(strlen({q}) AS VARCHAR) || ':' || {q}"
    return f"COALESCE({text}, '{NULL_MARK}')"


def duckdb_row_hash(specs) -> str:
    """DuckDB expression of the 64-bit row hash (UBIGINT) over ``specs``."""
    row = "concat_ws('|', " + ", ".join(duckdb_field(c) for c in specs) + ")"
    return f"CAST('0x' || substr(md5({row}), 1, 16) AS UBIGINT)"


def parquet_span_checksums(
    con,
    relation_sql: str,
    plan_or_table_info,
    spans: Sequence[Span],
    *,
    columns: Sequence[str] | None = None,
    counts_only: bool = False,
) -> tuple[list[SpanChecksum], int]:
    """The twin of :func:`span_checksums` over a DuckDB relation (e.g. ``read_parquet('part.parquet')``).

    DuckDB scans the relation by row groups and keeps only one aggregate per span. Returns the
    checksums in the order of ``spans`` and the number of rows that fell in no span.
    """
    _, _, key, _ = _identity(plan_or_table_info)
    specs = [] if counts_only else _columns(plan_or_table_info, columns)
    bounded = [(i, sp) for i, sp in enumerate(spans) if not sp.nulls]
    nulls = [i for i, sp in enumerate(spans) if sp.nulls]
    con.execute("CREATE OR REPLACE TEMP TABLE sparsesync_spans (idx INTEGER, lo HUGEINT, hi HUGEINT)")
    if bounded:
        lo_min, hi_max = -(2**126), 2**126  # stand for ±∞ inside HUGEINT
        con.executemany(
            "INSERT INTO sparsesync_spans VALUES (?, CAST(? AS HUGEINT), CAST(? AS HUGEINT))",
            [(i, str(lo_min if sp.lo is None else sp.lo), str(hi_max if sp.hi is None else sp.hi)) for i, sp in bounded],
        )
    h = "0" if counts_only else duckdb_row_hash(specs)
    if any(_kind(c) in ("double", "float") for c in specs):
        _register_duckdb(con)
    k = f"CAST({_q(key)} AS HUGEINT)"
    null_idx = nulls[0] if nulls else -1
    # A row whose key is in no span gets idx -1 (stray) — or the NULL span's index when its key is NULL.
    sql = (
        f"WITH o AS (SELECT {k} AS k, {h} AS h FROM {relation_sql}) "
        f"SELECT COALESCE(s.idx, CASE WHEN o.k IS NULL THEN {null_idx} ELSE -1 END) AS idx, count(*), "
        "CAST(COALESCE(sum(o.h), 0) AS VARCHAR) "  # HUGEINT: exact; the modulo 2^64 is taken in _fmt
        "FROM o LEFT JOIN sparsesync_spans s ON o.k >= s.lo AND o.k < s.hi GROUP BY 1"
    )
    got = {int(i): (int(n), int(x)) for i, n, x in con.execute(sql).fetchall()}
    stray = got.pop(-1, (0, 0))[0]
    out = []
    for i, sp in enumerate(spans):
        n, x = got.get(i, (0, 0))
        out.append(SpanChecksum(sp, n, None if counts_only else _fmt(x)))
    return out, stray


def _register_duckdb(con) -> None:
    """Register the DOUBLE renderer once per DuckDB connection (verify reuses one connection for every part)."""
    known = con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'sparsesync_mysql_double'")
    if known.fetchall()[0][0]:
        return
    con.create_function("sparsesync_mysql_double", _duckdb_mysql_double, ["DOUBLE"], "VARCHAR", type="arrow",
                        null_handling="special", side_effects=False)


def arrow_span_checksums(table: pa.Table, plan_or_table_info, spans, **kw) -> tuple[list[SpanChecksum], int]:
    """:func:`parquet_span_checksums` over an in-memory Arrow table (tests, small data)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("sparsesync_arrow", table)
        return parquet_span_checksums(con, "sparsesync_arrow", plan_or_table_info, spans, **kw)
    finally:
        con.close()
