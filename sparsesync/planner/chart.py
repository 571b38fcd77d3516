"""A PNG picture of a plan: key density (rows per key, log y) with range boundaries and sparse regions.

Uses matplotlib's Agg backend (no display needed) and writes atomically: temp file + rename, so a
half-written PNG is never visible under its name.
"""

from __future__ import annotations

import os
from pathlib import Path

from sparsesync.atomic import write_atomic
from sparsesync.errors import DestinationError

from .plan import Plan
from .show import cell_edges, choose_scale, median_key, without_gaps, _rows_in_cells

DEFAULT_CELLS = 400


def render_png(plan: Plan, path: str | os.PathLike, *, cells: int = DEFAULT_CELLS) -> Path:
    """Draw ``plan``'s density over its key span to ``path``; returns the path written.

    The x axis is the key (linear, or the distance from the bulk's end on a log axis when outliers
    stretch the span, as in the text strip); y is rows per key on a log axis.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    target = Path(path)
    bins = without_gaps(plan.histogram.bins, plan.histogram.gaps)
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    try:
        title = f"{plan.source.qualified_table} — plan {plan.plan_id}: {len(plan.ranges)} ranges, {plan.estimates.files} files"
        ax.set_title(title, fontsize=9)
        if not bins:
            ax.text(0.5, 0.5, "no rows at planning", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            _draw(ax, plan, bins, cells)
        fig.tight_layout()
        _save_atomically(fig, target)
    finally:
        plt.close(fig)
    return target


def _draw(ax, plan: Plan, bins, cells: int) -> None:
    lo, hi = min(b.lo for b in bins), max(b.hi for b in bins)
    scale = choose_scale(bins, lo, hi)
    center = median_key(bins, lo, hi)
    edges = cell_edges(lo, hi, cells, scale, center)
    rows = _rows_in_cells(bins, edges)

    # Positions are floats for plotting only (keys stay exact ints elsewhere). On the log axis they
    # are signed distances from the median key on a symmetric log scale, like the text strip.
    def pos(k: int) -> float:
        return float(k - lo) if scale == "linear" else float(k - center)

    xs, ys = [], []
    for (a, b), r in zip(edges, rows):
        d = r / (b - a)
        xs += [pos(a), pos(b)]
        ys += [d, d]
    positive = [y for y in ys if y > 0]
    floor = min(positive) / 10 if positive else 1e-12
    ys = [max(y, floor) for y in ys]
    ax.fill_between(xs, ys, floor, step=None, color="#3b75af", alpha=0.8, linewidth=0.6, label="rows per key")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    if scale == "log":
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel(f"key − {center} (median key), symmetric log scale")
    else:
        ax.set_xlabel(f"key − {lo}")
    ax.set_ylabel("rows per key")

    for reg in plan.histogram.sparse_regions:
        a, b = max(reg.lo, lo), min(reg.hi, hi)
        if b > a:
            x0, x1 = sorted((pos(a), pos(b)))
            ax.axvspan(x0, x1, color="#f0a030", alpha=0.15, linewidth=0)
    boundaries = [r.lo for r in plan.key_ranges[1:] if lo < r.lo < hi]
    # Ticks along the bottom edge (one collection), not full-height lines: ten thousand boundaries
    # become a rug whose darkness shows where cuts are dense, and the density above stays visible.
    many = len(boundaries) > 200
    _ticks(ax, [pos(k) for k in boundaries], 0.07, color="#c03030", linewidth=0.5 if many else 0.9, alpha=0.6 if many else 0.9)
    heavy = [pos(r.heavy_key) for r in plan.ranges if r.label == "heavy" and r.heavy_key is not None and lo <= r.heavy_key < hi]
    _ticks(ax, heavy, 1.0, color="#7030a0", linewidth=0.8, linestyle="--")
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Patch(color="#3b75af", alpha=0.8, label="rows per key"),
            Line2D([0], [0], color="#c03030", linewidth=0.8, label=f"range boundaries, ticks at the bottom ({len(boundaries):,})"),
            Patch(color="#f0a030", alpha=0.3, label="sparse region"),
        ]
        + ([Line2D([0], [0], color="#7030a0", linestyle="--", label=f"heavy key value ({len(heavy)})")] if heavy else []),
        fontsize=7,
        loc="upper right",
    )


def _ticks(ax, xs: list[float], height: float, **style) -> None:
    """Vertical ticks from the bottom edge up to ``height`` (axes fraction) as ONE line with breaks:
    thousands of separate artists (or a LineCollection's per-path limits) take seconds to draw."""
    if not xs:
        return
    nan = float("nan")
    px, py = [], []
    for x in xs:
        px += [x, x, nan]
        py += [0.0, height, nan]
    ax.plot(px, py, transform=ax.get_xaxis_transform(), scalex=False, scaley=False, **style)


def _save_atomically(fig, target: Path) -> None:
    try:
        write_atomic(target, lambda fh: fig.savefig(fh, format="png"))
    except OSError as exc:
        raise DestinationError(f"cannot write PNG {target}: {exc.strerror or exc}", file=str(target)) from exc
