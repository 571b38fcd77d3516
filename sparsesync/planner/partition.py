"""Cut a histogram into contiguous half-open key ranges and group the ranges into files.

Invariants (checked by property tests): ranges are ``[lo, hi)``, contiguous, ordered, and together
cover the whole key domain — range 0 starts at the key type's minimum (so a row inserted below the
planned minimum after planning is still read) and the last range is the open tail
``[planned_max + 1, ∞)``. Every other boundary is a real key (a bucket's min).
"""

from __future__ import annotations

import math
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
    """Greedy: add buckets to the current range while its rows stay ≤ ``rows_per_query``.

    A fully dense bucket (every key between its min and max present) is cut inside: any key in it is a
    real key, and for an exact bucket of a unique key the rows on each side are exact. Other buckets are
    indivisible (a boundary inside one would be a guess), which is why the exact pre-scan refines
    heavy buckets until they are small or fully dense.
    """
    if rows_per_query < 1:
        raise ValueError("rows_per_query must be at least 1")
    if hist.empty:
        return (KeyRange(0, domain_min, None, 0, "tail", hist.exact),)
    groups: list[list[_Piece]] = [[]]
    rows = 0
    for bk in hist.buckets:
        piece = _Piece(bk.min_key, bk.max_key, bk.count, bk.exact)
        while piece is not None:
            room = rows_per_query - rows
            if piece.count <= room:
                groups[-1].append(piece)
                rows += piece.count
                piece = None
                continue
            # Only a unique key's fully dense piece can be cut at any key: on a non-unique key a
            # "full" count may be a few heavy values, and a guessed cut would misplace their rows.
            cuttable = room > 0 and hist.unique_key and piece.full
            head, piece = _cut(piece, room, hist.unique_key) if cuttable else (None, piece)
            if head is not None:
                groups[-1].append(head)
                rows += head.count
            if groups[-1]:
                groups.append([])
                rows = 0
            elif head is None:  # an indivisible bucket larger than a whole range: it gets one of its own
                groups[-1].append(piece)
                groups.append([])
                piece = None
    if not groups[-1]:
        groups.pop()
    ranges: list[KeyRange] = []
    for i, g in enumerate(groups):
        lo = domain_min if i == 0 else g[0].lo
        # The last finite range reaches the planned max even if the buckets stop short of it (a max
        # probed after the scan), and the tail starts exactly where it ends: no key falls between.
        hi = groups[i + 1][0].lo if i + 1 < len(groups) else max(g[-1].hi + 1, hist.max_key + 1)
        ranges.append(_labelled(i, lo, hi, g, sparse_threshold, rows_per_query))
    ranges.append(KeyRange(len(ranges), ranges[-1].hi, None, 0, "tail", False))
    return tuple(ranges)


@dataclass(frozen=True)
class _Piece:
    """A bucket, or the part of a fully dense bucket, as ``[lo, hi]`` inclusive real keys."""

    lo: int
    hi: int
    count: int
    exact: bool

    @property
    def full(self) -> bool:
        return self.count >= self.hi - self.lo + 1


def _cut(p: _Piece, rows: int, unique_key: bool) -> tuple[_Piece | None, _Piece]:
    """Split a fully dense piece after about ``rows`` rows; returns (head or None, rest)."""
    span = p.hi - p.lo + 1
    keys = rows * span // p.count  # == rows when count == span
    if keys < 1 or keys >= span:
        return None, p
    head_rows = keys if p.count == span else round(p.count * keys / span)
    exact = p.exact and unique_key and p.count == span
    return _Piece(p.lo, p.lo + keys - 1, head_rows, exact), _Piece(p.lo + keys, p.hi, p.count - head_rows, exact)


def _labelled(i: int, lo: int, hi: int, group: list[_Piece], threshold: float, rows_per_query: int) -> KeyRange:
    rows = sum(b.count for b in group)
    if len(group) == 1 and group[0].lo == group[0].hi and rows > rows_per_query:
        # One key value holds more than a range: no boundary can split it, so say so, with the value.
        return KeyRange(i, lo, hi, rows, "heavy", group[0].exact, heavy_key=group[0].lo)
    # Density over the stretch that holds rows, so extending range 0 to the type minimum does not
    # make it look empty.
    span = group[-1].hi - group[0].lo + 1
    label = "sparse" if rows / span < threshold else "dense"
    return KeyRange(i, lo, hi, rows, label, all(b.exact for b in group))


def part_name(j: int) -> str:
    """``part-00000.parquet``: at least five digits, more past 99,999 files (plans/schema.json)."""
    return f"part-{j:05d}.parquet"


def with_null_range(ranges: tuple[KeyRange, ...], null_rows: int) -> tuple[KeyRange, ...]:
    """``ranges`` plus the last range of a nullable key: the rows whose key is NULL (counted exactly)."""
    return ranges + (KeyRange(len(ranges), None, None, int(null_rows), "nulls", True, nulls=True),)


def group_files(ranges: tuple[KeyRange, ...], bytes_per_row: float, file_size: int) -> tuple[FileGroup, ...]:
    """Consecutive whole ranges per file, each file ≈ ``file_size`` bytes; the tail joins the last file."""
    files: list[list[KeyRange]] = [[]]
    size = 0.0
    for r in ranges:
        est = r.est_rows * bytes_per_row
        # The tail joins the file before it; the NULL-key range gets its own file when that one is full.
        if files[-1] and (r.hi is not None or r.nulls) and size + est > file_size:
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
                name=part_name(j),
                first_range=group[0].index,
                last_range=group[-1].index,
                est_rows=rows,
                est_bytes=int(rows * bytes_per_row),
            )
        )
    return tuple(out)


def sparse_regions(hist: Histogram, threshold: float = DEFAULT_SPARSE_THRESHOLD) -> tuple[Region, ...]:
    """Maximal stretches of ``[min_key, max_key]`` whose density is below ``threshold`` rows per key.

    Density is judged per bucket core (first to last real key) at a scale of ``L = 20 / threshold``
    keys: runs of narrow nearby cores are one block (see :func:`_blocks`), the empty stretch between
    blocks is density 0, and a block narrower than ``L`` counts as ``rows / L`` (a lone key in a sparse
    stretch does not break it). A region is a run of sparse blocks and empty stretches,
    bounded by dense blocks, at least ``L`` keys long.
    """
    scale = max(2, math.ceil(20 / threshold)) if threshold > 0 else 0
    if not hist.buckets or scale == 0:
        return ()
    blocks = _blocks(hist.buckets, scale)
    regions: list[Region] = []
    run: list[tuple[int, int, int]] = []  # (lo, hi_exclusive, rows) of sparse blocks and gaps
    prev_hi: int | None = None

    def flush() -> None:
        if run:
            lo, hi, rows = run[0][0], run[-1][1], sum(r for _, _, r in run)
            if hi - lo >= scale and rows / (hi - lo) < threshold:
                regions.append(Region(lo, hi, rows))
        run.clear()

    for lo, hi, rows in blocks:
        if prev_hi is not None:  # blocks are at least ``scale`` apart: the stretch between is empty
            run.append((prev_hi, lo, 0))
        span = hi - lo
        if rows / max(span, scale) < threshold:
            run.append((lo, hi, rows))
        else:
            flush()
        prev_hi = hi
    flush()
    return tuple(regions)


def _blocks(buckets: list[Bucket], scale: int) -> list[tuple[int, int, int]]:
    """(lo, hi exclusive, rows) per bucket core, runs of narrow nearby cores coalesced.

    Only cores narrower than ``scale`` that lie fewer than ``scale`` keys apart are merged (a stride-20
    stretch cut into 3-key buckets is one 0.05-density block); a wide core stands alone, so a dense
    block never swallows the sparse bucket next to it.
    """
    out: list[list[int]] = []
    small_run = False
    for bk in buckets:
        small = bk.core < scale
        if out and small and small_run and bk.min_key - out[-1][1] < scale:
            out[-1][1] = max(out[-1][1], bk.max_key + 1)
            out[-1][2] += bk.count
        else:
            out.append([bk.min_key, bk.max_key + 1, bk.count])
            small_run = small
    return [tuple(b) for b in out]


def outlier_buckets(buckets: list[Bucket], *, factor: int = 10) -> list[int]:
    """Indexes of buckets holding isolated keys far beyond the bulk of the keys.

    Beyond some gap on either side lie at most ``max(16, rows/1000)`` rows, and the gap is more than
    ``factor`` times the span of everything on the bulk's side of it (e.g. 3 ids near 4·10^18 after
    a million dense ids). The gap nearest the bulk that qualifies wins, so all such keys are listed.
    """
    n = len(buckets)
    if n < 2:
        return []
    total = sum(b.count for b in buckets)
    limit = max(16, total // 1000)
    out: set[int] = set()
    # right side: prefix = buckets[0..i], suffix = buckets[i+1..]
    suffix_rows = total
    prefix_rows = 0
    for i in range(n - 1):
        prefix_rows += buckets[i].count
        suffix_rows -= buckets[i].count
        if suffix_rows > limit or prefix_rows <= suffix_rows:
            continue
        gap = buckets[i + 1].min_key - buckets[i].max_key - 1
        if gap > factor * (buckets[i].max_key - buckets[0].min_key + 1):
            out.update(range(i + 1, n))
            break
    prefix_rows = 0
    for i in range(n - 1, 0, -1):
        prefix_rows += buckets[i].count  # rows at and after i (the bulk side)
        left_rows = total - prefix_rows
        if left_rows > limit or prefix_rows <= left_rows:
            continue
        gap = buckets[i].min_key - buckets[i - 1].max_key - 1
        if gap > factor * (buckets[-1].max_key - buckets[i].min_key + 1):
            out.update(range(0, i))
            break
    return sorted(out)


def gaps(hist: Histogram, min_gap: int) -> tuple[Region, ...]:
    """Empty stretches of at least ``min_gap`` keys between consecutive buckets."""
    out = []
    for a, b in zip(hist.buckets, hist.buckets[1:]):
        if b.min_key - a.max_key - 1 >= min_gap:
            out.append(Region(a.max_key + 1, b.min_key, 0))
    return tuple(out)


def widest(regions: tuple[Region, ...], n: int) -> tuple[Region, ...]:
    """The ``n`` widest regions, in key order (a plan lists a bounded number of gaps)."""
    if len(regions) <= n:
        return regions
    keep = sorted(regions, key=lambda r: r.hi - r.lo, reverse=True)[:n]
    return tuple(sorted(keep, key=lambda r: r.lo))


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
