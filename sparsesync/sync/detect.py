"""Which spans of an image changed on the source: ``--detect checksum | cursor:COL | none``.

``checksum`` compares a server-side per-span ``COUNT(*)`` + order-independent checksum of every column
(computed in SQL, as pt-table-checksum does) with the one recorded when the span was exported: it
sees updates, deletes and late inserts below the max, at the cost of one pass over the rows on the
server (one grouped statement for all spans) and no row data over the network. ``cursor:COL`` reads
``(key, COL)`` of the rows with ``COL >= watermark − lookback`` with one index range on COL and compares
the lookback window with the digest the last run kept (:func:`cursor_changed`): cheap, but it cannot see
deletes outside that window. ``none`` reads appends only.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sparsesync.errors import SourceError, UsageError
from sparsesync.source import is_mysql, short_db_error



@dataclass(frozen=True)
class Detect:
    """A parsed ``--detect`` value."""

    mode: str  # checksum | cursor | none
    column: str | None = None

    def __str__(self) -> str:
        return f"cursor:{self.column}" if self.mode == "cursor" else self.mode


def parse_detect(text: str) -> Detect:
    """``checksum``, ``none`` or ``cursor:COL``; anything else is a one-line :class:`UsageError`."""
    t = (text or "").strip()
    if t in ("checksum", "none"):
        return Detect(t)
    if t.startswith("cursor:") and t[len("cursor:"):].strip():
        return Detect("cursor", t[len("cursor:"):].strip())
    raise UsageError(f"--detect must be checksum, none or cursor:COLUMN, got {text!r}",
                     hint="e.g. --detect cursor:updated_at")


# ---- checksum ---------------------------------------------------------------------------------------------
NULLS = "nulls"  # the span of the rows whose key is NULL, beside the (lo, hi) key spans

# The checksum's format in ``_state.json``: ``"<rows>:sum:<16 hex>"``, the rows' hashes summed modulo 2^64.
# Images made before it recorded ``"<rows>:<16 hex>"``, a xor (two identical rows cancelled): such a text
# never equals a new one, so each of their spans is re-exported once and then carries the new format.
CHECKSUM_FORMAT = "sum:"


def checksum_text(rows: int, checksum: str) -> str:
    """A span's checksum as ``_state.json`` keeps it (see :data:`CHECKSUM_FORMAT`)."""
    return f"{int(rows)}:{CHECKSUM_FORMAT}{checksum}"


def merge_checksum_texts(a: str | None, b: str | None) -> str | None:
    """The checksum text of the union of two disjoint row sets (e.g. two adjacent parts merged into one
    span), from their :func:`checksum_text`: rows added, sums added modulo 2^64. ``None`` when either is
    missing or in an older format (the merged span is then re-exported once by the next checksum run)."""
    from sparsesync.executor.checksum import SpanChecksum, Span

    parsed = []
    for t in (a, b):
        rows, sep, rest = (t or "").partition(":")
        if not sep or not rest.startswith(CHECKSUM_FORMAT) or not rows.isdigit():
            return None
        parsed.append(SpanChecksum(Span(), int(rows), rest[len(CHECKSUM_FORMAT):]))
    m = parsed[0].merge(parsed[1])
    return checksum_text(m.rows, m.checksum)


def span_checksums(engine: Engine, info, spans: list) -> list[str]:
    """:func:`checksum_text` per span ((lo, hi) or :data:`NULLS`), from :mod:`sparsesync.executor.checksum`:
    the server's ``COUNT(*)`` and order-independent MD5 row checksum over every column (a sum modulo 2^64,
    so duplicate rows count), keys bound."""
    from sparsesync.executor.checksum import Span
    from sparsesync.executor.checksum import span_checksums as shared

    if not (is_mysql(engine) or engine.dialect.name == "sqlite"):
        raise UsageError(f"--detect checksum needs a MySQL/MariaDB or SQLite source (this one is {engine.dialect.name})",
                         hint="use --detect cursor:COLUMN or --detect none", table=info.table)
    if not spans:
        return []
    found = shared(engine, info, [Span.null_keys() if s == NULLS else Span(s[0], s[1]) for s in spans])
    return [checksum_text(c.rows, c.checksum) for c in found]


def checksum_statements(info, spans: list) -> int:
    """How many statements :func:`span_checksums` sends for ``spans`` (grouped, see executor.checksum)."""
    from sparsesync.executor.checksum import Span, grouped_statements

    top = 2**63 - 1 if info.key_signed else 2**64 - 1
    return len(grouped_statements("k", [Span.null_keys() if s == NULLS else Span(s[0], s[1]) for s in spans], top))


# ---- cursor ----------------------------------------------------------------------------------------------
def _table(table: str, schema: str | None, *cols: str) -> sa.TableClause:
    return sa.table(table, *[sa.column(c) for c in cols], schema=schema)


# The server's clock caps the watermark (a row stamped in the future must not freeze it). Which clock, per
# cursor column type: a TIMESTAMP is read in the session's time zone, as NOW() is; a DATETIME or DATE carries
# no zone (an application writes local time or UTC into it), so its clock is the EARLIER of the server's
# local time and UTC — a cap too low costs re-reads, one too high would skip rows. Any other type (an integer
# version, a decimal, text) has no clock: its watermark is its MAX, as written.
CLOCK_KINDS = ("timestamp", "datetime", "date")
AHEAD_SLACK = timedelta(seconds=1)  # NOW(6) stored into a DATETIME/TIMESTAMP of fewer digits may round up


def clock_kind(info, column: str) -> str | None:
    """``timestamp``, ``datetime`` or ``date`` for a cursor column of that MySQL type, else ``None`` (no clock:
    a numeric or text cursor, an unknown column, a source other than MySQL/MariaDB)."""
    spec = next((c for c in getattr(info, "columns", ()) if c.name == column), None)
    t = (getattr(spec, "source_type", "") or "").lower().split("(")[0].strip()
    return t if t in CLOCK_KINDS else None


def _clock_columns(engine: Engine, kind: str | None) -> list:
    if kind is None or not is_mysql(engine):
        return []
    return [sa.func.now(6).label("sparsesync_now"), sa.func.utc_timestamp(6).label("sparsesync_utc")]


def _clock_of(kind: str | None, now: Any, utc: Any) -> Any:
    """The cap for a cursor column of ``kind`` from the server's ``NOW(6)`` and ``UTC_TIMESTAMP(6)``."""
    if kind is None or now is None:
        return None
    if kind == "timestamp":
        return now
    clock = min(now, utc) if utc is not None else now
    return datetime(clock.year, clock.month, clock.day) if kind == "date" else clock


def cursor_watermark(engine: Engine, table: str, column: str, *, schema: str | None = None,
                     clock: str | None = None) -> Any:
    """``MAX(COL)`` now (one index lookup), capped at the server's clock (:func:`clock_kind`; read in the
    same statement); read before the export so later changes are above it."""
    t = _table(table, schema, column)
    clocks = _clock_columns(engine, clock)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(sa.func.max(t.c[column]), *clocks)).one()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot read MAX({column}) for --detect cursor:{column}: {short_db_error(exc)}",
                          hint="the cursor column must exist (ideally indexed)", table=table) from exc
    top = _norm(row[0])
    cap = _clock_of(clock, *row[1:3]) if clocks else None
    return capped(top, cap)


def later(a: Any, b: Any) -> Any:
    """The later of two watermarks; ``a`` when they do not compare, the other when one is ``None``."""
    if a is None or b is None:
        return b if a is None else a
    try:
        return max(a, b)
    except TypeError:
        return a


def capped(value: Any, clock: Any) -> Any:
    """``min(value, clock)``; ``value`` when there is no clock or the two do not compare."""
    if value is None or clock is None:
        return value
    try:
        return min(value, clock)
    except TypeError:
        return value


def watermark_out(value: Any) -> str | None:
    """The watermark as text for ``_state.json`` (ISO for times, decimal for numbers)."""
    if value is None:
        return None
    return value.isoformat(sep=" ") if isinstance(value, datetime) else str(value)


def cursor_value(text: str | None) -> Any:
    """A watermark or window bound from ``_state.json`` back as a value comparable with the column's
    values as the driver returns them: an integer, a decimal, a datetime, or the text itself."""
    if text is None:
        return None
    t = text.strip()
    if t.lstrip("-").isdigit():  # before the date parse: Python 3.11 reads "20200101" as a date
        return int(t)
    try:
        d = Decimal(t)
        if d.is_finite():
            return d
    except ArithmeticError:  # decimal.InvalidOperation: not a number
        pass
    try:
        return datetime.fromisoformat(t)
    except ValueError:
        return t


def since_value(watermark: str | None, lookback_s: float) -> Any:
    """``watermark − lookback`` for a time cursor; a numeric cursor has no lookback (the watermark itself);
    ``None`` without a watermark."""
    v = cursor_value(watermark)
    return v - timedelta(seconds=lookback_s) if isinstance(v, datetime) else v


def _norm(v: Any) -> Any:
    """A cursor value as compared and hashed here: a DATE as the midnight datetime (the bounds are datetimes)."""
    if isinstance(v, date) and not isinstance(v, datetime):
        return datetime(v.year, v.month, v.day)
    return v


@dataclass(frozen=True)
class CursorProbe:
    """What one index range on the cursor column returned: ``(key, COL)`` of every row with ``COL >= bound``,
    read in one statement (one consistent snapshot), before anything is exported."""

    bound: Any
    pairs: tuple[tuple[Any, Any], ...]
    clock: Any = None  # the server's clock for this column (:func:`clock_kind`) at the probe; None: no clock
    kind: str | None = None  # the clock's kind (a DATE's clock is today, no rounding slack)

    @property
    def watermark(self) -> Any:
        """``MAX(COL)`` at the probe (the largest value it returned), capped at the server's clock: a row
        stamped in the future never becomes the watermark (every later probe would start above the rows
        written since). ``None`` when it returned nothing."""
        return capped(max((v for _, v in self.pairs), default=None), self.clock)

    @property
    def ahead(self) -> tuple[tuple[Any, Any], ...]:
        """The pairs stamped ahead of the server's clock (beyond a second's rounding). They lie above every
        watermark, so each run re-reads their spans (they are always suspect) until the clock passes them."""
        if self.clock is None:
            return ()
        try:
            limit = self.clock + (timedelta(0) if self.kind == "date" else AHEAD_SLACK)
            return tuple((k, v) for k, v in self.pairs if v is not None and v > limit)
        except TypeError:
            return ()


def cursor_probe(engine: Engine, table: str, key: str, column: str, bound: Any, *,
                 schema: str | None = None, clock: str | None = None) -> CursorProbe:
    """``SELECT key, COL WHERE COL >= bound``: an index range on COL (its secondary index holds the key),
    so the cost is the rows in the window, never the table. With a ``clock`` kind (:func:`clock_kind`) the
    same statement reads the server's clock: a one-row derived table LEFT JOINed to the range (one row of
    NULLs when the range is empty; the range is still one index range on COL)."""
    t = _table(table, schema, key, column)
    cond = t.c[column] >= sa.bindparam("since", bound)
    clocks = _clock_columns(engine, clock)
    if clocks:
        c = sa.select(*clocks).subquery("sparsesync_clock")
        stmt = sa.select(c.c.sparsesync_now, c.c.sparsesync_utc, t.c[key], t.c[column]).select_from(
            c.outerjoin(t, cond))
    else:
        stmt = sa.select(t.c[key], t.c[column]).where(cond)
    now = utc = None
    try:
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cursor query on {column} failed: {short_db_error(exc)}", table=table) from exc
    if clocks:
        now, utc = (rows[0][0], rows[0][1]) if rows else (None, None)
        rows = [r[2:] for r in rows if r[3] is not None]  # COL >= bound is never NULL: the empty range's row
    pairs = tuple((k, _norm(v)) for k, v in rows)
    return CursorProbe(bound, pairs, _clock_of(clock, now, utc) if clocks else None, clock if clocks else None)


def ahead_note(table: str, column: str, probe: CursorProbe) -> str | None:
    """The run report's line about rows stamped ahead of the server's clock, ``None`` when there are none."""
    ahead = probe.ahead
    if not ahead:
        return None
    return (f"{len(ahead)} row(s) of {table} have {column} ahead of the server clock ({watermark_out(probe.clock)}; "
            f"up to {watermark_out(max(v for _, v in ahead))}): they are re-read every run until the clock passes them")


def watermark_ahead(cursor: dict, probe: CursorProbe) -> bool:
    """The recorded watermark is ahead of the server's clock now: an image whose watermark a future value
    froze (before the clock cap), or a clock that went back. Every span is then suspect once."""
    wm = cursor_value(cursor.get("watermark"))
    if wm is None or probe.clock is None:
        return False
    try:
        return wm > probe.clock
    except TypeError:
        return False


def _locator(spans: list):
    """``key -> index`` of the span ((lo, hi) or :data:`NULLS`) holding it, ``None`` when none does."""
    keyed = [(i, s) for i, s in enumerate(spans) if s != NULLS]
    starts = [s[0] for _, s in keyed]
    null_idx = next((i for i, s in enumerate(spans) if s == NULLS), None)

    def locate(k) -> int | None:
        if k is None:
            return null_idx
        j = bisect.bisect_right(starts, int(k)) - 1
        if j >= 0 and (keyed[j][1][1] is None or int(k) < keyed[j][1][1]):
            return keyed[j][0]
        return None

    return locate


def _span_id(span) -> str:
    return NULLS if span == NULLS else str(int(span[0]))


def _pair_hash(k: Any, v: Any) -> int:
    text = f"{'N' if k is None else int(k)}|{watermark_out(v)}"
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big")


def _window_digests(spans: list, pairs, lo: Any, hi: Any) -> dict[str, str]:
    """Per span id, ``"<rows>:<sum of 64-bit pair hashes>"`` over the pairs with ``lo <= COL <= hi`` (``hi``
    None: no upper bound): a multiset digest (a sum, not a xor, so two equal pairs under a non-unique key do
    not cancel)."""
    locate = _locator(spans)
    acc: dict[str, list[int]] = {}
    for k, v in pairs:
        if v is None or v < lo or (hi is not None and v > hi):
            continue
        i = locate(k)
        if i is None:
            continue
        a = acc.setdefault(_span_id(spans[i]), [0, 0])
        a[0] += 1
        a[1] = (a[1] + _pair_hash(k, v)) & (2**64 - 1)
    return {sid: f"{n}:{x:016x}" for sid, (n, x) in acc.items()}


def window_bound(watermark: Any, lookback_s: float) -> Any:
    """``watermark − lookback`` (a time cursor) or the watermark itself, for a value read from the source."""
    return since_value(watermark_out(_norm(watermark)), lookback_s)


def probe_bound(cursor: dict, lookback_s: float) -> Any:
    """Where the next probe starts: ``watermark − lookback``, and never above the recorded window (whose
    rows it must see again to compare them)."""
    since = since_value(cursor.get("watermark"), lookback_s)
    window = cursor.get("window") or {}
    wlo = cursor_value(window.get("lo"))
    if wlo is not None and since is not None:
        try:
            return min(since, wlo)
        except TypeError:
            return since
    return since


def cursor_changed(spans: list, probe: CursorProbe, cursor: dict) -> list[int]:
    """Indexes of ``spans`` ((lo, hi) or :data:`NULLS`) the cursor says changed since the last run.

    A span changed when it holds a row with ``COL`` above the last watermark (written since), or a row
    below the recorded window (a lookback wider than last time), or when its rows inside the recorded
    window ``[window.lo, watermark]`` — the lookback that guards against late commits — are not exactly
    the ``(key, COL)`` pairs the last run saw there (:func:`window_record`): a row committed late, moved
    or deleted inside the window. Rows the last run saw there and that are unchanged cost nothing, so
    appends alone re-read no span. Without a recorded window (an image made before it was kept), every
    span holding a row with ``COL >= watermark − lookback`` changed.
    """
    locate = _locator(spans)
    wm = cursor_value(cursor.get("watermark"))
    window = cursor.get("window")
    if window and wm is not None:
        try:
            return _changed_by_window(spans, locate, probe, wm, window)
        except TypeError:  # values the driver returns that do not compare with the stored bounds: be safe
            pass
    return sorted({i for i in (locate(k) for k, _ in probe.pairs) if i is not None})


def _changed_by_window(spans, locate, probe: CursorProbe, wm, window: dict) -> list[int]:
    wlo = cursor_value(window.get("lo"))
    hit: set[int] = set()
    for k, v in probe.pairs:
        i = locate(k)
        if i is not None and (v > wm or v < wlo):
            hit.add(i)
    # Open above, as window_record keeps it: rows above the watermark (written since, or stamped ahead of the
    # clock) hit their span anyway; a row ahead of the clock that was deleted leaves its span's digest.
    now = _window_digests(spans, probe.pairs, wlo, None)
    seen = window.get("parts") or {}
    for i, sp in enumerate(spans):
        if now.get(_span_id(sp)) != seen.get(_span_id(sp)):
            hit.add(i)
    return sorted(hit)


def window_record(spans: list, probe: CursorProbe | None, watermark: Any, lookback_s: float) -> dict | None:
    """The ``cursor.window`` to keep in ``_state.json`` for the next run: per span of the new image, the
    digest of the ``(key, COL)`` pairs with ``COL >= watermark − lookback`` that the probe (taken BEFORE the
    export, so the image holds those rows or newer versions of them) returned — the window up to the
    watermark and the rows stamped ahead of the clock above it (none when the watermark is the MAX), so a
    deleted row of either changes its span's digest. ``None`` when the probe did not reach down to that bound."""
    if probe is None or watermark is None:
        return None
    lo = window_bound(watermark, lookback_s)
    try:
        if probe.bound is None or lo is None or probe.bound > lo:
            return None
        return {"lo": watermark_out(lo), "parts": _window_digests(spans, probe.pairs, lo, None)}
    except TypeError:  # values that do not compare with the bound: no window, the next run is conservative
        return None
