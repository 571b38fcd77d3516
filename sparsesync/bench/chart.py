"""A PNG chart of one bench run: queries, files and wall time per strategy, grouped by fixture."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402


def render_chart(measurements, path: str | Path, title: str = "") -> Path:
    """Three log-scale bar panels; strategies that did not finish are hatched."""
    groups = []
    for m in measurements:
        g = f"{m.fixture}\n{m.rows:,}"
        if g not in groups:
            groups.append(g)
    strategies = []
    for m in measurements:
        if m.strategy not in strategies:
            strategies.append(m.strategy)
    by = {(f"{m.fixture}\n{m.rows:,}", m.strategy): m for m in measurements}
    fig, axes = plt.subplots(1, 3, figsize=(max(12, 2.2 * len(groups) * 3), 4.8))
    width = 0.8 / max(1, len(strategies))
    panels = (("queries", "queries (server)"), ("files", "files"), ("wall_s", "wall time (s)"))
    for ax, (attr, label) in zip(axes, panels):
        for j, s in enumerate(strategies):
            xs, ys, hatches = [], [], []
            for i, g in enumerate(groups):
                m = by.get((g, s))
                if m is None:
                    continue
                xs.append(i + j * width - 0.4 + width / 2)
                ys.append(max(getattr(m, attr), 0.01 if attr == "wall_s" else 0.5))
                hatches.append(not m.finished)
            bars = ax.bar(xs, ys, width, label=s, color=f"C{j}")
            for bar, y in zip(bars, ys):
                text = f"{y:.1f}" if attr == "wall_s" else f"{int(y):,}"
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom", fontsize=6)
            for bar, h in zip(bars, hatches):
                if h:
                    bar.set_hatch("//")
                    bar.set_edgecolor("black")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.005 if attr == "wall_s" else 0.5)  # bars of 1 query/file stay visible
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_title(label)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"sparsesync strategies ({title}; hatched = not finished within the time cap)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
