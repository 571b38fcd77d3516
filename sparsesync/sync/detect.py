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


def cursor_watermark(engine: Engine, table: str, column: str, *, schema: str | None = None) -> Any:
    """``MAX(COL)`` now (one index lookup); read before the export so later changes are above it."""
    t = _table(table, schema, column)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(t.c[column]))).scalar()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot read MAX({column}) for --detect cursor:{column}: {short_db_error(exc)}",
                          hint="the cursor column must exist (ideally indexed)", table=table) from exc


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

    @property
    def watermark(self) -> Any:
        """``MAX(COL)`` at the probe (the largest value it returned), ``None`` when it returned nothing."""
        return max((v for _, v in self.pairs), default=None)


def cursor_probe(engine: Engine, table: str, key: str, column: str, bound: Any, *,
                 schema: str | None = None) -> CursorProbe:
    """``SELECT key, COL WHERE COL >= bound``: an index range on COL (its secondary index holds the key),
    so the cost is the rows in the window, never the table."""
    t = _table(table, schema, key, column)
    stmt = sa.select(t.c[key], t.c[column]).where(t.c[column] >= sa.bindparam("since", bound))
    try:
        with engine.connect() as conn:
            pairs = tuple((k, _norm(v)) for k, v in conn.execute(stmt))
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cursor query on {column} failed: {short_db_error(exc)}", table=table) from exc
    return CursorProbe(bound, pairs)


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
    """Per span id, ``"<rows>:<sum of 64-bit pair hashes>"`` over the pairs with ``lo <= COL <= hi``: a
    multiset digest (a sum, not a xor, so two equal pairs under a non-unique key do not cancel)."""
    locate = _locator(spans)
    acc: dict[str, list[int]] = {}
    for k, v in pairs:
        if v is None or v < lo or v > hi:
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
    now = _window_digests(spans, probe.pairs, wlo, wm)
    seen = window.get("parts") or {}
    for i, sp in enumerate(spans):
        if now.get(_span_id(sp)) != seen.get(_span_id(sp)):
            hit.add(i)
    return sorted(hit)


def window_record(spans: list, probe: CursorProbe | None, watermark: Any, lookback_s: float) -> dict | None:
    """The ``cursor.window`` to keep in ``_state.json`` for the next run: per span of the new image, the
    digest of the ``(key, COL)`` pairs with ``watermark − lookback <= COL <= watermark`` that the probe
    (taken BEFORE the export, so the image holds those rows or newer versions of them) returned.
    ``None`` when the probe did not reach down to that bound."""
    if probe is None or watermark is None:
        return None
    wm = _norm(watermark)
    lo = window_bound(watermark, lookback_s)
    try:
        if probe.bound is None or lo is None or probe.bound > lo:
            return None
        return {"lo": watermark_out(lo), "parts": _window_digests(spans, probe.pairs, lo, wm)}
    except TypeError:  # values that do not compare with the bound: no window, the next run is conservative
        return None
