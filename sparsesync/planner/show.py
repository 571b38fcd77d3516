"""What ``sparsesync show`` says about a plan, as data: summary, density strip, warnings and diffs.

Library only: nothing here prints. The CLI renders these values (rich or plain text); ``--json`` emits
:func:`summary_dict` / :func:`diff_dict`, whose keys are stable.

Keys are Python ints (spans reach 2^64), so all key arithmetic stays in ints; floats appear only for
densities and screen positions, where rounding is harmless.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .plan import KeyRange, Plan, Region

SHADES = " ▁▂▃▄▅▆▇█"
DEFAULT_WIDTH = 72
DEFAULT_RANGE_LIMIT = 20
# Log-scale positions are used when the rows' bulk (1st..99th percentile of rows) fills less than this
# share of the key span: a few outlier ids would otherwise squeeze every row into one or two cells.
LOG_SCALE_BULK_SHARE = 0.05
MAX_LISTED = 10  # sparse regions / gaps listed one per line before "… N more"
TAIL_NOTE = "rows inserted after planning above max_key are read by the tail range"


# ---- value types ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Strip:
    """One text line of density cells over the key space, and the boundary marks under it."""

    text: str
    marks: str  # same width; '' when boundaries would not be readable
    scale: str  # linear | log
    center: int  # log scale: cells widen with distance from this key (the median row's key)
    lo: int
    hi: int  # exclusive
    cells: tuple[tuple[int, int], ...]  # key interval [lo, hi) per cell
    densities: tuple[float, ...]  # rows per key per cell
    note: str


@dataclass(frozen=True)
class RangeRow:
    index: int
    lo: int
    hi: int | None
    est_rows: int
    label: str
    density: float | None  # rows per key over the part of the range inside [min_key, max_key]


@dataclass(frozen=True)
class FileRow:
    index: int
    name: str
    first_range: int
    last_range: int
    est_rows: int
    est_mb: float


@dataclass(frozen=True)
class Finding:
    """A warning or note: ``kind`` is stable (sparse_region, gap, outlier, heavy, estimate, plan, tail)."""

    kind: str
    message: str


@dataclass(frozen=True)
class PlanSummary:
    """Everything ``show PLAN`` displays."""

    table: str
    plan_id: str
    source: str
    ranges: int
    files: int
    rows: int
    bytes: int
    queries: int
    density: str
    exact: bool
    min_key: int | None
    max_key: int | None
    line: str
    strip: Strip | None
    range_rows: tuple[RangeRow, ...]
    file_rows: tuple[FileRow, ...]
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class CountDelta:
    name: str
    old: int
    new: int

    @property
    def delta(self) -> int:
        return self.new - self.old


@dataclass(frozen=True)
class Drift:
    """A key region whose rows changed by more than 2×, appeared or disappeared."""

    lo: int
    hi: int
    old_rows: int
    new_rows: int
    change: str  # appeared | disappeared | grew | shrank


@dataclass(frozen=True)
class PlanDiff:
    """What ``show OLD NEW`` displays."""

    table: str
    old_id: str
    new_id: str
    counts: tuple[CountDelta, ...]
    fingerprint: tuple[str, ...]  # human lines, empty when nothing moved
    schema_changed: bool
    boundaries_added: tuple[int, ...]
    boundaries_removed: tuple[int, ...]
    ranges_unchanged: int
    drift: tuple[Drift, ...]
    drift_scale: str = "linear"
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---- formatting helpers -----------------------------------------------------------------------------
def fmt_key(key: int | None) -> str:
    """A key as text; ``None`` (the open tail's hi) is ``∞``."""
    return "∞" if key is None else str(key)


def fmt_density(d: float | None) -> str:
    """Rows per key, short: ``1``, ``0.25``, ``3.1e-06``; ``-`` when unknown."""
    if d is None:
        return "-"
    if d == 0:
        return "0"
    if d >= 0.01:
        return f"{d:.3g}"
    return f"{d:.2e}"


# ---- summary ----------------------------------------------------------------------------------------
def summarize(plan: Plan, *, width: int = DEFAULT_WIDTH) -> PlanSummary:
    """Build the summary of one plan: counts, density strip, ranges, files and findings."""
    e = plan.estimates
    exactness = "exact" if plan.histogram.exact else "sampled"
    line = (
        f"{plan.source.table}: {len(plan.ranges)} ranges → {e.files} files, ~{e.rows:,} rows, "
        f"~{e.bytes / 1e6:,.1f} MB, {e.queries} queries (density {exactness}, plan {plan.plan_id})"
    )
    fp = plan.fingerprint
    strip = density_strip(without_gaps(plan.histogram.bins, plan.histogram.gaps), plan.key_ranges, width=width)
    return PlanSummary(
        table=plan.source.table,
        plan_id=plan.plan_id,
        source=_describe_source(plan),
        ranges=len(plan.ranges),
        files=e.files,
        rows=e.rows,
        bytes=e.bytes,
        queries=e.queries,
        density=plan.strategy.density,
        exact=plan.histogram.exact,
        min_key=fp.min_key,
        max_key=fp.max_key,
        line=line,
        strip=strip,
        range_rows=tuple(_range_row(r, fp.min_key, fp.max_key) for r in plan.ranges),
        file_rows=tuple(
            FileRow(f.index, f.name, f.first_range, f.last_range, f.est_rows, f.est_bytes / 1e6) for f in plan.files
        ),
        findings=tuple(findings(plan)),
    )


def _describe_source(plan: Plan) -> str:
    s = plan.source
    if s.dialect == "sqlite":
        where = f"sqlite:///{s.database or ''}"
    else:
        user = f"{s.username}@" if s.username else ""
        port = f":{s.port}" if s.port else ""
        where = f"{s.dialect}://{user}{s.host or ''}{port}/{s.database or ''}"
    return f"{where} {s.qualified_table} key {s.key}"


def _range_row(r: KeyRange, min_key: int | None, max_key: int | None) -> RangeRow:
    density = None
    if r.hi is not None and min_key is not None and max_key is not None:
        # Range 0 starts at the key type's minimum; measure density only where rows can be.
        lo, hi = max(r.lo, min_key), min(r.hi, max_key + 1)
        density = r.est_rows / (hi - lo) if hi > lo else 0.0
    return RangeRow(r.index, r.lo, r.hi, r.est_rows, r.label, density)


def findings(plan: Plan) -> list[Finding]:
    """Warnings and notes about a plan, in the order ``show`` lists them."""
    out: list[Finding] = []
    h = plan.histogram
    total = max(1, h.total_rows)
    threshold = plan.strategy.sparse_threshold
    for reg in h.sparse_regions[:MAX_LISTED]:
        width = reg.hi - reg.lo
        out.append(
            Finding(
                "sparse_region",
                f"sparse region [{reg.lo}, {reg.hi}): {reg.rows:,} rows over {width:,} keys "
                f"({fmt_density(reg.rows / width)} rows/key < {threshold:g})",
            )
        )
    if len(h.sparse_regions) > MAX_LISTED:
        rest = h.sparse_regions[MAX_LISTED:]
        out.append(Finding("sparse_region", f"… {len(rest)} more sparse regions holding {sum(r.rows for r in rest):,} rows"))
    for g in h.gaps[:MAX_LISTED]:
        out.append(Finding("gap", f"gap [{g.lo}, {g.hi}): no rows over {g.hi - g.lo:,} keys (inside a range, costs no query)"))
    total_gaps = len(h.gaps) if h.gaps_total is None else h.gaps_total
    if total_gaps > MAX_LISTED:
        out.append(Finding("gap", f"… {total_gaps - MAX_LISTED} more gaps"))
    # The planner may already warn about outliers in plan.warnings; say it once.
    if h.outliers and not any("outlier" in w for w in plan.warnings):
        shown = ", ".join(str(k) for k in h.outliers[:5])
        more = f" … {len(h.outliers) - 5} more" if len(h.outliers) > 5 else ""
        out.append(Finding("outlier", f"{len(h.outliers)} outlier key(s) far from the bulk: {shown}{more}"))
    for r in (r for r in plan.ranges if r.label == "heavy"):
        out.append(
            Finding(
                "heavy",
                f"range {r.index} is one key value, {fmt_key(r.heavy_key)}, with {r.est_rows:,} rows "
                f"(> rows_per_query {plan.strategy.rows_per_query:,}): no boundary can split it",
            )
        )
    if h.exact and all(r.exact for r in plan.ranges if r.hi is not None):
        out.append(Finding("estimate", f"row counts are exact ({h.method} pre-scan, {total:,} rows)"))
    else:
        out.append(
            Finding(
                "estimate",
                f"row counts are sampled estimates ({h.method}); ranges may hold more or fewer rows than shown",
            )
        )
    for w in plan.warnings:
        out.append(Finding("plan", w))
    out.append(Finding("tail", TAIL_NOTE + (f" (max_key {plan.fingerprint.max_key})" if plan.fingerprint.max_key is not None else "")))
    return out


# ---- density strip ----------------------------------------------------------------------------------
def without_gaps(bins: Sequence[Region], gaps: Sequence[Region]) -> list[Region]:
    """Cut known empty gaps out of the bins, so a bin's rows are not smeared over a stretch with none.

    The plan's bins merge neighbouring buckets (at most a few hundred bins), so one bin may span a huge
    empty gap before an outlier; the plan's ``gaps`` say where rows are not.
    """
    gaps = sorted((g for g in gaps if g.hi > g.lo), key=lambda g: g.lo)
    gap_los = [g.lo for g in gaps]
    out: list[Region] = []
    for b in sorted(bins, key=lambda r: r.lo):
        pieces = [(b.lo, b.hi)]
        # Gaps are disjoint and sorted: only those from the one starting before b.lo up to b.hi overlap.
        first = max(0, bisect.bisect_right(gap_los, b.lo) - 1)
        for g in gaps[first : bisect.bisect_left(gap_los, b.hi)]:
            if g.hi <= b.lo or g.lo >= b.hi:
                continue
            nxt = []
            for a, z in pieces:
                if g.lo > a:
                    nxt.append((a, min(z, g.lo)))
                if g.hi < z:
                    nxt.append((max(a, g.hi), z))
            pieces = [(a, z) for a, z in nxt if z > a]
        keys = sum(z - a for a, z in pieces)
        if not pieces or keys == 0:
            out.append(b)  # inconsistent gap info: keep the bin as it is rather than lose rows
            continue
        # Split rows in proportion to key width, remainder to the last piece, so the total is kept.
        given = 0
        for i, (a, z) in enumerate(pieces):
            r = b.rows - given if i == len(pieces) - 1 else b.rows * (z - a) // keys
            given += r
            out.append(Region(a, z, r))
    return out


def density_strip(
    bins: Sequence[Region], ranges: Sequence[KeyRange] = (), *, width: int = DEFAULT_WIDTH, scale: str = "auto"
) -> Strip | None:
    """Shade ``width`` cells of the key span by rows per key; mark range boundaries under them.

    Rows are assumed uniform inside a bin. Shading is logarithmic in density (dense heads and sparse
    tails differ by orders of magnitude); any non-empty cell gets at least the lowest shade, so a
    single row is never invisible. ``None`` when the plan has no rows.
    """
    bins = [b for b in bins if b.hi > b.lo]
    if not bins or width < 4:
        return None
    lo, hi = min(b.lo for b in bins), max(b.hi for b in bins)
    if scale == "auto":
        scale = choose_scale(bins, lo, hi)
    center = median_key(bins, lo, hi)
    cells = cell_edges(lo, hi, width, scale, center)
    rows = _rows_in_cells(bins, cells)
    dens = tuple(r / (c_hi - c_lo) for r, (c_lo, c_hi) in zip(rows, cells))
    text = shade(dens)
    marks, marks_note = boundary_marks(ranges, cells)
    note = _scale_note(scale, center, lo, hi) + ("; " + marks_note if marks_note else "")
    return Strip(text, marks, scale, center, lo, hi, tuple(cells), dens, note)


def choose_scale(bins: Sequence[Region], lo: int, hi: int) -> str:
    """``log`` when the bulk of the rows sits in a small share of the span (outliers stretch it)."""
    span = hi - lo
    if span <= 1:
        return "linear"
    b_lo, b_hi = _bulk(bins, 0.01, 0.99)
    return "log" if (b_hi - b_lo) < LOG_SCALE_BULK_SHARE * span else "linear"


def _bulk(bins: Sequence[Region], q_lo: float, q_hi: float) -> tuple[int, int]:
    """Key interval holding the rows between two quantiles (bin resolution)."""
    total = sum(b.rows for b in bins) or 1
    acc = 0
    start, end = bins[0].lo, bins[-1].hi
    found_start = False
    for b in sorted(bins, key=lambda r: r.lo):
        if not found_start and acc + b.rows > q_lo * total:
            start, found_start = b.lo, True
        acc += b.rows
        if acc >= q_hi * total:
            end = b.hi
            break
    return start, max(end, start + 1)


def median_key(bins: Sequence[Region], lo: int, hi: int) -> int:
    """The key below which half the rows lie (rows uniform inside a bin), clamped into ``[lo, hi)``."""
    total = sum(b.rows for b in bins)
    if total <= 0:
        return lo
    acc = 0
    for b in sorted(bins, key=lambda r: r.lo):
        if acc + b.rows >= total / 2:
            need = total / 2 - acc
            k = b.lo + int((b.hi - b.lo) * need / b.rows) if b.rows else b.lo
            return min(max(k, lo), hi - 1)
        acc += b.rows
    return hi - 1


def cell_edges(lo: int, hi: int, width: int, scale: str, center: int | None = None) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` into at most ``width`` non-empty integer cells.

    ``linear``: equal widths. ``log``: widths grow with the distance from ``center`` on both sides
    (a symmetric log scale), so the rows' bulk around the median gets many fine cells wherever it sits
    — at the low end, the high end or the middle of a 2^64 span — and far outliers share a few wide ones.
    Each side gets cells in proportion to the log of its length.
    """
    span = hi - lo
    n = max(1, min(width, span))
    if scale == "linear":
        edges = [lo + (span * i) // n for i in range(n + 1)]
    else:
        c = lo if center is None else min(max(center, lo), hi)
        left, right = c - lo, hi - c
        ll, lr = math.log1p(left), math.log1p(right)  # math.log1p accepts arbitrary Python ints
        nl = round(n * ll / (ll + lr)) if ll + lr > 0 else 0
        if left > 0:
            nl = max(1, nl)
        if right > 0:
            nl = min(nl, n - 1)
        nr = n - nl
        down = _log_offsets(left, nl)  # distances below c, ascending
        up = _log_offsets(right, nr)
        edges = [c - o for o in reversed(down)] + [c + o for o in up[1:]]
    # Rounding can repeat an edge at the fine end; drop empty cells rather than show them.
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _log_offsets(length: int, cells: int) -> list[int]:
    """``cells + 1`` offsets from 0 to ``length`` spaced evenly in log(1 + offset)."""
    if length <= 0 or cells <= 0:
        return [0]
    top = math.log1p(length)
    inner = [min(length, max(1, round(math.expm1(top * i / cells)))) for i in range(1, cells)]
    return [0, *inner, length]


def _rows_in_cells(bins: Sequence[Region], cells: Sequence[tuple[int, int]]) -> list[float]:
    rows = [0.0] * len(cells)
    bins = sorted(bins, key=lambda r: r.lo)
    j0 = 0
    for i, (c_lo, c_hi) in enumerate(cells):
        while j0 < len(bins) and bins[j0].hi <= c_lo:
            j0 += 1
        j = j0
        while j < len(bins) and bins[j].lo < c_hi:
            b = bins[j]
            overlap = min(b.hi, c_hi) - max(b.lo, c_lo)
            if overlap > 0:
                rows[i] += b.rows * overlap / (b.hi - b.lo)
            j += 1
    return rows


def shade(densities: Sequence[float]) -> str:
    """Map densities to block characters on a log scale between the smallest and largest non-zero."""
    nz = [d for d in densities if d > 0]
    if not nz:
        return " " * len(densities)
    d_min, d_max = math.log10(min(nz)), math.log10(max(nz))
    levels = len(SHADES) - 1
    out = []
    for d in densities:
        if d <= 0:
            out.append(SHADES[0])
            continue
        frac = 1.0 if d_max == d_min else (math.log10(d) - d_min) / (d_max - d_min)
        out.append(SHADES[1 + min(levels - 1, int(frac * levels))])
    return "".join(out)


def boundary_marks(ranges: Sequence[KeyRange], cells: Sequence[tuple[int, int]]) -> tuple[str, str]:
    """``┴`` under cells holding one range boundary, a digit for 2–9, ``+`` above; blank if unreadable."""
    if not cells:
        return "", ""
    inner = [r.lo for r in ranges[1:]]  # range 0 starts at the type minimum: not a real boundary
    lo, hi = cells[0][0], cells[-1][1]
    inner = [k for k in inner if lo <= k < hi]
    if not inner:
        return " " * len(cells), ""
    counts = [0] * len(cells)
    starts = [c[0] for c in cells]
    for k in inner:
        counts[max(0, bisect.bisect_right(starts, k) - 1)] += 1
    marked = sum(1 for c in counts if c)
    if marked > len(cells) * 0.6:
        # Boundaries in most cells tell nothing; say how many instead of drawing noise.
        return "", f"{len(inner)} range boundaries, too many to mark"
    text = "".join(" " if c == 0 else "┴" if c == 1 else str(c) if c < 10 else "+" for c in counts)
    return text, "┴ = range boundary (digit = several)"


def _scale_note(scale: str, center: int, lo: int, hi: int) -> str:
    if scale == "linear":
        return f"linear key scale [{lo}, {hi})"
    return f"log key scale around the median key {center} (cells widen with distance from it; outliers stretch the span) [{lo}, {hi})"


# ---- JSON summary -------------------------------------------------------------------------------------
def summary_dict(s: PlanSummary, *, all_ranges: bool = True) -> dict[str, Any]:
    """Machine-readable summary with stable keys; keys are decimal strings like in the plan."""
    rr = s.range_rows if all_ranges else s.range_rows[:DEFAULT_RANGE_LIMIT]
    return {
        "table": s.table,
        "plan_id": s.plan_id,
        "source": s.source,
        "ranges": s.ranges,
        "files": s.files,
        "rows": s.rows,
        "bytes": s.bytes,
        "queries": s.queries,
        "density": s.density,
        "exact": s.exact,
        "min_key": _k(s.min_key),
        "max_key": _k(s.max_key),
        "summary": s.line,
        "strip": None
        if s.strip is None
        else {"text": s.strip.text, "marks": s.strip.marks, "scale": s.strip.scale, "center": _k(s.strip.center),
              "lo": _k(s.strip.lo), "hi": _k(s.strip.hi), "note": s.strip.note},
        "range_list": [
            {"index": r.index, "lo": _k(r.lo), "hi": _k(r.hi), "est_rows": r.est_rows, "label": r.label,
             "density": r.density}
            for r in rr
        ],
        "ranges_omitted": len(s.range_rows) - len(rr),
        "file_list": [
            {"index": f.index, "name": f.name, "ranges": [f.first_range, f.last_range], "est_rows": f.est_rows,
             "est_mb": round(f.est_mb, 3)}
            for f in s.file_rows
        ],
        "warnings": [{"kind": f.kind, "message": f.message} for f in s.findings],
    }


def _k(v: int | None) -> str | None:
    return None if v is None else str(v)


# ---- diff ---------------------------------------------------------------------------------------------
def comparable(old: Plan, new: Plan) -> str | None:
    """Why two plans cannot be diffed (different table or source), or ``None`` when they can."""
    a, b = old.source, new.source
    if (a.qualified_table, a.key) != (b.qualified_table, b.key):
        return f"plans are of different tables: {a.qualified_table} (key {a.key}) vs {b.qualified_table} (key {b.key})"
    if (a.dialect, a.host, a.port, a.database) != (b.dialect, b.host, b.port, b.database):
        return (
            f"plans are of {a.qualified_table} on different sources: "
            f"{_describe_source(old).split(' ')[0]} vs {_describe_source(new).split(' ')[0]}"
        )
    return None


def diff_plans(old: Plan, new: Plan, *, regions: int = 32) -> PlanDiff:
    """Compare two plans of the same table; call :func:`comparable` first (this does not refuse)."""
    counts = (
        CountDelta("ranges", len(old.ranges), len(new.ranges)),
        CountDelta("files", old.estimates.files, new.estimates.files),
        CountDelta("rows", old.estimates.rows, new.estimates.rows),
        CountDelta("queries", old.estimates.queries, new.estimates.queries),
        CountDelta("bytes", old.estimates.bytes, new.estimates.bytes),
    )
    fo, fn = old.fingerprint, new.fingerprint
    fp_lines = []
    schema_changed = fo.schema_hash != fn.schema_hash
    if schema_changed:
        fp_lines.append(f"schema hash changed: {fo.schema_hash[:12]} → {fn.schema_hash[:12]} (columns or types differ)")
    if fo.min_key != fn.min_key:
        fp_lines.append(f"min key moved: {fmt_key(fo.min_key)} → {fmt_key(fn.min_key)}")
    if fo.max_key != fn.max_key:
        fp_lines.append(f"max key moved: {fmt_key(fo.max_key)} → {fmt_key(fn.max_key)}")
    if fo.row_estimate != fn.row_estimate:
        fp_lines.append(f"row estimate: {fo.row_estimate:,} → {fn.row_estimate:,}")
    notes = []
    if [c.name for c in old.columns] != [c.name for c in new.columns]:
        notes.append(
            "columns: " + ", ".join(c.name for c in old.columns) + " → " + ", ".join(c.name for c in new.columns)
        )
    if old.histogram.exact != new.histogram.exact:
        notes.append(
            f"estimate quality: {'exact' if old.histogram.exact else 'sampled'} → {'exact' if new.histogram.exact else 'sampled'}"
        )
    if old.strategy.rows_per_query != new.strategy.rows_per_query:
        notes.append(f"rows_per_query: {old.strategy.rows_per_query:,} → {new.strategy.rows_per_query:,}")
    if old.strategy.file_size != new.strategy.file_size:
        notes.append(f"file_size: {old.strategy.file_size / 1e6:,.0f} MB → {new.strategy.file_size / 1e6:,.0f} MB")
    ob = {r.lo for r in old.key_ranges[1:]}
    nb = {r.lo for r in new.key_ranges[1:]}
    unchanged = len({(r.lo, r.hi) for r in old.ranges} & {(r.lo, r.hi) for r in new.ranges})
    drift, scale = density_drift(
        without_gaps(old.histogram.bins, old.histogram.gaps),
        without_gaps(new.histogram.bins, new.histogram.gaps),
        regions=regions,
    )
    return PlanDiff(
        table=new.source.qualified_table,
        old_id=old.plan_id,
        new_id=new.plan_id,
        counts=counts,
        fingerprint=tuple(fp_lines),
        schema_changed=schema_changed,
        boundaries_added=tuple(sorted(nb - ob)),
        boundaries_removed=tuple(sorted(ob - nb)),
        ranges_unchanged=unchanged,
        drift=drift,
        drift_scale=scale,
        notes=tuple(notes),
    )


def density_drift(
    old_bins: Sequence[Region], new_bins: Sequence[Region], *, regions: int = 32, factor: float = 2.0
) -> tuple[tuple[Drift, ...], str]:
    """Regions of a common grid over both plans whose rows appeared, vanished or changed by > ``factor``.

    The two plans' bins have different edges, so both are re-binned onto one grid (rows assumed uniform
    inside a bin). Regions holding under 0.1% of the larger total are ignored as noise.
    """
    both = [b for b in list(old_bins) + list(new_bins) if b.hi > b.lo]
    if not both:
        return (), "linear"
    lo, hi = min(b.lo for b in both), max(b.hi for b in both)
    scale = choose_scale(both, lo, hi)
    cells = cell_edges(lo, hi, regions, scale, median_key(both, lo, hi))
    o = _rows_in_cells(old_bins, cells)
    n = _rows_in_cells(new_bins, cells)
    floor = 0.001 * max(sum(o), sum(n), 1)
    out: list[Drift] = []
    for (c_lo, c_hi), a, b in zip(cells, o, n):
        if max(a, b) < max(floor, 0.5):
            continue
        if a < 0.5:
            change = "appeared"
        elif b < 0.5:
            change = "disappeared"
        elif b > factor * a:
            change = "grew"
        elif a > factor * b:
            change = "shrank"
        else:
            continue
        out.append(Drift(c_lo, c_hi, round(a), round(b), change))
    return tuple(_merge_drift(out)), scale


def _merge_drift(items: Iterable[Drift]) -> list[Drift]:
    # Adjacent regions with the same kind of change read better as one line.
    merged: list[Drift] = []
    for d in items:
        if merged and merged[-1].hi == d.lo and merged[-1].change == d.change:
            m = merged[-1]
            merged[-1] = Drift(m.lo, d.hi, m.old_rows + d.old_rows, m.new_rows + d.new_rows, d.change)
        else:
            merged.append(d)
    return merged


def diff_dict(d: PlanDiff) -> dict[str, Any]:
    """Machine-readable diff with stable keys."""
    return {
        "table": d.table,
        "old_plan": d.old_id,
        "new_plan": d.new_id,
        "counts": {c.name: {"old": c.old, "new": c.new, "delta": c.delta} for c in d.counts},
        "fingerprint": list(d.fingerprint),
        "schema_changed": d.schema_changed,
        "boundaries_added": [str(k) for k in d.boundaries_added],
        "boundaries_removed": [str(k) for k in d.boundaries_removed],
        "ranges_unchanged": d.ranges_unchanged,
        "drift_scale": d.drift_scale,
        "drift": [
            {"lo": str(x.lo), "hi": str(x.hi), "old_rows": x.old_rows, "new_rows": x.new_rows, "change": x.change}
            for x in d.drift
        ],
        "notes": list(d.notes),
    }
