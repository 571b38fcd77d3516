"""``sparsesync finalize``: commit a sharded run (array jobs) once every shard is done."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sparsesync.errors import SparsesyncError

from . import app, fail


@app.command("finalize")
def finalize_command(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="The plan file every shard executed."),
    dest: str = typer.Option(..., "--dest", help="The --dest the shards wrote to."),
    source: Optional[str] = typer.Option(None, "--source", help="Source URL for the count check (default as for execute)."),
    iam_role: Optional[str] = typer.Option(None, "--iam-role", help="IAM role ARN written into copy.sql."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the per-range row-count check against the source."),
) -> None:
    """After `execute --shard I/N` for every I: check every file group is done exactly once, compare the
    row counts per range with the source, then write create_table.sql, copy.sql, _report.json and, last,
    manifest.json. Before every shard is done it names the missing groups and their shards, writes
    nothing and exits 11.

    Example: sparsesync finalize plans/orders-20250101T000000Z-abc123.json --dest s3://lake/exports --iam-role arn:aws:iam::123:role/load
    """
    from sparsesync.executor.shard import finalize_plan
    from sparsesync.planner.plan import load_plan

    try:
        plan = load_plan(plan_file)
        report = finalize_plan(plan, dest, source_url=source, iam_role=iam_role, verify=not no_verify)
    except SparsesyncError as exc:
        raise fail(exc)
    if report.status == "already-complete":
        typer.echo(f"plan {plan.plan_id} is already finalized in {report.dest} (manifest exists)")
        return
    for line in report.summary_lines():
        typer.echo(line)
