"""The ``sampled`` density pre-scan: cost grows with the number of ranges, not with the table's rows.

The key span is cut into segments, level by level. Each level costs two statements, whatever the
number of segments (up to a batch limit per statement):

1. **count** — one ``SELECT SUM(CASE WHEN key BETWEEN a AND b THEN 1 ELSE 0 END), … FROM t WHERE
   key BETWEEN a AND b OR …`` counts rows in a few small windows per segment (an index range scan over
   the windows only). Densities measured in the windows give each segment an estimated row count.
   A segment whose estimate is at most a quarter of ``rows_per_query`` — or whose windows are all
   full (every key present; it can then be cut anywhere) — becomes a bucket of the histogram.
2. **probe** — the other segments are cut at their window sub-intervals, adjacent light pieces are
   merged (so a piece holds about one leaf's worth of estimated rows), and every piece is snapped to
   its real first and last key with next-key probes ``(SELECT MIN(key) … WHERE key BETWEEN x AND y)``,
   ``(SELECT MAX(key) …)``, all as scalar subqueries of ONE ``SELECT``. A piece with no rows vanishes,
   so an empty stretch of any length costs one probe: gaps are jumped in O(log n) levels.

EXPLAIN row estimates are never used: a window's count is real, and emptiness is only ever concluded
from a probe returning NULL. SQL is rendered with integer literals (``str(int)``) and identifiers
quoted by the dialect, so hundreds of windows never hit a bind-parameter limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sparsesync.errors import SourceError
from sparsesync.source import short_db_error

from .histogram import Bucket, Histogram, KeyTable, min_max_count

DEFAULT_FANOUT = 16
DEFAULT_WINDOW_ROWS = 64
MAX_WINDOWS_PER_STATEMENT = 400
MAX_PROBES_PER_STATEMENT = 200


@dataclass
class _Seg:
    """A stretch ``[a, b]`` whose ends are real keys, with a prior density (rows per key) if known."""

    a: int
    b: int
    prior: float | None
    retries: int = 0

    @property
    def span(self) -> int:
        return self.b - self.a + 1


def sampled_histogram(
    conn: Connection,
    kt: KeyTable,
    *,
    rows_per_query: int,
    row_estimate: int = 0,
    unique_key: bool = True,
    min_key: int | None = None,
    max_key: int | None = None,
    fanout: int = DEFAULT_FANOUT,
    window_rows: int = DEFAULT_WINDOW_ROWS,
    max_levels: int = 40,
) -> Histogram:
    """Estimate the key histogram with windowed counts and next-key probes (see module docstring).

    ``row_estimate`` (engine statistics, may be 0) only sizes the first windows; every count in the
    result comes from real window counts. Buckets are the leaf segments, ``exact`` only where a whole
    segment was counted.
    """
    queries = 0
    if min_key is None or max_key is None:
        min_key, max_key, _ = min_max_count(conn, kt, count=False)
        queries += 1
    if min_key is None:
        return Histogram("sampled", [], None, None, 0, queries=queries, exact=False, unique_key=unique_key)
    leaf_target = max(1, rows_per_query // 4)
    span0 = max_key - min_key + 1
    prior0 = (row_estimate / span0) if row_estimate > 0 else None
    pending = [_Seg(min_key, max_key, prior0)]
    leaves: list[Bucket] = []
    level = 0
    sql = _Sql(conn, kt)
    while pending:
        level += 1
        last_level = level >= max_levels
        # ---- count: windows for every pending segment, in as few statements as possible ----
        layouts = [_layout(seg, fanout, window_rows) for seg in pending]
        windows = [w for lay in layouts for (_, _, w) in lay]
        counts, n = sql.window_counts([(lo, hi) for lo, hi in windows])
        queries += n
        pieces: list[tuple[int, int, float]] = []  # (lo, hi, est) to probe
        retry: list[_Seg] = []
        pos = 0
        for seg, lay in zip(pending, layouts):
            c = counts[pos : pos + len(lay)]
            pos += len(lay)
            if len(lay) == 1 and lay[0][2] == (seg.a, seg.b):  # the whole segment was counted
                total = c[0]
                if total <= leaf_target or seg.span <= 1 or last_level:
                    leaves.append(Bucket(seg.a, seg.b + 1, total, seg.a, seg.b, True))
                else:  # heavier than the prior said: split it with what we now know
                    pieces += _pieces(seg, lay, c, leaf_target)
                continue
            hits = sum(c)
            covered = sum(w[1] - w[0] + 1 for _, _, w in lay)
            if hits < len(lay) and covered < seg.span and seg.retries < 3 and not last_level:
                # Too few rows in the windows to say anything: widen them to the density they suggest.
                retry.append(_Seg(seg.a, seg.b, max(hits, 0.5) / covered, seg.retries + 1))
                continue
            est, full = _estimate(seg, lay, c, unique_key)
            if est <= leaf_target or full or last_level or seg.span <= fanout:
                leaves.append(Bucket(seg.a, seg.b + 1, max(1, round(est)), seg.a, seg.b, False))
            else:
                pieces += _pieces(seg, lay, c, leaf_target)
        # ---- probe: snap every piece to its real first/last key; empty pieces vanish ----
        snapped, n = sql.snap([(lo, hi) for lo, hi, _ in pieces])
        queries += n
        pending = retry
        for (lo, hi, est), ends in zip(pieces, snapped):
            if ends is None:
                continue
            a, b = ends
            pending.append(_Seg(a, b, (est / (hi - lo + 1)) if est > 0 else None))
    leaves.sort(key=lambda bk: bk.min_key)
    total = sum(bk.count for bk in leaves)
    return Histogram(
        method="sampled",
        buckets=leaves,
        min_key=min_key,
        max_key=max_key,
        total_rows=total,
        width=None,
        queries=queries,
        exact=all(bk.exact for bk in leaves),
        notes=[f"sampled: {level} level(s), fanout {fanout}, ~{window_rows} rows per window"],
        unique_key=unique_key,
    )


def _layout(seg: _Seg, fanout: int, window_rows: int) -> list[tuple[int, int, tuple[int, int]]]:
    """Sub-intervals ``(lo, hi)`` of ``seg`` with one centred window each, or one window = the segment."""
    density = seg.prior if seg.prior and seg.prior > 0 else 1.0
    if seg.span * density <= fanout * window_rows or seg.span <= fanout:
        return [(seg.a, seg.b, (seg.a, seg.b))]
    width = max(1, int(window_rows / density))
    out = []
    for i in range(fanout):
        lo = seg.a + seg.span * i // fanout
        hi = seg.a + seg.span * (i + 1) // fanout - 1
        sub = hi - lo + 1
        w = min(width, sub)
        start = lo + (sub - w) // 2
        out.append((lo, hi, (start, start + w - 1)))
    return out


def _estimate(seg: _Seg, lay, counts: list[int], unique_key: bool) -> tuple[float, bool]:
    """Rows in ``seg`` from window densities; ``full`` when every window had every key."""
    est = 0.0
    full = unique_key
    for (lo, hi, (wlo, whi)), c in zip(lay, counts):
        wn = whi - wlo + 1
        est += c / wn * (hi - lo + 1)
        full = full and c >= wn
    floor = 1 if seg.a == seg.b else 2  # both ends are real keys
    if full:
        return float(seg.span), True
    est = max(est, floor)
    if unique_key:
        est = min(est, seg.span)
    return est, False


def _pieces(seg: _Seg, lay, counts: list[int], leaf_target: int) -> list[tuple[int, int, float]]:
    """Cut ``seg`` at its sub-intervals, merging adjacent light ones up to ``leaf_target`` estimated rows."""
    subs = []
    for (lo, hi, (wlo, whi)), c in zip(lay, counts):
        if len(lay) == 1:  # counted whole: cut into halves of known total (density unknown inside)
            mid = lo + (hi - lo) // 2
            return [(lo, mid, c / 2), (mid + 1, hi, c / 2)]
        subs.append((lo, hi, c / (whi - wlo + 1) * (hi - lo + 1)))
    out: list[list] = []
    for lo, hi, est in subs:
        if out and out[-1][2] + est <= leaf_target:
            out[-1][1] = hi
            out[-1][2] += est
        else:
            out.append([lo, hi, est])
    return [tuple(p) for p in out]


class _Sql:
    """Renders and runs the batched window-count and probe statements."""

    def __init__(self, conn: Connection, kt: KeyTable) -> None:
        prep = conn.dialect.identifier_preparer
        self.conn = conn
        self.kt = kt
        self.table = (prep.quote_schema(kt.schema) + "." if kt.schema else "") + prep.quote(kt.table)
        self.key = prep.quote(kt.key)

    def _run(self, text: str):
        try:
            return self.conn.exec_driver_sql(text).one()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"sampled pre-scan failed: {short_db_error(exc)}", table=self.kt.table) from exc

    def window_counts(self, windows: list[tuple[int, int]]) -> tuple[list[int], int]:
        """Row count of each inclusive window; (counts, statements issued)."""
        out: list[int] = []
        n = 0
        for i in range(0, len(windows), MAX_WINDOWS_PER_STATEMENT):
            chunk = windows[i : i + MAX_WINDOWS_PER_STATEMENT]
            conds = [f"{self.key} BETWEEN {int(lo)} AND {int(hi)}" for lo, hi in chunk]
            cols = ", ".join(f"SUM(CASE WHEN {c} THEN 1 ELSE 0 END)" for c in conds)
            row = self._run(f"SELECT {cols} FROM {self.table} WHERE {' OR '.join(conds)}")
            out += [int(v or 0) for v in row]
            n += 1
        return out, n

    def snap(self, pieces: list[tuple[int, int]]) -> tuple[list[tuple[int, int] | None], int]:
        """Real (first, last) key inside each inclusive piece, or None when it holds no row."""
        out: list[tuple[int, int] | None] = []
        n = 0
        for i in range(0, len(pieces), MAX_PROBES_PER_STATEMENT):
            chunk = pieces[i : i + MAX_PROBES_PER_STATEMENT]
            cols = []
            for lo, hi in chunk:
                where = f"FROM {self.table} WHERE {self.key} BETWEEN {int(lo)} AND {int(hi)}"
                cols.append(f"(SELECT MIN({self.key}) {where})")
                cols.append(f"(SELECT MAX({self.key}) {where})")
            row = self._run("SELECT " + ", ".join(cols))
            for j in range(len(chunk)):
                a, b = row[2 * j], row[2 * j + 1]
                out.append(None if a is None else (int(a), int(b)))
            n += 1
        return out, n
