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


def _progress_renderer():
    """A progress callback and a closer: a rich bar on a terminal, plain log lines otherwise."""
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
            TextColumn("{task.fields[mb]:,.1f} MB read"), TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
        )
        state = {"task": None}

        def callback(ev) -> None:
            if ev.kind == "start":
                bar.start()
                state["task"] = bar.add_task("export", total=ev.rows_total, completed=ev.rows_done, mb=0.0)
            elif state["task"] is not None:
                bar.update(state["task"], completed=ev.rows_done, total=ev.rows_total, mb=ev.bytes_done / 1e6)
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
            typer.echo(f"sparsesync: {what}: {ev.rows_done:,}/{ev.rows_total:,} rows", err=True)

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


_RETRIES_HELP = ("Retries per range after a transient source fault (lost connection, deadlock, lock wait "
                 "timeout), with exponential backoff; 0 stops at the first [default: 5].")
_SHARD_HELP = ("Array jobs: write only shard I's file groups (I = 1…N, balanced by estimated bytes, the same split "
               "on every machine), with its own ledger and lock; re-running a shard resumes it. auto/N takes I from "
               "$JOB_COMPLETION_INDEX or $AWS_BATCH_JOB_ARRAY_INDEX (+1). Then run `sparsesync finalize`. "
               "Example: --shard 3/8")
_CONSISTENCY_HELP = ("range: each range is read consistently on its own (a serial --reader pymysql run still "
                     "reads one snapshot); snapshot: the whole table at ONE point in time with any reader and "
                     "--workers (MySQL/MariaDB: InnoDB, and the LOCK TABLES privilege when more than one "
                     "connection is used), or a one-line error before anything is written [default: range].")
_NUL_HELP = ("A NUL byte inside a text value (Redshift's COPY rejects it in a VARCHAR): fail (stop at the first, "
             "naming column and key), strip (remove the NUL bytes, counted in the report) or keep (write it; report "
             "and copy.sql warn) [default: fail].")
_ENGINE_HELP = ("local (threads in this process) or dask (each file group a task on a Dask cluster; needs the "
                "package's dask extra).")
_SCHEDULER_HELP = ("--engine dask: scheduler address, e.g. tcp://host:8786 (default: $SPARSESYNC_DASK_SCHEDULER, "
                   "else a LocalCluster of --workers processes on this machine).")
_CONNECTIONS_HELP = ("--engine dask: at most this many file groups (source connections) at once (default: the "
                     "cluster's worker threads).")
_SHARED_FS_HELP = "--engine dask with --scheduler: the local --dest directory is visible to every worker (NFS, …)."
_STAGING_HELP = ("S3 destinations: stage parts in a private directory (0700) made inside DIR before upload; "
                 "--consistency snapshot: spill rows the writer lags behind there too [default: $TMPDIR]. "
                 "Example: --staging /mnt/scratch")


@app.command("execute")
def execute_command(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="Plan file written by `sparsesync plan`."),
    dest: str = typer.Option(..., "--dest", help="Output directory or s3://bucket/prefix; files go to <dest>/<table>/<plan_id>/."),
    source: Optional[str] = typer.Option(None, "--source", help="Source URL (default SPARSESYNC_SOURCE_URL, else the plan's host with SPARSESYNC_SOURCE_PASSWORD). Must be the plan's source."),
    reader: Optional[str] = typer.Option(None, "--reader", help="auto, pymysql or connectorx [default: auto, or execute.reader of --config]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="File groups read in parallel (1 = one consistent snapshot) [default: 1]."),
    compression: Optional[str] = typer.Option(None, "--compression", help="zstd, snappy, gzip or none [default: zstd]."),
    ledger: Optional[str] = typer.Option(None, "--ledger", help="Ledger file (default: _ledger.json beside the output)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo a finished run from scratch."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check drift and print the range queries; read and write nothing."),
    strict_dates: Optional[bool] = typer.Option(None, "--strict-dates", help="Fail on zero dates instead of writing NULL [default: no]."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the row-count check at the end."),
    iam_role: Optional[str] = typer.Option(None, "--iam-role", help="IAM role ARN written into copy.sql."),
    memory_limit: Optional[int] = typer.Option(None, "--memory-limit", help="Peak memory target in MB; batches and row groups are sized in bytes to stay under it [default: 512, or execute.memory_limit_mb]."),
    oversize: str = typer.Option("fail", "--oversize", help="A text/binary value longer than its Redshift column holds (VARCHAR ≤ 65535, VARBYTE ≤ 1024000 bytes): fail (stop at the first, naming column and key), truncate (cut, UTF-8 safe, counted in the report) or keep (write it; report and copy.sql warn)."),
    nul: str = typer.Option("fail", "--nul", help=_NUL_HELP),
    retries: Optional[int] = typer.Option(None, "--retries", help=_RETRIES_HELP),
    staging: Optional[str] = typer.Option(None, "--staging", metavar="DIR", help=_STAGING_HELP),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help=_SHARD_HELP),
    consistency: str = typer.Option("range", "--consistency", help=_CONSISTENCY_HELP),
    engine: str = typer.Option("local", "--engine", help=_ENGINE_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS", help=_SCHEDULER_HELP),
    connections: Optional[int] = typer.Option(None, "--connections", help=_CONNECTIONS_HELP),
    shared_fs: bool = typer.Option(False, "--shared-fs", help=_SHARED_FS_HELP),
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
    dest: str = typer.Option(..., "--dest", help="Output directory or s3://bucket/prefix."),
    key: Optional[str] = typer.Option(None, "--key", help="Indexed integer column to range over (default: the primary key)."),
    rows_per_query: Optional[int] = typer.Option(None, "--rows-per-query", help="Upper bound of estimated rows per range query [default: 100000]."),
    file_size: Optional[float] = typer.Option(None, "--file-size", help="Target Parquet file size in MB; fractions allowed (0.5 = 512 KiB) [default: 256]."),
    density: Optional[str] = typer.Option(None, "--density", help="Pre-scan: exact, sampled or auto [default: auto]."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Histogram cache file (default as for `sparsesync plan`)."),
    refresh: bool = typer.Option(False, "--refresh", help="Rescan the key density even if the cache holds a histogram."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the histogram cache."),
    tinyint1_as_bool: Optional[bool] = typer.Option(None, "--tinyint1-as-bool", help="Map TINYINT(1)/BOOL to boolean."),
    wide_decimal_as_string: Optional[bool] = typer.Option(None, "--wide-decimal-as-string", help="Export DECIMAL(p>38) as text."),
    plans_dir: Path = typer.Option(Path("plans"), "--plans-dir", help="Folder the plan is saved in (made if missing; must be writable)."),
    reader: Optional[str] = typer.Option(None, "--reader", help="auto, pymysql or connectorx [default: auto, or execute.reader of --config]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="File groups read in parallel [default: 1]."),
    compression: Optional[str] = typer.Option(None, "--compression", help="zstd, snappy, gzip or none [default: zstd]."),
    strict_dates: Optional[bool] = typer.Option(None, "--strict-dates", help="Fail on zero dates instead of writing NULL [default: no]."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the row-count check at the end."),
    iam_role: Optional[str] = typer.Option(None, "--iam-role", help="IAM role ARN written into copy.sql."),
    memory_limit: Optional[int] = typer.Option(None, "--memory-limit", help="Peak memory target in MB; batches and row groups are sized in bytes to stay under it [default: 512, or execute.memory_limit_mb]."),
    oversize: str = typer.Option("fail", "--oversize", help="A text/binary value longer than its Redshift column holds (VARCHAR ≤ 65535, VARBYTE ≤ 1024000 bytes): fail (stop at the first, naming column and key), truncate (cut, UTF-8 safe, counted in the report) or keep (write it; report and copy.sql warn)."),
    nul: str = typer.Option("fail", "--nul", help=_NUL_HELP),
    retries: Optional[int] = typer.Option(None, "--retries", help=_RETRIES_HELP),
    staging: Optional[str] = typer.Option(None, "--staging", metavar="DIR", help=_STAGING_HELP),
    consistency: str = typer.Option("range", "--consistency", help=_CONSISTENCY_HELP),
) -> None:
    """Plan and execute in one go (the plan is saved under plans/ for review and resume).

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

    if table is None:  # `sparsesync run TABLE` with the URL in the environment, as `plan TABLE`
        source_url, table = None, source_url
    try:
        # SIGINT/SIGTERM while planning stop at once (nothing is exported yet), one line, exit 130/143.
        with interrupt.handling(resume="nothing was exported yet: re-run the same command"):
            source_url = resolve_url(source_url)  # the same rule as `plan` (password from the environment)
            po = merge(
                current_config(), "plan", rows_per_query=rows_per_query, file_size_mb=file_size, density=density,
                cache=str(cache) if cache else None, tinyint1_as_bool=tinyint1_as_bool,
                wide_decimal_as_string=wide_decimal_as_string,
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
             overwrite=False, dry_run=False, strict_dates=strict_dates, no_verify=no_verify, iam_role=iam_role,
             memory_limit=memory_limit, oversize=oversize, nul=nul, retries=retries, staging=staging, consistency=consistency,
             resume=f"resume with: sparsesync execute {shlex.quote(str(path))} --dest {shlex.quote(dest)} --source SOURCE_URL")
