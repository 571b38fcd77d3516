"""The ``sampled`` density pre-scan: cost grows with the number of ranges, not with the table's rows.

The key span is cut into segments, level by level; each level is ONE statement (split into a few
when it would hold more than :data:`MAX_SUBS_PER_STATEMENT` sub-intervals), whatever the number of
segments. Every pending segment ``[a, b]`` (ends are real keys) is cut into ``fanout`` equal
sub-intervals, and for each sub-interval ``[lo, hi]`` the statement reads (one ``UNION ALL`` branch of
scalar subqueries per sub-interval):

* ``(SELECT MIN(key) … WHERE key BETWEEN lo AND hi)`` and ``(SELECT MAX(key) …)`` — next-key probes that
  snap the sub-interval to its real first and last key; NULL means empty, so an empty stretch of any
  length costs one probe and gaps are jumped in O(log n) levels;
* ``(SELECT COUNT(*) FROM (SELECT key … WHERE key BETWEEN lo AND hi ORDER BY key LIMIT m))`` and the
  m-th key ``(… ORDER BY key LIMIT 1 OFFSET m-1)`` — a count over a small sub-window that adapts to any
  density at a cost of at most ``m`` index entries: fewer than ``m`` rows means the sub-interval's count
  is exact; otherwise ``m`` keys over ``(m-th − first + 1)`` keys is its local density.

Sub-intervals become children (adjacent light ones merged up to a quarter of ``rows_per_query``
estimated rows — a split at estimated row quantiles, snapped to real keys). A child with an exact
count, or a segment whose every sample shows every key present (dense: it can be cut at any key
later), becomes buckets at once; a child light enough gets one last level whose sub-intervals become
the histogram's buckets (so every estimate rests on ``fanout`` samples); heavier children recurse.

EXPLAIN row estimates are never used: every count is real, and emptiness is only concluded from a
probe returning NULL. SQL is rendered with integer literals (``str(int)``) and identifiers quoted by the
dialect, so hundreds of sub-intervals never hit a bind-parameter limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sparsesync.errors import SourceError
from sparsesync.source import quoted_table, short_db_error

from .histogram import Bucket, Histogram, KeyTable, min_max_count

DEFAULT_FANOUT = 16
FINAL_FANOUT = 8
DEFAULT_SAMPLE_KEYS = 64
# Sub-intervals per statement. One UNION ALL branch each: MariaDB plans that in linear time (a single
# SELECT list of scalar subqueries grows quadratically: 640 sub-intervals took 2 s), and SQLite caps a
# compound SELECT at 500 terms.
MAX_SUBS_PER_STATEMENT = 1024
MAX_SUBS_PER_STATEMENT_SQLITE = 400


@dataclass
class _Seg:
    """A stretch ``[a, b]`` whose ends are real keys; ``final``: its sub-intervals become buckets."""

    a: int
    b: int
    final: bool = False


@dataclass(frozen=True)
class _Sub:
    """What one statement learnt about a sub-interval: real ends and an estimated row count."""

    first: int
    last: int
    est: float
    exact: bool
    looks_full: bool

    @property
    def span(self) -> int:
        return self.last - self.first + 1


def sampled_histogram(
    conn: Connection,
    kt: KeyTable,
    *,
    rows_per_query: int,
    unique_key: bool = True,
    min_key: int | None = None,
    max_key: int | None = None,
    fanout: int = DEFAULT_FANOUT,
    sample_keys: int = DEFAULT_SAMPLE_KEYS,
    max_levels: int = 40,
) -> Histogram:
    """Estimate the key histogram with bounded sub-window counts and next-key probes (module docstring).

    Buckets carry real first/last keys; ``exact`` only where a sub-interval held fewer than
    ``sample_keys`` rows and was therefore counted whole.
    """
    queries = 0
    if min_key is None or max_key is None:
        min_key, max_key, _ = min_max_count(conn, kt, count=False)
        queries += 1
    if min_key is None:
        return Histogram("sampled", [], None, None, 0, queries=queries, exact=False, unique_key=unique_key)
    leaf_target = max(1, rows_per_query // 4)
    pending = [_Seg(min_key, max_key)]
    buckets: list[Bucket] = []
    level = 0
    sql = _Sql(conn, kt, sample_keys)
    while pending:
        level += 1
        if level >= max_levels:
            for seg in pending:
                seg.final = True
        layouts = [_split(seg, FINAL_FANOUT if seg.final else fanout) for seg in pending]
        measured, n = sql.measure([iv for lay in layouts for iv in lay], unique_key)
        queries += n
        nxt: list[_Seg] = []
        pos = 0
        for seg, lay in zip(pending, layouts):
            subs = [s for s in measured[pos : pos + len(lay)] if s is not None]
            pos += len(lay)
            if seg.final or _all_full(subs):
                buckets += [_bucket(s, full=not seg.final or s.looks_full) for s in subs]
                continue
            for group in _merge(subs, leaf_target):
                if all(s.exact for s in group):
                    buckets += [_bucket(s) for s in group]
                    continue
                est = sum(s.est for s in group)
                a, b = group[0].first, group[-1].last
                if b - a + 1 <= fanout:  # too narrow to split further: keep the samples as buckets
                    buckets += [_bucket(s) for s in group]
                else:
                    nxt.append(_Seg(a, b, final=est <= leaf_target))
        pending = nxt
    buckets.sort(key=lambda bk: bk.min_key)
    return Histogram(
        method="sampled",
        buckets=buckets,
        min_key=min_key,
        max_key=max_key,
        total_rows=sum(bk.count for bk in buckets),
        width=None,
        queries=queries,
        exact=all(bk.exact for bk in buckets),
        notes=[f"sampled: {level} level(s), fanout {fanout}, {sample_keys}-key samples"],
        unique_key=unique_key,
    )


def _split(seg: _Seg, fanout: int) -> list[tuple[int, int]]:
    """``seg`` cut into at most ``fanout`` equal inclusive sub-intervals."""
    span = seg.b - seg.a + 1
    out = []
    for i in range(fanout):
        lo = seg.a + span * i // fanout
        hi = seg.a + span * (i + 1) // fanout - 1
        if hi >= lo:
            out.append((lo, hi))
    return out


def _all_full(subs: list[_Sub]) -> bool:
    """Every sample dense and the sub-intervals touching: the segment is (as far as seen) all keys."""
    return bool(subs) and all(s.looks_full for s in subs) and all(
        x.last + 1 == y.first for x, y in zip(subs, subs[1:])
    )


def _bucket(s: _Sub, full: bool = False) -> Bucket:
    count = s.span if full and s.looks_full else max(1, round(s.est))
    return Bucket(s.first, s.last + 1, count, s.first, s.last, s.exact)


def _merge(subs: list[_Sub], leaf_target: int) -> list[list[_Sub]]:
    """Adjacent sub-intervals merged while their estimated rows stay ≤ ``leaf_target``.

    Sub-intervals separated by an empty one are never merged, so gaps found by the probes stay gaps.
    """
    out: list[list[_Sub]] = []
    rows = 0.0
    for s in subs:
        touching = bool(out) and not _gap_between(out[-1][-1], s)
        if out and touching and rows + s.est <= leaf_target:
            out[-1].append(s)
            rows += s.est
        else:
            out.append([s])
            rows = s.est
    return out


def _gap_between(x: _Sub, y: _Sub) -> bool:
    # Neighbouring sub-intervals were adjacent before snapping; a vanished one between them shows as a
    # jump far larger than either's own span.
    return y.first - x.last - 1 > max(x.span, y.span)


class _Sql:
    """Renders and runs the batched sampling statements."""

    def __init__(self, conn: Connection, kt: KeyTable, m: int) -> None:
        self.m = m
        prep = conn.dialect.identifier_preparer
        self.conn = conn
        self.kt = kt
        self.table = quoted_table(conn.dialect, kt.table, kt.schema)
        self.key = prep.quote(kt.key)

    def _run(self, text: str):
        try:
            return self.conn.exec_driver_sql(text).all()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"sampled pre-scan failed: {short_db_error(exc)}", table=self.kt.table) from exc

    def measure(self, subs: list[tuple[int, int]], unique_key: bool) -> tuple[list[_Sub | None], int]:
        """First/last key, bounded count and m-th key of every sub-interval; (results, statements)."""
        m = self.m
        out: list[_Sub | None] = []
        n = 0
        per = MAX_SUBS_PER_STATEMENT if self.conn.dialect.name in ("mysql", "mariadb") else MAX_SUBS_PER_STATEMENT_SQLITE
        for i in range(0, len(subs), per):
            chunk = subs[i : i + per]
            branches = []
            for j, (lo, hi) in enumerate(chunk):
                where = f"FROM {self.table} WHERE {self.key} BETWEEN {int(lo)} AND {int(hi)}"
                branches.append(
                    f"SELECT {j} AS j, (SELECT MIN({self.key}) {where}) AS a, (SELECT MAX({self.key}) {where}) AS b, "
                    f"(SELECT COUNT(*) FROM (SELECT {self.key} {where} ORDER BY {self.key} LIMIT {m}) s) AS c, "
                    f"(SELECT {self.key} {where} ORDER BY {self.key} LIMIT 1 OFFSET {m - 1}) AS d"
                )
            rows = sorted(self._run(" UNION ALL ".join(branches)), key=lambda r: int(r[0]))
            n += 1
            for _, first, last, cnt, mth in rows:
                if first is None:
                    out.append(None)
                    continue
                first, last, cnt = int(first), int(last), int(cnt)
                span = last - first + 1
                if mth is None or cnt < m:  # fewer than m rows: counted whole
                    out.append(_Sub(first, last, float(cnt), True, unique_key and cnt == span))
                    continue
                dense_span = int(mth) - first + 1
                est = m / dense_span * span
                if unique_key:
                    est = min(est, span)
                out.append(_Sub(first, last, max(est, float(m)), False, unique_key and dense_span == m))
        return out, n
