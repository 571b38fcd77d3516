"""The ``sampled`` density pre-scan: cost grows with the number of ranges, not with the table's rows.

The key span is cut into segments, level by level; each level is ONE statement (split into a few
when it would hold more than :data:`MAX_SUBS_PER_STATEMENT` sub-intervals), whatever the number of
segments. Every pending segment ``[a, b]`` (ends are real keys) is cut into ``fanout`` equal
sub-intervals, and for each sub-interval ``[lo, hi]`` the statement reads (one ``UNION ALL`` branch of
scalar subqueries per sub-interval):

* ``MIN(key)`` and ``MAX(key)`` in ``[lo, hi]`` — next-key probes that snap the sub-interval to its real
  first and last key; NULL means empty, so an empty stretch of any length costs one probe and gaps are
  jumped in O(log n) levels;
* a count capped at ``2m`` rows (``COUNT(*)`` over ``… ORDER BY key LIMIT 2m``): fewer means the
  sub-interval is counted whole;
* the ``m``-th key from each end (``LIMIT 1 OFFSET m-1``, ascending and descending): the density of
  the first and of the last ``m`` rows, at a cost of at most ``m`` index entries per end.

A sub-interval whose two densities agree within :data:`MIXED_RATIO` is estimated from them (the ``2m``
sampled rows plus the middle at their mean density). One whose densities disagree — a burst after
sparse keys, a heavily repeated key value — is *mixed*: it is never merged or extrapolated but split
again at the next level, until its pieces agree or are counted whole. A single key value with ``2m`` rows
or more gets an exact ``COUNT(*)`` (its rows must be read to be counted; partition labels it ``heavy``
when it exceeds a range).

Sub-intervals become children (adjacent light ones merged up to a quarter of ``rows_per_query``
estimated rows — a split at estimated row quantiles, snapped to real keys). A child with an exact
count, or a segment whose every sample shows every key present (dense: it can be cut at any key
later), becomes buckets at once; a child light enough gets one last level whose sub-intervals become
the histogram's buckets (so every estimate rests on ``fanout`` samples); heavier children recurse.

What sampling cannot see: a burst strictly inside a sub-interval whose two ends both hold ``m`` rows or
more at a lower density. The sub-intervals of the last level hold about ``rows_per_query / 32``
estimated rows, so that takes a burst narrower than 1/8 of a range's keys in the middle of a sparse
stretch; ``--density exact`` counts every row.

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
# Local densities of one sub-interval further apart than this factor: it is split, not extrapolated.
MIXED_RATIO = 2.0


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
    mixed: bool = False  # its local densities disagree: split it, never extrapolate it

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

    Buckets carry real first/last keys; ``exact`` where a sub-interval held fewer than ``2 ×
    sample_keys`` rows and was therefore counted whole, or is one key value counted with ``COUNT(*)``.
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
    single: list[int] = []  # one key value with 2m rows or more: counted exactly at the end
    level = 0
    sql = _Sql(conn, kt, sample_keys)
    while pending:
        level += 1
        last_level = level >= max_levels
        layouts = [_split(seg, FINAL_FANOUT if seg.final else fanout) for seg in pending]
        measured, n = sql.measure([iv for lay in layouts for iv in lay], unique_key)
        queries += n
        nxt: list[_Seg] = []
        pos = 0
        for seg, lay in zip(pending, layouts):
            subs = [s for s in measured[pos : pos + len(lay)] if s is not None]
            pos += len(lay)
            if not seg.final and _all_full(subs):
                buckets += [_bucket(s, full=True) for s in subs]
                continue
            for group in _merge(subs, leaf_target, mergeable=lambda s: not (s.exact or s.mixed or seg.final)):
                s0 = group[0]
                if len(group) == 1 and s0.exact and (s0.est <= leaf_target or s0.first == s0.last or s0.looks_full):
                    buckets.append(_bucket(s0))
                elif len(group) == 1 and s0.exact and not last_level:
                    nxt.append(_Seg(s0.first, s0.last))  # counted, but too many rows to cut between: split
                elif len(group) == 1 and s0.first == s0.last:
                    single.append(s0.first)
                elif len(group) == 1 and s0.mixed and not last_level:
                    nxt.append(_Seg(s0.first, s0.last))  # density changes inside: look closer
                elif len(group) == 1 and (seg.final or last_level):
                    buckets.append(_bucket(s0, full=s0.looks_full))
                else:
                    est = sum(s.est for s in group)
                    a, b = group[0].first, group[-1].last
                    if b - a + 1 <= fanout:  # too narrow to split further: keep the samples as buckets
                        buckets += [_bucket(s) for s in group]
                    else:
                        nxt.append(_Seg(a, b, final=est <= leaf_target))
        pending = nxt
    if single:
        counted, n = sql.count_keys(single)
        queries += n
        buckets += [Bucket(k, k + 1, c, k, k, True) for k, c in counted]
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
        notes=[f"sampled: {level} level(s), fanout {fanout}, {sample_keys}-key samples at both ends"],
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


def _merge(subs: list[_Sub], leaf_target: int, mergeable=lambda s: True) -> list[list[_Sub]]:
    """Adjacent sub-intervals merged while their estimated rows stay ≤ ``leaf_target``.

    Sub-intervals separated by an empty one are never merged, so gaps found by the probes stay gaps;
    one that is not ``mergeable`` (exact, mixed, or of a last level) stays a group of its own.
    """
    out: list[list[_Sub]] = []
    rows = 0.0
    prev_ok = False
    for s in subs:
        ok = mergeable(s)
        touching = bool(out) and not _gap_between(out[-1][-1], s)
        if out and ok and prev_ok and touching and rows + s.est <= leaf_target:
            out[-1].append(s)
            rows += s.est
        else:
            out.append([s])
            rows = s.est
        prev_ok = ok
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
        """Ends, capped count and the m-th key from each end of every sub-interval; (results, statements)."""
        m = self.m
        out: list[_Sub | None] = []
        n = 0
        per = MAX_SUBS_PER_STATEMENT if self.conn.dialect.name in ("mysql", "mariadb") else MAX_SUBS_PER_STATEMENT_SQLITE
        k = self.key
        for i in range(0, len(subs), per):
            chunk = subs[i : i + per]
            branches = []
            for j, (lo, hi) in enumerate(chunk):
                where = f"FROM {self.table} WHERE {k} BETWEEN {int(lo)} AND {int(hi)}"
                branches.append(
                    f"SELECT {j} AS j, (SELECT MIN({k}) {where}) AS a, (SELECT MAX({k}) {where}) AS b, "
                    f"(SELECT COUNT(*) FROM (SELECT {k} {where} ORDER BY {k} LIMIT {2 * m}) s) AS c, "
                    f"(SELECT {k} {where} ORDER BY {k} LIMIT 1 OFFSET {m - 1}) AS p, "
                    f"(SELECT {k} {where} ORDER BY {k} DESC LIMIT 1 OFFSET {m - 1}) AS s"
                )
            rows = sorted(self._run(" UNION ALL ".join(branches)), key=lambda r: int(r[0]))
            n += 1
            for row in rows:
                out.append(_read_sub(row[1:], m, unique_key))
        return out, n

    def count_keys(self, keys: list[int]) -> tuple[list[tuple[int, int]], int]:
        """Exact ``(key, rows)`` of single key values, a few hundred per statement; (counts, statements)."""
        out: list[tuple[int, int]] = []
        n = 0
        for i in range(0, len(keys), MAX_SUBS_PER_STATEMENT_SQLITE):
            chunk = ", ".join(str(int(v)) for v in keys[i : i + MAX_SUBS_PER_STATEMENT_SQLITE])
            rows = self._run(f"SELECT {self.key}, COUNT(*) FROM {self.table} WHERE {self.key} IN ({chunk}) GROUP BY {self.key}")
            out += [(int(a), int(c)) for a, c in rows]
            n += 1
        return out, n


def _read_sub(row, m: int, unique_key: bool) -> _Sub | None:
    """A :class:`_Sub` from one branch's values (see :meth:`_Sql.measure`)."""
    first, last, cnt, p, q = row
    if first is None:
        return None
    first, last, cnt = int(first), int(last), int(cnt)
    span = last - first + 1
    if cnt < 2 * m or p is None or q is None:  # fewer than 2m rows: counted whole
        return _Sub(first, last, float(cnt), True, unique_key and cnt == span)
    p, q = int(p), int(q)
    head, tail = p - first + 1, last - q + 1  # keys holding the first m and the last m rows
    # Mixed: the two ends' densities disagree (a burst after sparse keys), the samples meet (repeated
    # values hide how many rows lie between them), or, on a non-unique key, one value holds a whole
    # sample (it may be heavy: split down to it and count it).
    mixed = last > first and (
        max(head, tail) > MIXED_RATIO * min(head, tail) or q <= p or (not unique_key and min(head, tail) == 1)
    )
    middle = max(0, q - p - 1)
    est = 2 * m + 2 * m / (head + tail) * middle
    if unique_key:
        est = min(est, span)
    looks_full = unique_key and head + tail == 2 * m
    return _Sub(first, last, max(est, 2.0 * m), False, looks_full, mixed)
