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
from sparsesync.source import is_mysql, quoted_table, short_db_error

Span = tuple[int, "int | None"]


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
def _where_spans(key: str, spans: list[Span], params: dict[str, Any]) -> str:
    """``(k >= :lo0 AND k < :hi0) OR …`` with the keys bound; adjacent spans are merged first."""
    merged: list[list] = []
    for lo, hi in spans:
        if merged and merged[-1][1] == lo:
            merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    terms = []
    for i, (lo, hi) in enumerate(merged):
        params[f"wlo{i}"] = lo
        if hi is None:
            terms.append(f"{key} >= :wlo{i}")
        else:
            params[f"whi{i}"] = hi
            terms.append(f"({key} >= :wlo{i} AND {key} < :whi{i})")
    return " OR ".join(terms)


def span_checksums(engine: Engine, table: str, key: str, columns: list[str], spans: list[Span], *,
                   schema: str | None = None) -> list[str]:
    """``"<count>:<checksum>"`` per span (sorted, disjoint ``[lo, hi)``, hi None = open), in one query.

    One ``GROUP BY INTERVAL(key, span starts…)`` pass restricted to the spans by an index range on the
    key: the server reads each row once and sends one line per non-empty span. The row checksum is the
    first 64 bits of ``MD5`` over every column (with a NULL mask, so NULL and '' differ), XOR-ed over
    the span: order-independent, and with the count it changes on any update, delete or insert.
    """
    if not spans:
        return []
    if not is_mysql(engine):
        raise UsageError(
            f"--detect checksum needs a MySQL/MariaDB source (this one is {engine.dialect.name})",
            hint="use --detect cursor:COLUMN or --detect none", table=table)
    prep = engine.dialect.identifier_preparer
    k = prep.quote(key)
    cols = [prep.quote(c) for c in columns]
    row = (f"CONCAT_WS('#', {', '.join(cols)}, CONCAT({', '.join(f'ISNULL({c})' for c in cols)}))")
    params: dict[str, Any] = {}
    starts = ", ".join(f":b{i}" for i in range(len(spans)))
    params.update({f"b{i}": lo for i, (lo, _) in enumerate(spans)})
    where = _where_spans(k, spans, params)
    sql = (f"SELECT INTERVAL({k}, {starts}) AS s, COUNT(*) AS n, "
           f"BIT_XOR(CAST(CONV(LEFT(MD5({row}), 16), 16, 10) AS UNSIGNED)) AS x "
           f"FROM {quoted_table(engine.dialect, table, schema)} WHERE {where} GROUP BY s")
    try:
        with engine.connect() as conn:
            found = {int(s): (int(n), int(x)) for s, n, x in conn.execute(sa.text(sql), params)}
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"span checksums failed: {short_db_error(exc)}", table=table) from exc
    out = []
    for i in range(len(spans)):
        n, x = found.get(i + 1, (0, 0))  # INTERVAL is 1 for the first start, 2 for the second, …
        out.append(f"{n}:{x:016x}")
    return out


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


def cursor_changed(engine: Engine, table: str, key: str, column: str, spans: list[Span], since: Any, *,
                   schema: str | None = None) -> list[int]:
    """Indexes of ``spans`` holding a row with ``COL >= since`` (all spans when ``since`` is None).

    One index range on COL returns the distinct keys it touched; they are placed into spans here, so
    the cost is the changed rows, never the table.
    """
    if since is None:
        return list(range(len(spans)))
    t = _table(table, schema, key, column)
    stmt = sa.select(t.c[key]).distinct().where(t.c[column] >= sa.bindparam("since", since))
    try:
        with engine.connect() as conn:
            keys = [int(k) for (k,) in conn.execute(stmt) if k is not None]
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cursor query on {column} failed: {short_db_error(exc)}", table=table) from exc
    starts = [lo for lo, _ in spans]
    hit = set()
    for k in keys:
        i = bisect.bisect_right(starts, k) - 1
        if i >= 0 and (spans[i][1] is None or k < spans[i][1]):
            hit.add(i)
    return sorted(hit)
