"""Which spans of an image changed on the source: ``--detect checksum | cursor:COL | none``.

``checksum`` compares a server-side per-span ``COUNT(*)`` + order-independent checksum of every column
(computed in SQL, as pt-table-checksum does) with the one recorded when the span was exported: it
sees updates, deletes and late inserts below the max, at the cost of one pass over the rows on the
server and no row data over the network. ``cursor:COL`` finds the spans holding rows with
``COL >= watermark − lookback`` with an index range on COL: cheap, but it cannot see deletes.
``none`` reads appends only.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta
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


def span_checksums(engine: Engine, info, spans: list) -> list[str]:
    """``"<rows>:<checksum>"`` per span ((lo, hi) or :data:`NULLS`), from :mod:`sparsesync.executor.checksum`:
    the server's ``COUNT(*)`` and order-independent MD5 row checksum over every column, keys bound."""
    from sparsesync.executor.checksum import Span
    from sparsesync.executor.checksum import span_checksums as shared

    if not (is_mysql(engine) or engine.dialect.name == "sqlite"):
        raise UsageError(f"--detect checksum needs a MySQL/MariaDB or SQLite source (this one is {engine.dialect.name})",
                         hint="use --detect cursor:COLUMN or --detect none", table=info.table)
    if not spans:
        return []
    found = shared(engine, info, [Span.null_keys() if s == NULLS else Span(s[0], s[1]) for s in spans])
    return [f"{c.rows}:{c.checksum}" for c in found]


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


def since_value(watermark: str | None, lookback_s: float) -> Any:
    """``watermark − lookback`` for a time cursor; a numeric cursor has no lookback (``None``: everything)."""
    if watermark is None:
        return None
    try:
        return datetime.fromisoformat(watermark) - timedelta(seconds=lookback_s)
    except ValueError:
        return int(watermark) if watermark.lstrip("-").isdigit() else watermark


def cursor_changed(engine: Engine, table: str, key: str, column: str, spans: list, since: Any, *,
                   schema: str | None = None) -> list[int]:
    """Indexes of ``spans`` ((lo, hi) or :data:`NULLS`) holding a row with ``COL >= since`` (all when None).

    One index range on COL returns the distinct keys it touched; they are placed into spans here, so
    the cost is the changed rows, never the table.
    """
    if since is None:
        return list(range(len(spans)))
    t = _table(table, schema, key, column)
    stmt = sa.select(t.c[key]).distinct().where(t.c[column] >= sa.bindparam("since", since))
    try:
        with engine.connect() as conn:
            keys = [k for (k,) in conn.execute(stmt)]
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cursor query on {column} failed: {short_db_error(exc)}", table=table) from exc
    keyed = [(i, s) for i, s in enumerate(spans) if s != NULLS]
    starts = [s[0] for _, s in keyed]
    hit = set()
    for k in keys:
        if k is None:
            hit.update(i for i, s in enumerate(spans) if s == NULLS)
            continue
        j = bisect.bisect_right(starts, int(k)) - 1
        if j >= 0 and (keyed[j][1][1] is None or int(k) < keyed[j][1][1]):
            hit.add(keyed[j][0])
    return sorted(hit)
