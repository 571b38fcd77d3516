"""Restrict a plan to some key spans: the planner's ranges and file sizes, for part of the key space.

A sync run reads only the spans that changed and the new tail, not the whole table. It plans the
whole table as usual (cheap with the histogram cache) and keeps only the ranges inside the wanted
spans, clipped at the span bounds, so a span re-exported after it grew is cut into the plan's ranges
and files again. Files never cross a span boundary: each span's rows can replace that span's old parts.
"""

from __future__ import annotations

from dataclasses import replace

from .partition import group_files, part_name
from .plan import FileGroup, KeyRange, Plan


def _overlap(r: KeyRange, lo: int, hi: int | None) -> tuple[int, int | None] | None:
    a = max(r.lo, lo)
    if r.hi is None:
        b = hi
    elif hi is None:
        b = r.hi
    else:
        b = min(r.hi, hi)
    return None if b is not None and b <= a else (a, b)


def _clipped_rows(r: KeyRange, a: int, b: int | None) -> int:
    """Estimated rows of ``r`` inside ``[a, b)``: all of them when fully inside, else by key width."""
    if a == r.lo and b == r.hi:
        return r.est_rows
    if r.hi is None or b is None:
        return r.est_rows if r.hi is None and b is None else 0
    return -(-r.est_rows * (b - a) // max(1, r.hi - r.lo))


def restrict_to_spans(plan: Plan, spans: list[tuple[int, int | None]], *, nulls: bool = False) -> Plan:
    """The plan's ranges clipped to ``spans`` (sorted, disjoint ``[lo, hi)``; only the last may be open).

    The last span must be open (``hi is None``) so the plan keeps its open tail; the spans are recorded
    in ``strategy.key_spans`` (unless one span covers the plan's whole key domain) and
    :func:`sparsesync.planner.plan.check_structure` checks the ranges against them. ``nulls`` keeps the plan's
    NULL-key range, in a file of its own (so its rows can be replaced apart from any key span).
    """
    spans = sorted(spans, key=lambda s: s[0])
    if spans and spans[0][0] < plan.key_ranges[0].lo:  # range 0 starts at the key type's minimum: none below
        spans[0] = (plan.key_ranges[0].lo, spans[0][1])
    if not spans or spans[-1][1] is not None:
        raise ValueError("the last span must be open (hi = None): a plan always ends with the tail")
    for (lo1, hi1), (lo2, _) in zip(spans, spans[1:]):
        if hi1 is None or hi1 > lo2 or hi1 <= lo1:
            raise ValueError(f"spans must be disjoint, sorted and non-empty: [{lo1}, {hi1}) then [{lo2}, …)")
    ranges: list[KeyRange] = []
    files: list[FileGroup] = []
    bpr = plan.strategy.bytes_per_row

    def add_files(mine: list[KeyRange]) -> None:
        base = len(ranges)
        local = tuple(replace(r, index=i) for i, r in enumerate(mine))
        for g in group_files(local, bpr, plan.strategy.file_size):
            j = len(files)
            files.append(FileGroup(j, part_name(j), g.first_range + base, g.last_range + base, g.est_rows, g.est_bytes))
        ranges.extend([replace(r, index=base + i) for i, r in enumerate(mine)])

    for lo, hi in spans:
        mine: list[KeyRange] = []
        for r in plan.key_ranges:
            cut = _overlap(r, lo, hi)
            if cut is None:
                continue
            a, b = cut
            label = "tail" if b is None else ("dense" if r.label == "tail" else r.label)
            heavy = r.heavy_key if r.heavy_key is not None and a <= r.heavy_key and (b is None or r.heavy_key < b) else None
            if label == "heavy" and heavy is None:
                label = "dense"
            mine.append(replace(r, lo=a, hi=b, est_rows=_clipped_rows(r, a, b), label=label, heavy_key=heavy,
                                exact=r.exact and (a, b) == (r.lo, r.hi)))
        if not mine:  # a span below the planned minimum (the plan's range 0 starts at the type's minimum)
            mine.append(KeyRange(0, lo, hi, 0, "tail" if hi is None else "gap", False))
        if hi is None and len(mine) >= 2 and mine[-2].est_rows + mine[-1].est_rows <= plan.strategy.rows_per_query \
                and mine[-2].label != "heavy":
            # New keys since the last run usually fit one range: read them and the open tail in one query.
            last = mine.pop()
            mine[-1] = replace(mine[-1], hi=None, est_rows=mine[-1].est_rows + last.est_rows, label="tail", exact=False)
        add_files(mine)
    if nulls and plan.null_range is not None:
        add_files([plan.null_range])
    rows = sum(r.est_rows for r in ranges)
    whole = len(spans) == 1 and spans[0][0] <= plan.key_ranges[0].lo
    key_spans = () if whole else tuple((str(lo), None if hi is None else str(hi)) for lo, hi in spans)
    strategy = replace(plan.strategy, key_spans=key_spans)
    return replace(
        plan, ranges=tuple(ranges), files=tuple(files), strategy=strategy,
        estimates=replace(plan.estimates, queries=len(ranges), rows=rows, bytes=int(rows * bpr), files=len(files)),
    ).sealed()
