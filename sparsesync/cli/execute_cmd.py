"""``sparsesync execute``, ``sparsesync verify`` and ``sparsesync run``."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from sparsesync.errors import SparsesyncError

from . import app, fail
from . import options as O


def _progress_renderer():
    """A progress callback and a closer: a rich bar on a terminal, plain log lines otherwise."""
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )

        bar = Progress(
            # the bar is rows written (committed file groups); what the readers have fetched is shown beside it
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows written"),
            TextColumn("{task.fields[read]:,} read, {task.fields[mb]:,.1f} MB"), TimeElapsedColumn(),
            TimeRemainingColumn(), transient=True,
        )
        state = {"task": None}

        def callback(ev) -> None:
            if ev.kind == "start":
                bar.start()
                state["task"] = bar.add_task("export", total=ev.rows_total, completed=ev.rows_written,
                                             read=ev.rows_done, mb=0.0)
            elif state["task"] is not None:
                bar.update(state["task"], completed=ev.rows_written, total=ev.rows_total, read=ev.rows_done,
                           mb=ev.bytes_done / 1e6)
            if ev.kind == "finish":
                bar.stop()

        return callback, bar.stop

    last = {"t": 0.0}

    def plain(ev) -> None:
        now = time.monotonic()
        # One line per finished file group, and at most one every 5 s for batches: readable in CI logs.
        if ev.kind in ("start", "group", "finish") or (ev.kind == "batch" and now - last["t"] >= 5):
            last["t"] = now
            what = f"file group {ev.group} done" if ev.kind == "group" else ev.kind
            # written = committed file groups; read = handed to the writers (readers fetch ahead of them)
            typer.echo(f"sparsesync: {what}: {ev.rows_written:,}/{ev.rows_total:,} rows written, {ev.rows_done:,} read",
                       err=True)

    return plain, lambda: None


def dask_options(engine: str, *, scheduler, workers, connections, shared_fs):
    """``DaskOptions`` for ``--engine dask`` (scheduler from ``$SPARSESYNC_DASK_SCHEDULER`` if not given),
    None for the local engine, which refuses the Dask-only options."""
    import os

    from sparsesync.errors import UsageError

    if engine == "local":
        given = [n for n, v in (("--scheduler", scheduler), ("--connections", connections), ("--shared-fs", shared_fs)) if v]
        if given:
            raise UsageError(f"{', '.join(given)} apply to --engine dask only", hint="add --engine dask")
        return None
    if engine != "dask":
        raise UsageError(f"--engine must be local or dask, got {engine!r}")
    from sparsesync.executor.engine_dask import SCHEDULER_ENV, DaskOptions

    return DaskOptions(scheduler=scheduler or os.environ.get(SCHEDULER_ENV) or None, n_workers=workers,
                       connections=connections, shared_fs=shared_fs)


def _execute(plan, dest, *, source, reader, workers, compression, ledger, overwrite, dry_run, strict_dates,
             no_verify, iam_role, memory_limit=None, oversize="fail", nul="fail", retries=None, staging=None, shard=None,
             consistency="range", engine="local", scheduler=None, connections=None, shared_fs=False,
             resume: str | None = None) -> None:
    from sparsesync import interrupt
    from sparsesync.executor.run import execute_plan
    from sparsesync.config import merge

    from . import current_config

    try:
        dask = dask_options(engine, scheduler=scheduler, workers=workers, connections=connections, shared_fs=shared_fs)
        opts = merge(
            current_config(), "execute", reader=reader, workers=workers, compression=compression, ledger=ledger,
            strict_dates=strict_dates, memory_limit_mb=memory_limit, retries=retries, staging=staging,
        )
    except SparsesyncError as exc:
        raise fail(exc)
    callback, close = (None, lambda: None) if dry_run else _progress_renderer()
    try:
        # SIGINT/SIGTERM: the run stops at its next batch, releases its lock and says how to resume.
        with interrupt.handling(resume=resume):
            report = execute_plan(
                plan, dest, source_url=source, reader=opts.reader, workers=opts.workers, compression=opts.compression,
                ledger=opts.ledger, overwrite=overwrite, dry_run=dry_run, strict_dates=opts.strict_dates,
                verify=not no_verify, iam_role=iam_role, progress=callback, batch_rows=opts.batch_rows,
                memory_limit_mb=opts.memory_limit_mb, oversize=oversize, nul=nul, retries=opts.retries, staging=opts.staging,
                shard=shard, consistency=consistency, dask=dask,
            )
    except SparsesyncError as exc:
        close()
        raise fail(exc)
    close()
    if dry_run:
        for sql in report.queries_sql:
            typer.echo(sql + ";")
    for line in report.summary_lines():
        typer.echo(line)


@app.command("execute")
def execute_command(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="Plan file written by `sparsesync plan`."),
    dest: str = O.DEST,
    source: Optional[str] = typer.Option(None, "--source", help="Source URL (default SPARSESYNC_SOURCE_URL, else the plan's host with SPARSESYNC_SOURCE_PASSWORD). Must be the plan's source."),
    reader: Optional[str] = O.READER,
    workers: Optional[int] = O.WORKERS,
    compression: Optional[str] = O.COMPRESSION,
    ledger: Optional[str] = typer.Option(None, "--ledger", help="Ledger file (default: _ledger.json beside the output)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo a finished run from scratch."),
    dry_run: bool = O.DRY_RUN,
    strict_dates: Optional[bool] = O.STRICT_DATES,
    no_verify: bool = O.NO_VERIFY,
    iam_role: Optional[str] = O.IAM_ROLE,
    memory_limit: Optional[int] = O.MEMORY_LIMIT,
    oversize: str = O.OVERSIZE,
    nul: str = O.NUL,
    retries: Optional[int] = O.RETRIES,
    staging: Optional[str] = O.STAGING,
    shard: Optional[str] = O.SHARD,
    consistency: str = O.CONSISTENCY,
    engine: str = O.ENGINE,
    scheduler: Optional[str] = O.SCHEDULER,
    connections: Optional[int] = O.DASK_CONNECTIONS,
    shared_fs: bool = O.SHARED_FS,
) -> None:
    """Replay a plan into Parquet files plus manifest.json, copy.sql and create_table.sql; resumes after a crash.

    With --shard I/N only shard I's file groups are written (array jobs); `sparsesync finalize` then writes
    the load files and the manifest once every shard is done.

    Example: sparsesync execute plans/orders-20250101T000000Z-abc123.json --dest s3://lake/exports --iam-role arn:aws:iam::123:role/load

    Example: sparsesync execute plans/orders-20250101T000000Z-abc123.json --dest ./out --memory-limit 1024 --oversize truncate

    Example (array job, shard 2 of 8): sparsesync execute plans/orders-20250101T000000Z-abc123.json --dest s3://lake/exports --shard 2/8

    Example: sparsesync execute plans/orders-20250101T000000Z-abc123.json --dest ./out --consistency snapshot --workers 2

    Example: sparsesync execute plans/orders-20250101T000000Z-abc123.json --dest s3://lake/exports --engine dask --scheduler tcp://dask:8786
    """
    from sparsesync.planner.plan import load_plan

    try:
        if shard is not None:
            from sparsesync.executor.shard import parse_shard

            shard = parse_shard(shard)  # before the plan: a bad --shard is one line, whatever the plan
        plan = load_plan(plan_file)
    except SparsesyncError as exc:
        raise fail(exc)
    _execute(plan, dest, source=source, reader=reader, workers=workers, compression=compression, ledger=ledger,
             overwrite=overwrite, dry_run=dry_run, strict_dates=strict_dates, no_verify=no_verify, iam_role=iam_role,
             memory_limit=memory_limit, oversize=oversize, nul=nul, retries=retries, staging=staging, shard=shard,
             consistency=consistency, engine=engine, scheduler=scheduler, connections=connections,
             shared_fs=shared_fs)


@app.command("verify")
def verify_command(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="Plan file of the finished run."),
    dest: str = typer.Option(..., "--dest", help="The --dest given to execute."),
    source: Optional[str] = typer.Option(None, "--source", help="Source URL (default as for execute)."),
    all_columns: bool = typer.Option(False, "--all-columns", help="Checksum every value, not only keys and counts."),
) -> None:
    """Compare the output with the source, per key range (NULL keys included): row counts and an order-independent
    checksum computed by the source server in SQL and by DuckDB over the Parquet parts; exit 9 names the ranges.

    Example: sparsesync verify plans/orders-20250101T000000Z-abc123.json --dest ./out --all-columns
    """
    from sparsesync.executor.verify import verify_output
    from sparsesync.planner.plan import load_plan

    try:
        plan = load_plan(plan_file)
        report = verify_output(plan, dest, source_url=source, all_columns=all_columns)
    except SparsesyncError as exc:
        raise fail(exc)
    typer.echo(report.summary())


@app.command("run")
def run_command(
    source_url: str = typer.Argument(..., metavar="SOURCE_URL", help="SQLAlchemy URL of the source, as for `sparsesync plan`; with only TABLE given, SPARSESYNC_SOURCE_URL is used. Never written anywhere."),
    table: Optional[str] = typer.Argument(None, metavar="TABLE", help="Table to export."),
    dest: str = O.DEST,
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
    plans_dir: Optional[Path] = O.PLANS_DIR,
    reader: Optional[str] = O.READER,
    workers: Optional[int] = O.WORKERS,
    compression: Optional[str] = O.COMPRESSION,
    dry_run: bool = O.DRY_RUN,
    strict_dates: Optional[bool] = O.STRICT_DATES,
    no_verify: bool = O.NO_VERIFY,
    iam_role: Optional[str] = O.IAM_ROLE,
    memory_limit: Optional[int] = O.MEMORY_LIMIT,
    oversize: str = O.OVERSIZE,
    nul: str = O.NUL,
    retries: Optional[int] = O.RETRIES,
    staging: Optional[str] = O.STAGING,
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help="Refused: each shard's run would plan anew (different plans). Shard with `sparsesync plan` once, then `sparsesync execute PLAN --shard I/N` per shard."),
    consistency: str = O.CONSISTENCY,
    engine: str = O.ENGINE,
    scheduler: Optional[str] = O.SCHEDULER,
    connections: Optional[int] = O.DASK_CONNECTIONS,
    shared_fs: bool = O.SHARED_FS,
) -> None:
    """Plan and execute in one go (the plan is saved under --plans-dir, default plans/, for review and resume).

    Takes plan's and execute's options with the same meaning, except --source (the URL is the SOURCE_URL
    argument), --ledger and --overwrite (every run makes a new plan: resume or redo it with execute) and
    --shard (refused: shard one plan with plan + execute --shard).

    Example: sparsesync run mysql+pymysql://etl@db:3306/shop orders --dest ./out --rows-per-query 200000

    Example (URL in SPARSESYNC_SOURCE_URL): sparsesync run orders --dest ./out
    """
    from sparsesync import interrupt
    from sparsesync.planner.api import make_plan
    from sparsesync.planner.typemap import TypeOptions
    from sparsesync.config import merge
    from sparsesync.source import resolve_url

    from . import current_config
    from .paths import plans_dir_error, writable_plans_dir

    from sparsesync.errors import UsageError

    if table is None:  # `sparsesync run TABLE` with the URL in the environment, as `plan TABLE`
        source_url, table = None, source_url
    plans_dir = plans_dir or O.DEFAULT_PLANS_DIR
    try:
        if shard is not None:
            raise UsageError("run cannot take --shard: each shard's run would make its own plan, and shards of "
                             "different plans do not add up to one export",
                             hint="plan once (sparsesync plan URL TABLE), then sparsesync execute PLAN --shard I/N per shard")
        if no_cache and (cache is not None or refresh):
            raise UsageError("--no-cache cannot be combined with --cache or --refresh")
        # Before the pre-scan: a Dask-only option without --engine dask is refused before anything is written.
        dask_options(engine, scheduler=scheduler, workers=workers, connections=connections, shared_fs=shared_fs)
        # SIGINT/SIGTERM while planning stop at once (nothing is exported yet), one line, exit 130/143.
        with interrupt.handling(resume="nothing was exported yet: re-run the same command"):
            source_url = resolve_url(source_url)  # the same rule as `plan` (password from the environment)
            po = merge(
                current_config(), "plan", rows_per_query=rows_per_query, file_size_mb=file_size, density=density,
                sparse_threshold=sparse_threshold, cache=str(cache) if cache else None,
                tinyint1_as_bool=tinyint1_as_bool, wide_decimal_as_string=wide_decimal_as_string,
            )
            writable_plans_dir(plans_dir)  # before the pre-scan: a read-only working directory is one line
            plan = make_plan(
                source_url, table, key=key, rows_per_query=po.rows_per_query, file_size=max(1, int(po.file_size_mb * 1024 * 1024)),
                density=po.density, sparse_threshold=po.sparse_threshold, cache_path=po.cache, refresh=refresh,
                use_cache=not no_cache,
                type_options=TypeOptions(tinyint1_as_bool=po.tinyint1_as_bool, wide_decimal_as_string=po.wide_decimal_as_string),
            )
            try:
                path = plan.save(plans_dir / plan.default_filename())
            except OSError as exc:
                raise plans_dir_error(plans_dir, exc) from exc
    except SparsesyncError as exc:
        raise fail(exc)
    typer.echo(f"plan written to {path}")
    _execute(plan, dest, source=source_url, reader=reader, workers=workers, compression=compression, ledger=None,
             overwrite=False, dry_run=dry_run, strict_dates=strict_dates, no_verify=no_verify, iam_role=iam_role,
             memory_limit=memory_limit, oversize=oversize, nul=nul, retries=retries, staging=staging, consistency=consistency,
             engine=engine, scheduler=scheduler, connections=connections, shared_fs=shared_fs,
             resume=f"resume with: sparsesync execute {shlex.quote(str(path))} --dest {shlex.quote(dest)} --source SOURCE_URL")
