"""Turning source values into Arrow columns of the plan's schema, shared by every reader.

The plan's declared types decide the Arrow type (``Plan.arrow_schema()``); this module only makes the
values fit, column-wise and in bulk where Arrow can do the work, per value only for the few columns that
need it (the ``conversion`` tags of :mod:`sparsesync.planner.typemap`). A value that does not fit raises
:class:`ValueConversionError` naming the table, the column, the key of the offending row and the range.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Sequence

import pyarrow as pa
from sparsesync.lazy import lazy_module

from sparsesync.planner.plan import ColumnSpec, KeyRange, Plan
from sparsesync.errors import ValueConversionError

pc = lazy_module("pyarrow.compute")  # imported on first use: an empty table never needs it

# Errors Arrow raises when a Python value or a cast does not fit the target type.
ARROW_FIT_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError,
                    OverflowError)


@dataclass
class ReadStats:
    """Counters of one reader (all its sessions): rows, queries, zero dates per column, approx bytes."""

    rows: int = 0
    queries: int = 0
    zero_dates: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    batches: int = 0
    # Span statements (--consistency snapshot with connectorx): what their queues sent through local disk,
    # and the most one held in memory against its bound (0 when no span statement ran).
    spilled_bytes: int = 0
    spilled_batches: int = 0
    queue_peak_bytes: int = 0
    queue_limit_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Count a batch handed to the caller."""
        with self._lock:
            self.rows += batch.num_rows
            self.bytes_read += batch.nbytes
            self.batches += 1

    def add_spill(self, nbytes: int, batches: int, peak: int, limit: int) -> None:
        """Count one span statement's spill, and its queue's peak against its bound."""
        with self._lock:
            self.spilled_bytes += nbytes
            self.spilled_batches += batches
            self.queue_peak_bytes = max(self.queue_peak_bytes, peak)
            self.queue_limit_bytes = max(self.queue_limit_bytes, limit)

    def add_query(self, n: int = 1) -> None:
        """Count a statement sent to the source."""
        with self._lock:
            self.queries += n

    def add_zero_dates(self, column: str, n: int) -> None:
        """Count zero/invalid dates read as NULL in ``column`` (and in this thread's :meth:`begin_tally` dict)."""
        if n:
            with self._lock:
                self.zero_dates[column] = self.zero_dates.get(column, 0) + n
            mine = getattr(_THREAD_TALLY, "zero_dates", None)
            if mine is not None:
                mine[column] = mine.get(column, 0) + n

    def begin_tally(self) -> dict[str, int]:
        """Start counting this thread's zero dates apart (one file group's share); returns the live dict."""
        _THREAD_TALLY.zero_dates = mine = {}
        return mine

    def end_tally(self) -> None:
        """Stop the tally begun by :meth:`begin_tally` in this thread."""
        _THREAD_TALLY.zero_dates = None


# A file group is read by one thread (generators convert in the consuming thread), so a thread-local
# tally gives each group its own zero-date counts even when several groups are read in parallel.
_THREAD_TALLY = threading.local()


@dataclass(frozen=True)
class Context:
    """Where a batch comes from, for error messages: table, range, and the keys of its rows."""

    table: str
    key_range: KeyRange
    keys: Sequence[Any] | None = None

    def key_at(self, i: int) -> Any:
        """The key of row ``i`` of the batch, or ``row #i`` when the key column is not selected."""
        if self.keys is None or i >= len(self.keys):
            return f"row #{i}"
        return self.keys[i]

    def error(self, column: str, i: int, value: Any, target: pa.DataType, why: str = "") -> ValueConversionError:
        """A ValueConversionError naming table, column, key and range."""
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        text = f"column {column!r}: value {shown} at key {self.key_at(i)} does not fit {target}"
        if why:
            text += f" ({why})"
        return ValueConversionError(
            text,
            hint="fix the row at the source, or change the column's declared type and re-plan",
            table=self.table,
            key_range=(self.key_range.lo, self.key_range.hi),
        )


# ---- per value helpers ------------------------------------------------------------------------------------
def is_zero_date(value: Any) -> bool:
    """pymysql hands back the original text of dates Python cannot hold (0000-00-00, month/day 00, …)."""
    return isinstance(value, (str, bytes))


def bit_to_int(value: Any) -> Any:
    """BIT(n) arrives as big-endian bytes; Arrow wants the integer."""
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, "big")
    return value


def timedelta_us(value: Any) -> Any:
    """MySQL TIME (±838:59:59.999999) → signed microseconds; Redshift cannot load TIME from Parquet."""
    if isinstance(value, dt.timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return value


def _locate(values: Sequence[Any], target: pa.DataType) -> tuple[int, Any, str] | None:
    """Find the first value Arrow refuses for ``target`` (only run after a bulk conversion failed)."""
    for i, v in enumerate(values):
        try:
            pa.array([v], type=target)
        except ARROW_FIT_ERRORS as exc:
            return i, v, str(exc).split("\n", 1)[0][:120]
    return None


def values_to_array(values: Sequence[Any], target: pa.DataType, column: str, ctx: Context) -> pa.Array:
    """``pa.array(values, type=target)`` in bulk; on failure name the first value that does not fit."""
    try:
        return pa.array(values, type=target)
    except ARROW_FIT_ERRORS as exc:
        found = _locate(values, target)
        if found is None:  # only the batch as a whole failed: report the whole column
            raise ctx.error(column, 0, "<batch>", target, str(exc).split("\n", 1)[0][:120]) from exc
        i, v, why = found
        raise ctx.error(column, i, v, target, why) from exc


def cast_array(arr: pa.Array, target: pa.DataType, column: str, ctx: Context) -> pa.Array:
    """Arrow cast (safe: no truncation/overflow); on failure name the first value that does not fit."""
    if arr.type == target:
        return arr
    try:
        return pc.cast(arr, target, safe=True)
    except ARROW_FIT_ERRORS as exc:
        for i in range(len(arr)):
            try:
                pc.cast(arr.slice(i, 1), target, safe=True)
            except ARROW_FIT_ERRORS as exc1:
                raise ctx.error(column, i, arr[i].as_py(), target, str(exc1).split("\n", 1)[0][:120]) from exc
        raise ctx.error(column, 0, "<batch>", target, str(exc).split("\n", 1)[0][:120]) from exc


def decimal_scale(source_type: str) -> int | None:
    """The scale of a declared ``DECIMAL(p,s)`` (0 for ``DECIMAL(p)``), None when not a decimal declaration."""
    import re

    m = re.match(r"^\s*(?:decimal|numeric|dec|fixed)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?", source_type, re.I)
    if m is None:
        return None
    return int(m.group(2) or 0)


def decimal_text(v: Any, scale: int | None) -> str:
    """A DECIMAL value as MySQL prints it: plain digits, exactly ``scale`` places (``0.000…001``, not ``1E-30``)."""
    import decimal

    if not isinstance(v, decimal.Decimal):
        v = decimal.Decimal(str(v))
    if scale is not None and v.is_finite() and v.as_tuple().exponent != -scale:
        with decimal.localcontext() as dctx:
            dctx.prec = max(dctx.prec, len(v.as_tuple().digits) + scale + 70)  # DECIMAL holds ≤ 65 digits
            v = v.quantize(decimal.Decimal(1).scaleb(-scale))
    return format(v, "f")


# ---- python values (pymysql, SQLAlchemy rows) → Arrow -------------------------------------------------------
class ValueColumn:
    """Converts one column of Python values (as a DB-API driver returns them) to the plan's Arrow type."""

    def __init__(self, spec: ColumnSpec, field_: pa.Field, *, strict_dates: bool, stats: ReadStats,
                 loose_types: bool = False) -> None:
        self.spec = spec
        # SQLite keeps any value in any column; Arrow would silently truncate a float into an integer
        # column, so such sources get a per-value type check for integer columns.
        self.check_ints = loose_types and pa.types.is_integer(field_.type)
        self.name = spec.name
        self.type = field_.type
        self.nullable = field_.nullable
        self.strict_dates = strict_dates
        self.stats = stats
        self.tag = spec.conversion
        self._convert: Callable[[Sequence[Any], Context], pa.Array] = {
            "zero_date": self._zero_date,
            "time_us": self._time_us,
            "bit_int": self._bit_int,
            "json": self._json,
            "bool": self._bool,
            "decimal_str": self._decimal_str,
            "iso_date": self._iso,
            "iso_datetime": self._iso,
        }.get(self.tag or "", self._plain)

    def __call__(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        arr = self._convert(values, ctx)
        if not self.nullable and arr.null_count:
            i = arr.is_null().index(True).as_py()
            raise ctx.error(self.name, i, None, self.type, "NULL in a NOT NULL column")
        return arr

    def _plain(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        if self.check_ints:
            for i, v in enumerate(values):
                if v is not None and not (isinstance(v, int) and not isinstance(v, bool)):
                    raise ctx.error(self.name, i, v, self.type, f"a {type(v).__name__}, not an integer")
        if pa.types.is_decimal(self.type):
            # SQLite/PostgreSQL may hand floats for NUMERIC; go through their shortest repr, not binary.
            values = [Decimal(repr(v)) if isinstance(v, float) else v for v in values]
        elif pa.types.is_string(self.type) and any(isinstance(v, (bytes, bytearray)) for v in values):
            values = [_utf8(v, self.name, i, ctx) for i, v in enumerate(values)]
        return values_to_array(values, self.type, self.name, ctx)

    def _zero_date(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        zero = [i for i, v in enumerate(values) if is_zero_date(v)]
        if zero:
            if self.strict_dates:
                i = zero[0]
                raise ValueConversionError(
                    f"column {self.name!r}: zero or invalid date {_text(values[i])!r} at key {ctx.key_at(i)}",
                    hint="drop --strict-dates to export such dates as NULL (they are counted in the run report)",
                    table=ctx.table, key_range=(ctx.key_range.lo, ctx.key_range.hi),
                )
            values = list(values)
            for i in zero:
                values[i] = None
            self.stats.add_zero_dates(self.name, len(zero))
        return values_to_array(values, self.type, self.name, ctx)

    def _time_us(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        try:
            # timedelta → duration[us] is done by Arrow in C; the cast to int64 is free.
            return pa.array(values, type=pa.duration("us")).cast(pa.int64())
        except ARROW_FIT_ERRORS:
            return values_to_array([timedelta_us(v) for v in values], self.type, self.name, ctx)

    def _bit_int(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        return values_to_array([bit_to_int(v) for v in values], self.type, self.name, ctx)

    def _json(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        out = [_utf8(v, self.name, i, ctx) if isinstance(v, (bytes, bytearray)) else v for i, v in enumerate(values)]
        return values_to_array(out, self.type, self.name, ctx)

    def _bool(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        out = []
        for i, v in enumerate(values):
            if v is None or isinstance(v, bool):
                out.append(v)
            elif isinstance(v, int) and v in (0, 1):
                out.append(bool(v))
            else:
                raise ctx.error(self.name, i, v, self.type, NOT_A_BOOL)
        return pa.array(out, type=self.type)

    def _decimal_str(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        # As MySQL prints the value (what CAST(... AS CHAR) gives connectorx): positional notation with the
        # column's scale, never str(Decimal)'s exponent form ('1E-30', '0E-30', '1.000…E-7').
        scale = decimal_scale(self.spec.source_type)
        return values_to_array([None if v is None else decimal_text(v, scale) for v in values], self.type, self.name,
                               ctx)

    def _iso(self, values: Sequence[Any], ctx: Context) -> pa.Array:
        """SQLite keeps dates as ISO text: let Arrow parse them; driver date objects go straight in."""
        texts = [v for v in values if v is not None]
        if texts and all(isinstance(v, str) for v in texts):
            arr = pa.array(values, type=pa.string())
            if pa.types.is_date(self.type):
                return _iso_date_cast(arr, self.type, self.name, ctx)
            return cast_array(arr, self.type, self.name, ctx)
        if any(isinstance(v, str) for v in texts):  # mixed text and objects: normalise per value
            values = [_parse_iso(v, self.type, self.name, i, ctx) if isinstance(v, str) else v
                      for i, v in enumerate(values)]
        return values_to_array(values, self.type, self.name, ctx)


NOT_A_BOOL = "only 0 and 1 are booleans"


def int_to_bool(arr: pa.Array, column: str, target: pa.DataType, ctx: Context) -> pa.Array:
    """An integer column → bool, refusing any value but 0/1 with the same error as the row-wise readers."""
    if pa.types.is_boolean(arr.type):
        return arr
    bad = pc.and_(pc.is_valid(arr), pc.invert(pc.is_in(arr, value_set=pa.array([0, 1], arr.type))))
    if pc.any(bad).as_py():
        i = bad.index(True).as_py()
        raise ctx.error(column, i, arr[i].as_py(), target, NOT_A_BOOL)
    return pc.not_equal(arr, pa.scalar(0, arr.type))


def _iso_date_cast(arr: pa.Array, target: pa.DataType, column: str, ctx: Context) -> pa.Array:
    """ISO date text → date32; a date with a time part that is not midnight does not fit a DATE."""
    try:
        return pc.cast(arr, target, safe=True)
    except ARROW_FIT_ERRORS:
        pass
    out = []
    for i, v in enumerate(arr.to_pylist()):
        out.append(None if v is None else _parse_iso(v, target, column, i, ctx))
    return pa.array(out, type=target)


def _parse_iso(text: str, target: pa.DataType, column: str, i: int, ctx: Context):
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ctx.error(column, i, text, target, "not an ISO date/time") from exc
    if pa.types.is_date(target):
        if value.time() != dt.time(0) or value.tzinfo is not None:
            raise ctx.error(column, i, text, target, "has a time of day")
        return value.date()
    if getattr(target, "tz", None) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def _utf8(v: Any, column: str, i: int, ctx: Context) -> Any:
    if not isinstance(v, (bytes, bytearray)):
        return v
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ctx.error(column, i, v, pa.string(), "not valid UTF-8") from exc


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


class RowBatcher:
    """Builds RecordBatches of exactly the plan's schema from driver row tuples, column-wise."""

    def __init__(self, plan: Plan, *, strict_dates: bool, stats: ReadStats, loose_types: bool = False) -> None:
        self.plan = plan
        self.schema = plan.arrow_schema()
        self.table = plan.source.qualified_table
        self.columns = [
            ValueColumn(spec, self.schema.field(i), strict_dates=strict_dates, stats=stats, loose_types=loose_types)
            for i, spec in enumerate(plan.columns)
        ]
        names = [c.name for c in plan.columns]
        self.key_pos = names.index(plan.source.key) if plan.source.key in names else None

    def build(self, rows: Sequence[Sequence[Any]], r: KeyRange) -> pa.RecordBatch | pa.Table:
        """A RecordBatch from ``rows`` (tuples in plan column order) read from range ``r``.

        A Table instead when a text/binary column exceeds one Arrow array (see :func:`batch_of_columns`);
        :func:`batches_of` turns either into record batches.
        """
        if not rows:
            return empty_batch(self.schema)
        cols = list(zip(*rows))
        keys = cols[self.key_pos] if self.key_pos is not None else None
        ctx = Context(self.table, r, keys)
        arrays = [conv(cols[i], ctx) for i, conv in enumerate(self.columns)]
        return batch_of_columns(arrays, self.schema)


def batch_of_columns(arrays: Sequence[pa.Array | pa.ChunkedArray], schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    """One RecordBatch of ``arrays``; a Table when a column came back chunked.

    ``pa.array`` splits a string/binary column holding more than 2 GiB (32-bit offsets) into chunks;
    a RecordBatch cannot hold that, so the column stays chunked and the caller iterates
    :func:`batches_of` — the Arrow type (string/binary, as the plan declares) is the same in every chunk.
    """
    if any(isinstance(a, pa.ChunkedArray) for a in arrays):
        return pa.Table.from_arrays(list(arrays), schema=schema)
    return pa.RecordBatch.from_arrays(list(arrays), schema=schema)


def batches_of(data: pa.RecordBatch | pa.Table) -> list[pa.RecordBatch]:
    """The record batches of ``data`` (a Table of chunked columns splits at every chunk boundary)."""
    if isinstance(data, pa.RecordBatch):
        return [data]
    return data.to_batches()


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A zero-row batch of ``schema``."""
    return pa.RecordBatch.from_pylist([], schema=schema)
