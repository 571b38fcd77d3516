"""``sparsesync plan``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sparsesync.errors import SparsesyncError

from . import app, fail


@app.command("plan")
def plan_command(
    source_url: str = typer.Argument(
        ..., metavar="SOURCE_URL", help="SQLAlchemy URL of the source; with only TABLE given, SPARSESYNC_SOURCE_URL is used. Never written anywhere."
    ),
    table: Optional[str] = typer.Argument(None, metavar="TABLE", help="Table to plan."),
    key: Optional[str] = typer.Option(None, "--key", help="Indexed integer column to range over (default: the primary key)."),
    rows_per_query: int = typer.Option(100_000, "--rows-per-query", help="Upper bound of estimated rows per range query."),
    file_size: int = typer.Option(256, "--file-size", help="Target Parquet file size in MB."),
    density: str = typer.Option("auto", "--density", help="Pre-scan: exact, sampled or auto (by table size)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Plan file (default plans/<table>-<plan_id>.json)."),
) -> None:
    """Pre-scan key density and write a reviewable JSON plan.

    Example: sparsesync plan mysql+pymysql://etl@db:3306/shop orders --rows-per-query 200000
    """
    from planner.api import make_plan
    from sparsesync.source import resolve_url

    if table is None:  # `sparsesync plan TABLE` with the URL in the environment
        source_url, table = None, source_url
    try:
        plan = make_plan(
            resolve_url(source_url), table, key=key, rows_per_query=rows_per_query,
            file_size=file_size * 1024 * 1024, density=density,
        )
        path = output or Path("plans") / plan.default_filename()
        plan.save(path)
    except SparsesyncError as exc:
        raise fail(exc)
    e = plan.estimates
    typer.echo(
        f"{plan.source.table}: {len(plan.ranges)} ranges → {e.files} file(s), ~{e.rows:,} rows, "
        f"~{e.bytes / 1e6:,.1f} MB, {e.queries} queries (density {plan.strategy.density})"
    )
    typer.echo(f"plan written to {path}")
    typer.echo(f"run it with: sparsesync execute {path} --dest DIR|s3://bucket/prefix")
