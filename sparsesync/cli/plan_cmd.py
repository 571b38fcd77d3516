"""``sparsesync plan``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sparsesync.errors import SparsesyncError, UsageError

from . import app, fail


@app.command("plan")
def plan_command(
    source_url: str = typer.Argument(
        ..., metavar="SOURCE_URL", help="SQLAlchemy URL of the source; with only TABLE given, SPARSESYNC_SOURCE_URL is used. Never written anywhere."
    ),
    table: Optional[str] = typer.Argument(None, metavar="TABLE", help="Table to plan."),
    key: Optional[str] = typer.Option(None, "--key", help="Indexed integer column to range over (default: the primary key)."),
    rows_per_query: Optional[int] = typer.Option(None, "--rows-per-query", help="Upper bound of estimated rows per range query [default: 100000, or plan.rows_per_query of --config]."),
    file_size: Optional[float] = typer.Option(None, "--file-size", help="Target Parquet file size in MB; fractions allowed (0.5 = 512 KiB) [default: 256]."),
    density: Optional[str] = typer.Option(None, "--density", help="Pre-scan: exact (one index scan, exact counts), sampled (probes; cost grows with ranges, not rows) or auto (by estimated table size and --rows-per-query) [default: auto]."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Histogram cache file (default $XDG_CACHE_HOME/sparsesync/histograms.duckdb, else ~/.cache/sparsesync/histograms.duckdb)."),
    refresh: bool = typer.Option(False, "--refresh", help="Rescan the key density even if the cache holds a histogram."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the histogram cache."),
    tinyint1_as_bool: Optional[bool] = typer.Option(None, "--tinyint1-as-bool", help="Map TINYINT(1)/BOOL to boolean [default: no, SMALLINT]."),
    wide_decimal_as_string: Optional[bool] = typer.Option(None, "--wide-decimal-as-string", help="Export DECIMAL with precision > 38 as text instead of refusing [default: no]."),
    sparse_threshold: Optional[float] = typer.Option(None, "--sparse-threshold", help="Rows per key below which a stretch is labelled sparse [default: 0.10]."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Plan file (default plans/<table>-<plan_id>.json)."),
) -> None:
    """Pre-scan key density and write a reviewable JSON plan.

    Reads only statistics and key aggregates (never row data) and writes only the plan and the
    histogram cache.

    Example: sparsesync plan mysql+pymysql://etl@db:3306/shop orders --rows-per-query 200000 --density sampled
    """
    from sparsesync.planner.api import make_plan
    from sparsesync.planner.typemap import TypeOptions
    from sparsesync.config import merge
    from sparsesync.source import resolve_url

    from . import current_config

    if table is None:  # `sparsesync plan TABLE` with the URL in the environment
        source_url, table = None, source_url
    try:
        opts = merge(
            current_config(), "plan", rows_per_query=rows_per_query, file_size_mb=file_size, density=density,
            sparse_threshold=sparse_threshold, cache=str(cache) if cache else None,
            tinyint1_as_bool=tinyint1_as_bool, wide_decimal_as_string=wide_decimal_as_string,
        )
        if no_cache and (cache is not None or refresh):
            raise UsageError("--no-cache cannot be combined with --cache or --refresh")
        if output is not None and output.exists() and output.is_dir():
            raise UsageError(f"-o {output} is a directory", hint="give a file name, e.g. -o plans/orders.json")
        plan = make_plan(
            resolve_url(source_url), table, key=key, rows_per_query=opts.rows_per_query,
            file_size=max(1, int(opts.file_size_mb * 1024 * 1024)), density=opts.density, sparse_threshold=opts.sparse_threshold,
            type_options=TypeOptions(
                tinyint1_as_bool=opts.tinyint1_as_bool, wide_decimal_as_string=opts.wide_decimal_as_string
            ),
            cache_path=opts.cache, refresh=refresh, use_cache=not no_cache,
        )
        path = output or Path("plans") / plan.default_filename()
        try:
            plan.save(path)
        except OSError as exc:
            raise UsageError(f"cannot write the plan to {path}: {exc.strerror or exc}", hint="choose another -o path") from exc
    except SparsesyncError as exc:
        raise fail(exc)
    e = plan.estimates
    s = plan.strategy
    typer.echo(
        f"{plan.source.table}: {len(plan.ranges)} ranges → {e.files} file(s), ~{e.rows:,} rows, "
        f"~{e.bytes / 1e6:,.1f} MB, {e.queries} queries"
    )
    typer.echo(
        f"density {s.density} ({s.density_reason}); pre-scan {s.prescan_queries} queries"
        + ("; histogram from cache" if s.from_cache else "")
    )
    h = plan.histogram
    if h.sparse_regions or h.gaps or h.outliers:
        typer.echo(f"{len(h.sparse_regions)} sparse region(s), {len(h.gaps)} gap(s), {len(h.outliers)} outlier key(s)")
    for w in plan.warnings:
        typer.echo(f"warning: {w}")
    typer.echo(f"plan written to {path}")
    typer.echo(f"run it with: sparsesync execute {path} --dest DIR|s3://bucket/prefix")
