"""The end-of-run ``COUNT(*)`` check against the source, split over two connections.

Ranges read one by one (connectorx, or ``--workers`` > 1) are not in one snapshot, so the executor counts
each range on the source after the whole run, to catch rows lost by a reader and rows the table lost
or gained during the export. On InnoDB each count walks the clustered index of its key range (every
row's page), so the check costs about one more scan of the table: ~0.5 s of a ~4 s run on the issue-11
table (1M rows), with the client idle meanwhile. The counts are all taken after the run, as before,
but the ranges are split into two contiguous halves (by estimated rows) counted on two connections at
once, so the server's second core does half the walk. On one worker they start as soon as the last range
is read, while its group's Parquet file is still closed and committed (``run._EarlyCounts``).

Counting right after each range was read instead would overlap with reading, but would miss a row
deleted from a range already read (tests/executor/test_resume_report.py guards that), so it is not done.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sparsesync.direct import is_direct
from sparsesync.source import is_mysql

from .checksum import Span, SpanChecksum, span_checksums

PARALLEL_COUNTS = 2  # connections; more would only queue on a 2-core server and hold more of its threads
MIN_SPLIT_ROWS = 100_000  # below this the second connection's set-up costs more than it saves


def split_by_rows(spans: list[Span], weights: list[int], parts: int) -> list[list[Span]]:
    """``spans`` cut into at most ``parts`` contiguous, non-empty slices of about equal total ``weights``."""
    total = sum(weights)
    if parts <= 1 or len(spans) <= 1 or total <= 0:
        return [spans]
    out, cur, acc = [], [], 0
    target = total / parts
    for sp, w in zip(spans, weights):
        cur.append(sp)
        acc += w
        if acc >= target * (len(out) + 1) and len(out) < parts - 1:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _pool_size(engine) -> int:
    """Connections the engine may keep open at once. A sync under ``--connections`` hands the executor an
    engine whose pool is its table's share of the budget (sync.budget): with one slot, a second counting
    connection would wait for the first one's slot, which its idle pooled connection never gives back."""
    if is_direct(engine):  # execute's own source, outside any budget: a connection per thread
        return PARALLEL_COUNTS
    size = getattr(engine.pool, "size", None)
    return size() if callable(size) else PARALLEL_COUNTS


def after_run_counts(engine, plan, spans: list[Span], *, min_split_rows: int = MIN_SPLIT_ROWS) -> list[SpanChecksum]:
    """``COUNT(*)`` per span, in order, taken now; MySQL/MariaDB tables of ≥ ``min_split_rows`` planned
    rows are counted on :data:`PARALLEL_COUNTS` connections at once (one statement per span, as before)."""
    weights = [r.est_rows for r in plan.ranges] + [0] * (len(spans) - len(plan.ranges))
    def count(part: list[Span]) -> list[SpanChecksum]:
        return span_checksums(engine, plan, part, counts_only=True)

    if not is_mysql(engine) or sum(weights) < min_split_rows or _pool_size(engine) < PARALLEL_COUNTS:
        return count(spans)
    slices = split_by_rows(spans, weights[:len(spans)], PARALLEL_COUNTS)
    if len(slices) == 1:
        return count(spans)
    with ThreadPoolExecutor(max_workers=len(slices), thread_name_prefix="sparsesync-count") as pool:
        futures = [pool.submit(count, part) for part in slices]
        return [c for f in futures for c in f.result()]


__all__ = ["after_run_counts", "split_by_rows"]
