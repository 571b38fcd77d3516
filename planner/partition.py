"""Cut a histogram into contiguous half-open key ranges and group the ranges into files.

Invariants (checked by property tests): ranges are ``[lo, hi)``, contiguous, ordered, and together
cover the whole key domain — range 0 starts at the key type's minimum (so a row inserted below the
planned minimum after planning is still read) and the last range is the open tail
``[planned_max + 1, ∞)``. Every other boundary is a real key (a bucket's min).
"""

from __future__ import annotations

from dataclasses import dataclass

from .histogram import Bucket, Histogram
from .plan import FileGroup, KeyRange, Region

DEFAULT_SPARSE_THRESHOLD = 0.10


@dataclass(frozen=True)
class PartitionResult:
    ranges: tuple[KeyRange, ...]
    files: tuple[FileGroup, ...]


def partition_ranges(
    hist: Histogram,
    rows_per_query: int,
    *,
    domain_min: int,
    sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD,
) -> tuple[KeyRange, ...]:
    """Greedy: add buckets to the current range while its rows stay ≤ ``rows_per_query``."""
    if rows_per_query < 1:
        raise ValueError("rows_per_query must be at least 1")
    if hist.empty:
        return (KeyRange(0, domain_min, None, 0, "tail", hist.exact),)
    groups: list[list[Bucket]] = [[]]
    rows = 0
    for bk in hist.buckets:
        if groups[-1] and rows + bk.count > rows_per_query:
            groups.append([])
            rows = 0
        groups[-1].append(bk)
        rows += bk.count
    ranges: list[KeyRange] = []
    for i, g in enumerate(groups):
        lo = domain_min if i == 0 else g[0].min_key
        hi = groups[i + 1][0].min_key if i + 1 < len(groups) else g[-1].max_key + 1
        ranges.append(_labelled(i, lo, hi, g, sparse_threshold))
    tail_lo = max(hist.max_key + 1, ranges[-1].hi)
    ranges.append(KeyRange(len(ranges), tail_lo, None, 0, "tail", False))
    return tuple(ranges)


def _labelled(i: int, lo: int, hi: int, group: list[Bucket], threshold: float) -> KeyRange:
    rows = sum(b.count for b in group)
    # Density over the stretch that holds rows, so extending range 0 to the type minimum does not
    # make it look empty.
    span = group[-1].max_key - group[0].min_key + 1
    label = "sparse" if rows / span < threshold else "dense"
    return KeyRange(i, lo, hi, rows, label, all(b.exact for b in group))


def group_files(ranges: tuple[KeyRange, ...], bytes_per_row: float, file_size: int) -> tuple[FileGroup, ...]:
    """Consecutive whole ranges per file, each file ≈ ``file_size`` bytes; the tail joins the last file."""
    files: list[list[KeyRange]] = [[]]
    size = 0.0
    for r in ranges:
        est = r.est_rows * bytes_per_row
        if files[-1] and r.hi is not None and size + est > file_size:
            files.append([])
            size = 0.0
        files[-1].append(r)
        size += est
    out = []
    for j, group in enumerate(files):
        rows = sum(r.est_rows for r in group)
        out.append(
            FileGroup(
                index=j,
                name=f"part-{j:05d}.parquet",
                first_range=group[0].index,
                last_range=group[-1].index,
                est_rows=rows,
                est_bytes=int(rows * bytes_per_row),
            )
        )
    return tuple(out)


def sparse_regions(hist: Histogram, threshold: float = DEFAULT_SPARSE_THRESHOLD) -> tuple[Region, ...]:
    """Maximal stretches between real keys whose density is below ``threshold`` (rows per key)."""
    regions: list[Region] = []
    cur: list[Bucket] = []

    def flush() -> None:
        if len(cur) >= 1:
            lo, hi = cur[0].min_key, cur[-1].max_key + 1
            rows = sum(b.count for b in cur)
            if hi - lo > 1 and rows / (hi - lo) < threshold:
                regions.append(Region(lo, hi, rows))
        cur.clear()

    for bk in hist.buckets:
        density = bk.count / max(1, bk.width)
        if density < threshold:
            cur.append(bk)
        else:
            flush()
    flush()
    return tuple(regions)


def gaps(hist: Histogram, min_gap: int) -> tuple[Region, ...]:
    """Empty stretches of at least ``min_gap`` keys between consecutive buckets."""
    out = []
    for a, b in zip(hist.buckets, hist.buckets[1:]):
        if b.min_key - a.max_key - 1 >= min_gap:
            out.append(Region(a.max_key + 1, b.min_key, 0))
    return tuple(out)


def summary_bins(hist: Histogram, max_bins: int = 256) -> tuple[Region, ...]:
    """Merge buckets down to at most ``max_bins`` for the plan's density picture."""
    bks = hist.buckets
    if not bks:
        return ()
    per = -(-len(bks) // max_bins)
    out = []
    for i in range(0, len(bks), per):
        chunk = bks[i : i + per]
        out.append(Region(chunk[0].min_key, chunk[-1].max_key + 1, sum(b.count for b in chunk)))
    return tuple(out)
