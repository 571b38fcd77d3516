"""``sparsesync plan``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sparsesync.errors import SparsesyncError, UsageError

from . import app, fail
from . import options as O


@app.command("plan")
def plan_command(
    source_url: str = typer.Argument(
        ..., metavar="SOURCE_URL", help="SQLAlchemy URL of the source; with only TABLE given, SPARSESYNC_SOURCE_URL is used. Never written anywhere."
    ),
    table: Optional[str] = typer.Argument(None, metavar="TABLE", help="Table to plan."),
    key: Optional[str] = O.KEY,
    rows_per_query: Optional[int] = O.ROWS_PER_QUERY,
    file_size: Optional[float] = O.FILE_SIZE,
    density: Optional[str] = O.DENSITY,
    cache: Optional[Path] = O.CACHE,
    refresh: bool = O.REFRESH,
    no_cache: bool = O.NO_CACHE,
    tinyint1_as_bool: Optional[bool] = O.TINYINT1_AS_BOOL,
    wide_decimal_as_string: Optional[bool] = O.WIDE_DECIMAL_AS_STRING,
    sparse_threshold: Optional[float] = O.SPARSE_THRESHOLD,
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="FILE", help="Plan file (default: <table>-<plan_id>.json in --plans-dir)."),
    plans_dir: Optional[Path] = O.PLANS_DIR,
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
        if output is not None and plans_dir is not None:
            raise UsageError("-o/--output names the plan file, --plans-dir its folder: pass one of them",
                             hint="e.g. -o plans/orders.json, or --plans-dir plans")
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
        path = output or (plans_dir or O.DEFAULT_PLANS_DIR) / plan.default_filename()
        try:
            plan.save(path)
        except OSError as exc:
            raise UsageError(f"cannot write the plan to {path}: {exc.strerror or exc}", hint="choose another -o FILE or --plans-dir DIR") from exc
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
