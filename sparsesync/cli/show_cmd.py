"""``sparsesync show PLAN`` and ``sparsesync show OLD NEW``: review a plan (or what changed) without a database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sparsesync.errors import SparsesyncError, UsageError

from . import app, fail


@app.command("show")
def show_command(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="Plan file written by `sparsesync plan`."),
    new_plan: Optional[Path] = typer.Argument(
        None, metavar="[NEW]", help="A second plan of the same table: show what changed from PLAN to NEW."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary (stable keys) instead of text."),
    png: Optional[Path] = typer.Option(None, "--png", metavar="FILE", help="Also draw the density and range boundaries to a PNG (of NEW when comparing two plans)."),
    all_ranges: bool = typer.Option(False, "--all", help="List every range and file (default: the first 20, then '… N more')."),
    width: int = typer.Option(72, "--width", min=20, max=200, help="Characters in the density strip."),
) -> None:
    """Summarise a plan: counts, a density strip of the key space, ranges, files and warnings.

    Needs no database, only the plan file (checked: schema, hash, version).

    Examples:

      sparsesync show plans/orders-20250101T000000Z-abc123.json

      sparsesync show plans/orders-OLD.json plans/orders-NEW.json   # what changed

      sparsesync show plans/orders-X.json --json | jq .warnings

      sparsesync show plans/orders-X.json --png orders-density.png
    """
    from sparsesync.planner.plan import load_plan
    from sparsesync.planner import show

    try:
        plan = load_plan(plan_file)
        if new_plan is not None:
            other = load_plan(new_plan)
            why = show.comparable(plan, other)
            if why:
                raise UsageError(why, hint="show OLD NEW compares two plans of the same table and source")
            diff = show.diff_plans(plan, other)
            if png is not None:
                from sparsesync.planner.chart import render_png

                render_png(other, png)
            if as_json:
                typer.echo(json.dumps(show.diff_dict(diff), indent=2, ensure_ascii=False))
            else:
                _render_diff(diff)
            if png is not None and not as_json:
                typer.echo(f"density chart of {new_plan} written to {png}")
            return
        summary = show.summarize(plan, width=width)
        if png is not None:
            from sparsesync.planner.chart import render_png

            render_png(plan, png)
    except SparsesyncError as exc:
        raise fail(exc)
    if as_json:
        typer.echo(json.dumps(show.summary_dict(summary, all_ranges=True), indent=2, ensure_ascii=False))
        return
    _render_summary(summary, all_ranges=all_ranges)
    if png is not None:
        typer.echo(f"density chart written to {png}")


# ---- plain-text rendering ------------------------------------------------------------------------------
def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return ["  " + fmt(headers)] + ["  " + fmt(r) for r in rows]


def _render_summary(s, *, all_ranges: bool) -> None:
    from sparsesync.planner.show import DEFAULT_RANGE_LIMIT, fmt_density, fmt_key

    echo = typer.echo
    echo(s.line)
    echo(f"source: {s.source}")
    if s.strip is not None:
        echo("")
        echo(f"density: {s.strip.note}")
        echo(f"  {fmt_key(s.strip.lo)} │{s.strip.text}│ {fmt_key(s.strip.hi - 1)}")
        if s.strip.marks.strip():
            echo("  " + " " * len(fmt_key(s.strip.lo)) + "  " + s.strip.marks.rstrip())
    else:
        echo("density: no rows at planning")

    limit = None if all_ranges else DEFAULT_RANGE_LIMIT
    rr = s.range_rows if limit is None else s.range_rows[:limit]
    echo("")
    echo(f"ranges ({s.ranges}):")
    rows = [
        [str(r.index), "NULL" if r.label == "nulls" else fmt_key(r.lo), "NULL" if r.label == "nulls" else fmt_key(r.hi),
         f"{r.est_rows:,}", r.label, fmt_density(r.density)] for r in rr
    ]
    for line in _table(["#", "lo", "hi", "est rows", "label", "rows/key"], rows, {0, 1, 2, 3, 5}):
        echo(line)
    if len(rr) < len(s.range_rows):
        echo(f"  … {len(s.range_rows) - len(rr)} more (--all to list every range)")

    fr = s.file_rows if limit is None else s.file_rows[:limit]
    echo("")
    echo(f"files ({s.files}):")
    rows = [[f.name, f"{f.first_range}–{f.last_range}", f"{f.est_rows:,}", f"{f.est_mb:,.1f}"] for f in fr]
    for line in _table(["name", "ranges", "est rows", "est MB"], rows, {2, 3}):
        echo(line)
    if len(fr) < len(s.file_rows):
        echo(f"  … {len(s.file_rows) - len(fr)} more (--all to list every file)")

    if s.findings:
        echo("")
        echo("notes:")
        for f in s.findings:
            # Notes that are informative rather than a risk are prefixed differently from warnings.
            tag = "note" if f.kind in ("tail", "estimate") and "sampled" not in f.message else "warning"
            echo(f"  {tag}: {f.message}")


def _render_diff(d) -> None:
    from sparsesync.planner.show import fmt_key

    echo = typer.echo
    echo(f"{d.table}: plan {d.old_id} → {d.new_id}")
    for c in d.counts:
        if c.name == "bytes":
            echo(f"  {'MB':<8} {c.old / 1e6:>12,.1f} → {c.new / 1e6:>12,.1f}  ({c.delta / 1e6:+,.1f})")
        else:
            echo(f"  {c.name:<8} {c.old:>12,} → {c.new:>12,}  ({c.delta:+,})")
    echo("fingerprint:" + ("" if d.fingerprint else " unchanged (same schema, min and max key)"))
    for line in d.fingerprint:
        echo(f"  {line}")
    for line in d.notes:
        echo(f"  {line}")
    echo(
        f"range boundaries: {d.ranges_unchanged} range(s) unchanged, "
        f"{len(d.boundaries_added)} boundary(ies) added, {len(d.boundaries_removed)} removed"
    )
    for name, keys in (("added", d.boundaries_added), ("removed", d.boundaries_removed)):
        if keys:
            shown = ", ".join(fmt_key(k) for k in keys[:8])
            more = f" … {len(keys) - 8} more" if len(keys) > 8 else ""
            echo(f"  {name}: {shown}{more}")
    if d.drift:
        echo(f"density drift ({d.drift_scale} key regions, > 2× or appeared/disappeared):")
        for x in d.drift[:20]:
            echo(f"  [{fmt_key(x.lo)}, {fmt_key(x.hi)}): {x.old_rows:,} → {x.new_rows:,} rows ({x.change})")
        if len(d.drift) > 20:
            echo(f"  … {len(d.drift) - 20} more")
    else:
        echo("density drift: none beyond 2× in any key region")
