"""Density histograms of a table's key: which stretches of key space hold how many rows.

A :class:`Histogram` is a sorted list of non-empty :class:`Bucket` s. Each bucket knows its grid
interval ``[lo, hi)``, its row count and its real min/max key, so partition boundaries can sit on real
keys and stretches with no rows cost nothing.

The ``exact`` pre-scan is one ``GROUP BY key DIV width`` pass over the key index (plus, where
buckets are too heavy to place boundaries in, refinement passes over only their rows). Widths are
powers of two, so every finer grid nests in the coarser one. ``key DIV width`` cannot overflow for any
signed or unsigned 64-bit key, unlike ``(key - base) DIV width``; its truncation toward zero only makes
bucket 0 twice as wide, which the grid arithmetic below accounts for.
"""

from __future__ import annotations

import bisect
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
    """One ``GROUP BY key DIV width`` pass, optionally restricted to inclusive key windows.

    The windows are OR-ed ``BETWEEN`` predicates on the key: the server reads only their index
    entries. Callers keep a statement to :func:`windows_per_statement` windows (SQLite's expression
    depth limit) and make every window lie inside one grid cell of a coarser power-of-two grid, so a
    ``width`` cell never straddles two windows (see :func:`refine`).
    """
    t = kt.sa_table()
    k = t.c[kt.key]
    b = bucket_expr(conn, k, width).label("b")
    q = sa.select(b, sa.func.count().label("n"), sa.func.min(k).label("mn"), sa.func.max(k).label("mx")).select_from(t)
    if windows:
        q = q.where(sa.or_(*[k.between(sa.literal(lo, sa.BigInteger), sa.literal(hi, sa.BigInteger)) for lo, hi in windows]))
    else:
        # NULL keys form no bucket: a nullable key's NULL rows are counted apart (the plan's `nulls` range).
        q = q.where(k.is_not(None))
    # Positional, not by label: MySQL and SQLite resolve a GROUP BY name to a table column first, so a
    # table with a column named like the label would be grouped by that column instead.
    q = q.group_by(sa.text("1"))
    out = []
    for qv, n, mn, mx in _execute(conn, q, kt):
        lo, hi = grid_interval(int(qv), width)
        out.append(Bucket(lo=lo, hi=hi, count=int(n), min_key=int(mn), max_key=int(mx)))
    out.sort(key=lambda bk: bk.min_key)
    return out


def windows_per_statement(conn: Connection) -> int:
    """Key windows OR-ed into one statement: SQLite parses ``a OR b OR …`` into a tree as deep as the
    number of terms and refuses depth 1000; MariaDB's range optimizer takes a thousand ranges easily."""
    return 1000 if is_mysql(conn) else 200


def pow2_at_least(n: int) -> int:
    """The smallest power of two ≥ ``n`` (≥ 1)."""
    return 1 << max(0, (max(1, n) - 1).bit_length())


def grid_width(bk: Bucket) -> int:
    """The power-of-two grid width the bucket's cell came from (cell 0 is ``2w − 1`` wide)."""
    return 1 << max(0, (bk.hi - bk.lo).bit_length() - 1)


def refine(
    conn: Connection, kt: KeyTable, heavy: list[Bucket], heavy_limit: int
) -> tuple[list[Bucket], int]:
    """Re-count ``heavy`` buckets on finer grids; returns (finer buckets, statements).

    Each bucket's real ``[min, max]`` is re-grouped at a power-of-two width that cuts it into pieces
    of about half ``heavy_limit`` rows (at most half its own width). Windows sharing a width go into
    one ``GROUP BY key DIV w`` with OR-ed ``BETWEEN`` s, at most :func:`windows_per_statement` per
    statement, so the server reads only the rows of the refined windows and the statement size is
    bounded whatever the number of buckets. Widths are powers of two dividing the parent's, so every
    finer cell lies in exactly one parent cell, hence in at most one window.
    """
    by_width: dict[int, list[Bucket]] = {}
    for bk in heavy:
        pieces = max(2, 2 * bk.count // max(1, heavy_limit))
        w = min(pow2_at_least(-(-bk.core // pieces)), max(1, grid_width(bk) // 2))
        by_width.setdefault(w, []).append(bk)
    per = windows_per_statement(conn)
    out: list[Bucket] = []
    statements = 0
    for w, group in sorted(by_width.items()):
        group.sort(key=lambda bk: bk.min_key)
        for i in range(0, len(group), per):
            chunk = group[i : i + per]
            starts = [bk.min_key for bk in chunk]
            for fb in group_by_buckets(conn, kt, w, [(bk.min_key, bk.max_key) for bk in chunk]):
                parent = chunk[bisect.bisect_right(starts, fb.min_key) - 1]
                out.append(Bucket(max(fb.lo, parent.lo), min(fb.hi, parent.hi), fb.count, fb.min_key, fb.max_key))
            statements += 1
    return out, statements


def is_heavy(bk: Bucket, heavy_limit: int, unique_key: bool) -> bool:
    """Too many rows to place boundaries between, yet cuttable: more than one key value, and not a
    fully dense stretch of a unique key (which partition cuts at any key)."""
    return bk.count > heavy_limit and bk.max_key > bk.min_key and not (unique_key and bk.full)


MAX_FIRST_PASS_BUCKETS = 200_000


def first_pass_width(span: int, est_rows: int, heavy_limit: int, unique_key: bool, occupied: int | None = None) -> int:
    """Grid width of the first ``GROUP BY`` pass (a power of two).

    On a unique key a cell no wider than ``heavy_limit`` keys can never be heavy, so no refinement
    pass re-reads any row: used whenever the non-empty cells it yields (at most the rows, at most the
    ``occupied`` keys — the span without its empty stretches, see :func:`occupied_keys` — / width) stay
    under :data:`MAX_FIRST_PASS_BUCKETS`. Otherwise about 16 cells per range, so random keys rarely
    exceed the heavy limit; clustered keys are refined (their rows read again).
    """
    safe = 1 << max(0, heavy_limit.bit_length() - 1)  # largest power of two ≤ heavy_limit
    keys = span if occupied is None else min(span, occupied)
    cells = keys // safe if est_rows <= 0 else min(est_rows, keys // safe)
    if unique_key and cells <= MAX_FIRST_PASS_BUCKETS:
        return safe
    target = int(min(MAX_FIRST_PASS_BUCKETS, max(1024, 2 * max(est_rows, 1) // max(1, heavy_limit))))
    return pow2_at_least(-(-span // target))


OCCUPIED_PROBES = 256


def occupied_keys(conn: Connection, kt: KeyTable, lo: int, hi: int, parts: int = OCCUPIED_PROBES) -> tuple[int, int]:
    """(keys between the first and last real key of each of ``parts`` equal slices of ``[lo, hi]``,
    statements): one statement of ``2 × parts`` next-key probes (index dives, no scan). Outlier ids or
    far-apart bursts make the span huge but leave this small, so the one-pass width still fits."""
    t = kt.sa_table()
    k = t.c[kt.key]
    span = hi - lo + 1
    branches = []
    for i in range(parts):
        a, b = lo + span * i // parts, lo + span * (i + 1) // parts - 1
        if b < a:
            continue
        cond = k.between(sa.literal(a, sa.BigInteger), sa.literal(b, sa.BigInteger))
        branches.append(
            sa.select(
                sa.select(sa.func.min(k)).where(cond).scalar_subquery(),
                sa.select(sa.func.max(k)).where(cond).scalar_subquery(),
            )
        )
    total = 0
    for mn, mx in _execute(conn, sa.union_all(*branches), kt):
        if mn is not None:
            total += int(mx) - int(mn) + 1
    return total, 1


def exact_histogram(
    conn: Connection,
    kt: KeyTable,
    *,
    rows_per_query: int,
    row_estimate: int = 0,
    min_key: int | None = None,
    max_key: int | None = None,
    known_count: int | None = None,
    unique_key: bool = True,
    whole_table: bool = True,
    max_rounds: int = 64,
) -> Histogram:
    """Exact counts: one GROUP BY pass over the key index, then refine buckets too heavy to cut between.

    The total row count is the sum of that pass's counts, so the table is read once (MIN/MAX come
    from the index ends). A bucket is heavy when it holds more than an eighth of ``rows_per_query``
    and :func:`is_heavy`: a range is then assembled from several buckets, so ranges come out at
    least ~87 % full. Refinement (:func:`refine`) reads only the heavy buckets' rows again, so its
    cost is the rows in refined windows; on a non-unique key it narrows down to single key values,
    whose counts are exact and which partition labels ``heavy`` when they exceed a range.
    ``whole_table=False`` scans only ``[min_key, max_key]`` (a cached histogram's new tail).
    """
    queries = 0
    if min_key is None or max_key is None:
        min_key, max_key, _ = min_max_count(conn, kt, count=False)
        queries += 1
    if min_key is None:
        return Histogram("exact", [], None, None, 0, queries=queries, unique_key=unique_key)
    est = known_count if known_count is not None else row_estimate
    span = max_key - min_key + 1
    heavy_limit = max(1, rows_per_query // 8)
    width = first_pass_width(span, est, heavy_limit, unique_key)
    if unique_key and width > heavy_limit:  # the span says "too many cells"; the occupied keys may not
        occupied, n = occupied_keys(conn, kt, min_key, max_key)
        queries += n
        width = first_pass_width(span, est, heavy_limit, unique_key, occupied)
    # The whole table needs no WHERE: the server may then scan its smallest covering index.
    buckets = group_by_buckets(conn, kt, width, None if whole_table else [(min_key, max_key)])
    if not whole_table:  # cells reach past the window; keep them inside it (still power-of-two cells)
        buckets = [Bucket(max(bk.lo, min_key), min(bk.hi, max_key + 1), bk.count, bk.min_key, bk.max_key) for bk in buckets]
    queries += 1
    for _ in range(max_rounds):
        heavy = [bk for bk in buckets if is_heavy(bk, heavy_limit, unique_key)]
        if not heavy:
            break
        finer, n = refine(conn, kt, heavy, heavy_limit)
        queries += n
        width = min([width] + [grid_width(bk) for bk in finer])
        heavy_ids = {id(bk) for bk in heavy}
        buckets = sorted([bk for bk in buckets if id(bk) not in heavy_ids] + finer, key=lambda bk: bk.min_key)
    total = sum(bk.count for bk in buckets)
    return Histogram(
        "exact", buckets, min_key, max_key, total, width=width, queries=queries, exact=True, unique_key=unique_key
    )


def resolve_outliers(conn: Connection, kt: KeyTable, hist: Histogram, *, cap: int = 1000) -> Histogram:
    """List the outlier keys (see :func:`sparsesync.planner.partition.outlier_buckets`) in ``hist.outliers``.

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
        unique_key=old.unique_key, whole_table=False,
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
