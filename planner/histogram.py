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
    if conn.dialect.name == "sqlite":
        return key_col / sa.literal(width, sa.Integer)  # integer / integer truncates in SQLite
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
    q = q.group_by("b")
    out = []
    for qv, n, mn, mx in _execute(conn, q, kt):
        lo, hi = grid_interval(int(qv), width)
        out.append(Bucket(lo=lo, hi=hi, count=int(n), min_key=int(mn), max_key=int(mx)))
    if windows:
        out = [_clip(bk, windows) for bk in out]
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

    A bucket is heavy when it holds more than a quarter of ``rows_per_query``: a range is then assembled
    from several buckets, so ranges come out at least ~75 % full. Refinement narrows only the heavy
    buckets' real ``[min, max]``, in one query per round, so a handful of outliers near 2^63 costs a
    few rows of result, never billions of buckets.
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
    heavy_limit = max(1, rows_per_query // 4)
    for _ in range(max_rounds):
        heavy = [bk for bk in buckets if bk.count > heavy_limit and bk.max_key > bk.min_key]
        if not heavy:
            break
        need = max(bk.count for bk in heavy)
        sub_width = min(
            choose_width(bk.max_key - bk.min_key + 1, max(2, 8 * need // heavy_limit)) for bk in heavy
        )
        if sub_width >= width and width == 1:
            break
        width = sub_width
        windows = [(bk.min_key, bk.max_key) for bk in heavy]
        finer = group_by_buckets(conn, kt, width, windows)
        queries += 1
        heavy_ids = {id(bk) for bk in heavy}
        buckets = sorted([bk for bk in buckets if id(bk) not in heavy_ids] + finer, key=lambda bk: bk.min_key)
    total = sum(bk.count for bk in buckets)
    return Histogram("exact", buckets, min_key, max_key, total, width=width, queries=queries, exact=True)


def _execute(conn: Connection, stmt, kt: KeyTable):
    try:
        return conn.execute(stmt)
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"density pre-scan failed: {short_db_error(exc)}", table=kt.table) from exc


def _int_or_none(v) -> int | None:
    return None if v is None else int(v)
