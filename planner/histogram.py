"""Density histograms of a table's key: which stretches of key space hold how many rows.

A :class:`Histogram` is a sorted list of non-empty :class:`Bucket` s. Each bucket knows its grid
interval ``[lo, hi)``, its row count and its real min/max key, so partition boundaries can sit on real
keys and stretches with no rows cost nothing.

The ``exact`` pre-scan is one ``GROUP BY key DIV width`` pass (plus a refinement pass over buckets
too heavy to place boundaries in). ``key DIV width`` cannot overflow for any signed or unsigned
64-bit key, unlike ``(key - base) DIV width``; its truncation toward zero only makes bucket 0 twice as
wide, which the grid arithmetic below accounts for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sparsesync.errors import SourceError
from sparsesync.source import is_mysql, short_db_error

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Bucket:
    """Rows with keys in the grid interval ``[lo, hi)``; ``min_key``/``max_key`` are real keys."""

    lo: int
    hi: int
    count: int
    min_key: int
    max_key: int
    exact: bool = True

    @property
    def width(self) -> int:
        return self.hi - self.lo

    @property
    def core(self) -> int:
        """Keys from the first to the last real key, inclusive."""
        return self.max_key - self.min_key + 1

    @property
    def full(self) -> bool:
        """Every key between min and max holds a row (for a unique key): any key is a real boundary."""
        return self.count >= self.core


@dataclass
class Histogram:
    """Non-empty buckets sorted by key, and how they were measured."""

    method: str  # exact | sampled
    buckets: list[Bucket]
    min_key: int | None
    max_key: int | None
    total_rows: int
    width: int | None = None
    queries: int = 0
    exact: bool = True
    notes: list[str] = field(default_factory=list)
    unique_key: bool = True
    outliers: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.buckets


@dataclass(frozen=True)
class KeyTable:
    """How to address the key column in SQL: quoted by SQLAlchemy, never pasted."""

    table: str
    key: str
    schema: str | None = None
    signed: bool = True

    def sa_table(self) -> sa.TableClause:
        return sa.table(self.table, sa.column(self.key, sa.BigInteger), schema=self.schema)

    @property
    def domain(self) -> tuple[int, int]:
        return (INT64_MIN, INT64_MAX) if self.signed else (0, UINT64_MAX)


def grid_interval(q: int, width: int) -> tuple[int, int]:
    """Grid ``[lo, hi)`` of keys ``k`` with ``trunc(k / width) == q`` (SQL ``DIV`` truncates toward 0)."""
    if q > 0:
        return q * width, q * width + width
    if q < 0:
        return q * width - width + 1, q * width + 1
    return -width + 1, width


def min_max_count(conn: Connection, kt: KeyTable, *, count: bool = True) -> tuple[int | None, int | None, int | None]:
    """``MIN``, ``MAX`` (index endpoints, cheap) and optionally ``COUNT(*)`` in one query."""
    t = kt.sa_table()
    k = t.c[kt.key]
    cols = [sa.func.min(k), sa.func.max(k)] + ([sa.func.count()] if count else [])
    row = _execute(conn, sa.select(*cols).select_from(t), kt).one()
    lo, hi = _int_or_none(row[0]), _int_or_none(row[1])
    return lo, hi, (int(row[2]) if count else None)


def bucket_expr(conn: Connection, key_col, width: int):
    if is_mysql(conn):
        return key_col.op("DIV")(sa.literal(width, sa.BigInteger))
    # SQLAlchemy's ``/`` on integers is true division (it renders ``/ (? + 0.0)`` on SQLite); ``//``
    # renders integer division, which truncates toward zero on SQLite and PostgreSQL like DIV.
    return key_col // sa.literal(width, sa.BigInteger)


def group_by_buckets(
    conn: Connection, kt: KeyTable, width: int, windows: list[tuple[int, int]] | None = None
) -> list[Bucket]:
    """One ``GROUP BY key DIV width`` pass, optionally restricted to inclusive key windows."""
    t = kt.sa_table()
    k = t.c[kt.key]
    b = bucket_expr(conn, k, width).label("b")
    q = sa.select(b, sa.func.count().label("n"), sa.func.min(k).label("mn"), sa.func.max(k).label("mx")).select_from(t)
    if windows:
        q = q.where(sa.or_(*[k.between(sa.literal(lo, sa.BigInteger), sa.literal(hi, sa.BigInteger)) for lo, hi in windows]))
    # Positional, not by label: MySQL and SQLite resolve a GROUP BY name to a table column first, so a
    # table with a column named like the label would be grouped by that column instead.
    q = q.group_by(sa.text("1"))
    out = []
    for qv, n, mn, mx in _execute(conn, q, kt):
        lo, hi = grid_interval(int(qv), width)
        out.append(Bucket(lo=lo, hi=hi, count=int(n), min_key=int(mn), max_key=int(mx)))
    if windows:
        out = [_clip(bk, windows) for bk in out]
    out.sort(key=lambda bk: bk.min_key)
    return out


def group_by_windows(conn: Connection, kt: KeyTable, windows: list[tuple[int, int, int]]) -> list[Bucket]:
    """One pass over several inclusive windows ``(lo, hi, width)``, each cut at its own width.

    ``GROUP BY w, key DIV width_w`` where ``w`` (the window's number) and its width come from one
    ``CASE`` per window: a wide sparse window and a narrow dense burst refined in the same round get the
    widths they each need, not the narrowest of the two.
    """
    t = kt.sa_table()
    k = t.c[kt.key]
    conds = [k.between(sa.literal(lo, sa.BigInteger), sa.literal(hi, sa.BigInteger)) for lo, hi, _ in windows]
    wid = sa.case(*[(c, sa.literal(i, sa.Integer)) for i, c in enumerate(conds)]).label("w")
    b = sa.case(*[(c, bucket_expr(conn, k, w)) for c, (_, _, w) in zip(conds, windows)]).label("b")
    q = (
        sa.select(wid, b, sa.func.count().label("n"), sa.func.min(k).label("mn"), sa.func.max(k).label("mx"))
        .select_from(t)
        .where(sa.or_(*conds))
        .group_by(sa.text("1"), sa.text("2"))  # positional: see group_by_buckets
    )
    out = []
    for w, qv, n, mn, mx in _execute(conn, q, kt):
        lo, hi, width = windows[int(w)]
        glo, ghi = grid_interval(int(qv), width)
        out.append(Bucket(max(glo, lo), min(ghi, hi + 1), int(n), int(mn), int(mx)))
    out.sort(key=lambda bk: bk.min_key)
    return out


def _clip(bk: Bucket, windows: list[tuple[int, int]]) -> Bucket:
    for lo, hi in windows:
        if lo <= bk.min_key <= hi:
            return Bucket(max(bk.lo, lo), min(bk.hi, hi + 1), bk.count, bk.min_key, bk.max_key, bk.exact)
    return bk


def choose_width(span: int, target_buckets: int) -> int:
    return max(1, math.ceil(span / max(1, target_buckets)))


def exact_histogram(
    conn: Connection,
    kt: KeyTable,
    *,
    rows_per_query: int,
    row_estimate: int = 0,
    min_key: int | None = None,
    max_key: int | None = None,
    known_count: int | None = None,
    max_rounds: int = 8,
) -> Histogram:
    """Exact counts: one GROUP BY over the key span, then refine buckets too heavy to cut between.

    A bucket is heavy when it holds more than an eighth of ``rows_per_query`` and is not fully dense
    (a fully dense bucket can be cut at any key, see :mod:`planner.partition`): a range is then
    assembled from several buckets, so ranges come out at least ~87 % full. Refinement narrows only the
    heavy buckets' real ``[min, max]``, in one query per round, so a handful of outliers near 2^63
    costs a few rows of result, never billions of buckets.
    """
    queries = 0
    if min_key is None or max_key is None:
        min_key, max_key, known_count = min_max_count(conn, kt)
        queries += 1
    if min_key is None:
        return Histogram("exact", [], None, None, 0, queries=queries)
    est = known_count if known_count is not None else row_estimate
    span = max_key - min_key + 1
    target = int(min(100_000, max(1024, 8 * max(est, 1) // max(1, rows_per_query))))
    width = choose_width(span, target)
    buckets = group_by_buckets(conn, kt, width, [(min_key, max_key)])
    queries += 1
    heavy_limit = max(1, rows_per_query // 8)
    for _ in range(max_rounds):
        heavy = [bk for bk in buckets if bk.count > heavy_limit and bk.max_key > bk.min_key and not bk.full]
        if not heavy:
            break
        # Each heavy bucket is cut so its pieces average about half the heavy limit.
        windows = [
            (bk.min_key, bk.max_key, choose_width(bk.max_key - bk.min_key + 1, max(2, 2 * bk.count // heavy_limit)))
            for bk in heavy
        ]
        finer = group_by_windows(conn, kt, windows)
        queries += 1
        width = min(width, min(w for _, _, w in windows))
        heavy_ids = {id(bk) for bk in heavy}
        buckets = sorted([bk for bk in buckets if id(bk) not in heavy_ids] + finer, key=lambda bk: bk.min_key)
    total = sum(bk.count for bk in buckets)
    return Histogram("exact", buckets, min_key, max_key, total, width=width, queries=queries, exact=True)


def resolve_outliers(conn: Connection, kt: KeyTable, hist: Histogram, *, cap: int = 1000) -> Histogram:
    """List the outlier keys (see :func:`planner.partition.outlier_buckets`) in ``hist.outliers``.

    When every outlier bucket holds at most two rows its keys are its min and max; otherwise one query
    reads the (few, by definition) outlier keys with their counts and replaces those buckets with
    one exact bucket per key, so a cached histogram yields its outliers without touching the table.
    """
    from .partition import outlier_buckets  # partition imports this module

    idx = outlier_buckets(hist.buckets)
    if not idx:
        hist.outliers = []
        return hist
    chosen = [hist.buckets[i] for i in idx]
    if all(bk.exact and (bk.count <= 2 or bk.min_key == bk.max_key) for bk in chosen):
        keys = sorted({k for bk in chosen for k in (bk.min_key, bk.max_key)})
        hist.outliers = keys[:cap]
        return hist
    t = kt.sa_table()
    k = t.c[kt.key]
    cond = sa.or_(*[k.between(sa.literal(bk.min_key, sa.BigInteger), sa.literal(bk.max_key, sa.BigInteger)) for bk in chosen])
    q = sa.select(k, sa.func.count()).select_from(t).where(cond).group_by(k).order_by(k).limit(cap + 1)
    rows = [(int(a), int(n)) for a, n in _execute(conn, q, kt)]
    hist.queries += 1
    if len(rows) > cap:  # not really a handful: leave the buckets as they are
        hist.outliers = [a for a, _ in rows[:cap]]
        return hist
    keep = [bk for i, bk in enumerate(hist.buckets) if i not in set(idx)]
    keep += [Bucket(a, a + 1, n, a, a, True) for a, n in rows]
    keep.sort(key=lambda bk: bk.min_key)
    hist.buckets = keep
    hist.total_rows = sum(bk.count for bk in keep)
    hist.outliers = [a for a, _ in rows]
    return hist


def tail_histogram(
    conn: Connection, kt: KeyTable, old: Histogram, new_max: int, *, rows_per_query: int
) -> Histogram:
    """``old`` plus an exact scan of only ``[old.max_key + 1, new_max]`` (the max key grew, min did not)."""
    assert old.max_key is not None and new_max > old.max_key
    tail = exact_histogram(
        conn, kt, rows_per_query=rows_per_query, min_key=old.max_key + 1, max_key=new_max, known_count=None,
        row_estimate=max(1, old.total_rows * (new_max - old.max_key) // max(1, old.max_key - old.min_key + 1)),
    )
    head = list(old.buckets)
    if head and head[-1].hi > old.max_key + 1:  # grid cell reaching into the new tail: cut it at the old max
        last = head[-1]
        head[-1] = Bucket(last.lo, old.max_key + 1, last.count, last.min_key, last.max_key, last.exact)
    buckets = head + [bk for bk in tail.buckets if bk.min_key > old.max_key]
    return Histogram(
        method=old.method,
        buckets=buckets,
        min_key=old.min_key,
        max_key=new_max,
        total_rows=sum(bk.count for bk in buckets),
        width=old.width,
        queries=tail.queries,
        exact=old.exact,
        notes=old.notes + [f"tail [{old.max_key + 1}, {new_max}] scanned and appended to the cached histogram"],
        unique_key=old.unique_key,
    )


def _execute(conn: Connection, stmt, kt: KeyTable):
    try:
        return conn.execute(stmt)
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"density pre-scan failed: {short_db_error(exc)}", table=kt.table) from exc


def _int_or_none(v) -> int | None:
    return None if v is None else int(v)
