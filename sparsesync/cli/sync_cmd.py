"""``sparsesync sync``, ``sparsesync load`` and ``sparsesync gc``."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from sparsesync import interrupt
from sparsesync.errors import DestinationError, SparsesyncError, UsageError

from . import app, fail
from . import options as O
from .execute_cmd import dask_options


@app.command("sync")
def sync_command(
    source_url: str = typer.Argument(..., metavar="SOURCE_URL", help="SQLAlchemy URL of the source database (never written anywhere)."),
    tables: Optional[List[str]] = typer.Argument(None, metavar="[TABLE]...", help="Tables to sync (or --all)."),
    dest: str = typer.Option(..., "--dest", help="Directory or s3://bucket/prefix holding each table's image under <dest>/<table>/."),
    all_tables: bool = typer.Option(False, "--all", help="Every base table of the database (views are skipped)."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", metavar="GLOB", help="Leave out tables matching GLOB (repeatable), e.g. --exclude 'tmp_*'."),
    connections: int = typer.Option(4, "--connections", help="At most this many source connections at once, over all tables, idle ones included."),
    detect: str = typer.Option("checksum", "--detect", help="checksum (server-side per-span checksums; sees updates and deletes), cursor:COL (e.g. cursor:updated_at; no deletes) or none (appends only)."),
    lookback: str = typer.Option("10m", "--lookback", help="With --detect cursor:COL, re-read rows changed this long before the last watermark; a number and a unit s, m, h, d or w (e.g. 90s, 10m, 1h).", show_default=True),
    full: bool = typer.Option(False, "--full", help="Start a new image: re-read every span (needed only after a schema change that sync refuses to carry over)."),
    key: Optional[str] = O.KEY,
    rows_per_query: Optional[int] = O.ROWS_PER_QUERY,
    file_size: Optional[float] = O.FILE_SIZE,
    density: Optional[str] = O.DENSITY,
    cache: Optional[Path] = O.CACHE,
    no_cache: bool = O.NO_CACHE,
    tinyint1_as_bool: Optional[bool] = O.TINYINT1_AS_BOOL,
    wide_decimal_as_string: Optional[bool] = O.WIDE_DECIMAL_AS_STRING,
    sparse_threshold: Optional[float] = O.SPARSE_THRESHOLD,
    reader: Optional[str] = O.READER,
    workers: Optional[int] = O.WORKERS,
    compression: Optional[str] = O.COMPRESSION,
    strict_dates: Optional[bool] = O.STRICT_DATES,
    iam_role: Optional[str] = O.IAM_ROLE,
    memory_limit: Optional[int] = O.MEMORY_LIMIT,
    oversize: str = O.OVERSIZE,
    nul: str = O.NUL,
    retries: Optional[int] = O.RETRIES,
    staging: Optional[str] = O.STAGING,
    consistency: str = typer.Option("range", "--consistency", help="range only: each range is read consistently on its own [default: range]. snapshot is refused: a sync's change detection and its export are separate reads, so no one point in time covers both (export one with sparsesync run/execute --consistency snapshot)."),
    engine: str = O.ENGINE,
    scheduler: Optional[str] = O.SCHEDULER,
    shared_fs: bool = O.SHARED_FS,
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics on this port while the sync runs."),
    metrics_addr: str = typer.Option("0.0.0.0", "--metrics-addr", help="Address for --metrics-port (127.0.0.1 for this host only)."),
    metrics_file: Optional[Path] = typer.Option(None, "--metrics-file", help="Write the metrics at the end in node-exporter textfile format (name it *.prom); its directory is checked before the sync starts."),
) -> None:
    """Bring each table's Parquet image up to date: first run, appends, changed spans; many tables at once.

    Tables run in parallel, largest first, under one connection budget; a failing table does not stop the others. Prints one line per table, exits non-zero naming the failed ones and writes <dest>/_sync_report.json.

    SIGINT/SIGTERM stop it between file groups: unswapped tables keep their previous image, the summary and report say interrupted, exit 130/143.

    Example: sparsesync sync mysql+pymysql://etl@db:3306/shop --all --exclude 'tmp_*' --dest s3://lake/sync --connections 4 --metrics-file /var/lib/node_exporter/sparsesync.prom
    """
    from sparsesync.planner.typemap import TypeOptions
    from sparsesync.config import merge
    from sparsesync.source import resolve_url
    from sparsesync.sync.duration import parse_duration
    from sparsesync.sync.many import sync_many
    from sparsesync.sync.metrics import SyncMetrics
    from sparsesync.sync.table import SyncOptions

    from . import _state, current_config

    try:
        if all_tables == bool(tables):
            raise UsageError("name the tables to sync or pass --all (not both)",
                             hint="e.g. sparsesync sync URL orders customers --dest ./lake")
        if no_cache and cache is not None:
            raise UsageError("--no-cache cannot be combined with --cache")
        if consistency != "range":
            what = "is not available for sync" if consistency == "snapshot" else "must be range"
            raise UsageError(f"--consistency {consistency} {what}: a sync's change detection and its export are "
                             "separate reads, no one point in time covers both",
                             hint="drop --consistency (sync reads each range consistently on its own); for one "
                                  "point in time export with sparsesync run/execute --consistency snapshot")
        check_output_paths(dest, metrics_file)  # before any work: not after the sync (issue 16, finding 9)
        cfg = current_config()
        po = merge(cfg, "plan", rows_per_query=rows_per_query, file_size_mb=file_size, density=density,
                   sparse_threshold=sparse_threshold, cache=str(cache) if cache else None,
                   tinyint1_as_bool=tinyint1_as_bool, wide_decimal_as_string=wide_decimal_as_string)
        eo = merge(cfg, "execute", reader=reader, workers=workers, compression=compression, strict_dates=strict_dates,
                   memory_limit_mb=memory_limit, retries=retries, staging=staging)
        options = SyncOptions(
            detect=detect, lookback_s=parse_duration(lookback, "--lookback"), full=full, key=key,
            rows_per_query=po.rows_per_query, file_size_mb=po.file_size_mb, density=po.density,
            sparse_threshold=po.sparse_threshold, cache_path=po.cache, use_cache=not no_cache,
            type_options=TypeOptions(tinyint1_as_bool=po.tinyint1_as_bool, wide_decimal_as_string=po.wide_decimal_as_string),
            reader=eo.reader, workers=eo.workers, compression=eo.compression, strict_dates=eo.strict_dates,
            batch_rows=eo.batch_rows, iam_role=iam_role, memory_limit_mb=eo.memory_limit_mb, oversize=oversize,
            nul=nul, retries=eo.retries, staging=eo.staging,
        )
        # The export settings once, before any table starts (else each table would fail on them alone).
        from sparsesync.executor.oversize import check_mode, check_nul_mode
        from sparsesync.executor.run import memory_budget

        check_mode(oversize)
        check_nul_mode(nul)
        memory_budget(options.memory_limit_mb, options.workers, dest)
        url = resolve_url(source_url)
        # --engine dask: every table's file groups run on one cluster, at most --workers of a table's at once.
        dask = dask_options(engine, scheduler=scheduler, workers=eo.workers if engine == "dask" else None,
                            connections=eo.workers if engine == "dask" else None, shared_fs=shared_fs)
        if dask is not None:
            dask.check_dest(dest)
    except SparsesyncError as exc:
        raise fail(exc)
    if _state.get("log_level") is None:  # one JSON line per table by default; --log-level overrides
        logging.getLogger("sparsesync.sync").setLevel(logging.INFO)

    metrics = SyncMetrics()
    if metrics_port is not None:
        try:
            metrics.serve(metrics_port, metrics_addr)
        except OSError as exc:
            raise fail(UsageError(f"cannot serve metrics on {metrics_addr}:{metrics_port}: {exc.strerror or exc}",
                                  hint="choose a free --metrics-port"))
    progress, close = _progress()
    try:
        with contextlib.ExitStack() as stack:
            # SIGINT/SIGTERM stop the tables at their next batch; the summary and report still follow.
            stack.enter_context(interrupt.handling())
            if dask is not None:
                from sparsesync.source import parse_url

                live = stack.enter_context(dask.session(source_password=parse_url(url).password))
                options = dataclasses.replace(options, dask=live)
            summary = sync_many(url, None if all_tables else tables, dest, options, exclude=exclude or (),
                                connections=connections, events=lambda ev: (metrics(ev), progress(ev)))
    except SparsesyncError as exc:
        close()
        raise fail(exc)
    finally:
        metrics.stop()
    close()
    for line in summary.summary_lines():
        typer.echo(line)
    code = summary.exit_code()
    if summary.failed:
        typer.echo(f"sparsesync: error: {len(summary.failed)} table(s) failed: {', '.join(summary.failed)}", err=True)
    if summary.interrupted:
        committed = sum(1 for t in summary.tables if t["status"] in ("ok", "empty", "skipped"))
        typer.echo(f"sparsesync: interrupted by {summary.interrupted}; re-run the same command to resume "
                   f"({committed} table(s) committed, {len(summary.with_status('interrupted'))} interrupted, "
                   f"{len(summary.with_status('not_started'))} not started)", err=True)
    if metrics_file is not None:
        try:
            metrics.write_textfile(str(metrics_file))
        except OSError as exc:
            # Checked before the sync, so the path changed meanwhile. The tables' outcome above stands; a sync
            # that otherwise succeeded exits 8 (an output could not be written), never a silent usage error.
            code = code or DestinationError.exit_code
            typer.echo(f"sparsesync: error: cannot write --metrics-file {metrics_file}: {exc.strerror or exc} "
                       f"(the tables' outcome above stands; exit {code})", err=True)
    if code:
        raise typer.Exit(code)


def check_output_paths(dest: str, metrics_file: Optional[Path]) -> None:
    """``--dest`` and ``--metrics-file`` can be written, before the source is even connected to: a local
    destination is a directory or can be made as one (its nearest existing parent is a writable directory),
    an S3 destination parses as ``s3://bucket/prefix``; the metrics file's directory exists and is writable.
    Each failure is one :class:`UsageError` line naming the option."""
    import os

    from sparsesync.atomic import probe_writable
    from sparsesync.executor.dest import is_s3
    from sparsesync.sync.metrics import check_textfile

    text = (dest or "").strip()
    if not text:
        raise UsageError("--dest is empty", hint="pass a directory or s3://bucket/prefix")
    if is_s3(text):
        from sparsesync.executor.s3 import parse_s3_url

        try:
            parse_s3_url(text)
        except UsageError as exc:
            raise UsageError(f"--dest: {exc.message}", hint=exc.hint) from None
    elif "://" in text:
        raise UsageError(f"--dest: unsupported destination scheme {text.split('://', 1)[0]}://",
                         hint="pass a directory or s3://bucket/prefix")
    else:
        path = os.path.abspath(text)
        probe_in = path
        while not os.path.exists(probe_in):  # the nearest existing parent: where the folders would be made
            probe_in = os.path.dirname(probe_in)
        if not os.path.isdir(probe_in):
            raise UsageError(f"--dest {dest}: {probe_in} is not a directory", hint="choose another --dest")
        try:
            probe_writable(probe_in)
        except OSError as exc:
            raise UsageError(f"--dest {dest}: cannot write in {probe_in}: {exc.strerror or exc}",
                             hint="choose a writable --dest") from None
    if metrics_file is not None:
        check_textfile(str(metrics_file))


class TableProgress:
    """Per-table and overall progress bars on a terminal, fed by sync events (nothing when piped: the JSON-line
    events on stderr are the record then)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), transient=True)
        self.tasks: dict = {}

    def __call__(self, ev: dict) -> None:
        kind, table, bar = ev.get("event"), ev.get("table"), self.bar
        if not self.tasks:
            bar.start()
            self.tasks["*"] = bar.add_task("all tables", total=None, note="")
        if kind == "table_start":
            self.tasks[table] = bar.add_task(table, total=None, note="starting")
        elif kind == "table_done":
            bar.update(self.tasks[table], total=1, completed=1, note=ev.get("status", ""))
            done = sum(1 for k, t in self.tasks.items() if k != "*" and bar.tasks[t].finished)
            bar.update(self.tasks["*"], completed=done, note=f"{done} done")
        elif table in self.tasks:
            if ev.get("rows_total"):
                bar.update(self.tasks[table], total=ev["rows_total"], completed=ev.get("rows_written", 0))  # committed groups
            bar.update(self.tasks[table], note=str(ev.get("kind") or kind or ""))

    def close(self) -> None:
        self.bar.stop()


def _progress():
    """An events callback and a closer: :class:`TableProgress` on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return (lambda ev: None), (lambda: None)
    p = TableProgress()
    return p, p.close


@app.command("load")
def load_command(
    dest: str = typer.Argument(..., metavar="DEST", help="The --dest of the sync (directory or s3://bucket/prefix)."),
    table: str = typer.Argument(..., metavar="TABLE", help="Table whose pending runs to apply."),
    into: str = typer.Option(..., "--into", help="Warehouse: duckdb:///file.duckdb (relative; four slashes for absolute) or redshift+<driver>://user@host:5439/db."),
    target: Optional[str] = typer.Option(None, "--target", help="Warehouse table, TABLE or SCHEMA.TABLE (default: the source table's name)."),
    iam_role: Optional[str] = typer.Option(None, "--iam-role", help="IAM role ARN for Redshift's COPY (default: none; load.sql then says <IAM_ROLE_ARN>)."),
    from_image: bool = typer.Option(False, "--from-image", help="Rebuild the target from the current image (current.manifest.json) instead of applying runs (default: off; load does it by itself when the target is new, missing or behind the runs gc kept)."),
) -> None:
    """Apply the runs the warehouse has not seen yet, in order, each exactly once (a run is one transaction).

    Each run is applied with its own columns; the target is evolved (ALTER … ADD/DROP/RENAME COLUMN, a
    rebuilt table for a type change) before a run of a newer schema. A new target, or one behind the runs
    gc left, is loaded from the current image; a full run replaces every earlier pending run.

    Example: sparsesync load ./lake orders --into duckdb:///warehouse.duckdb

    Example: sparsesync load ./lake orders --into duckdb:///warehouse.duckdb --from-image
    """
    from sparsesync.sync.load import load_pending

    try:
        result = load_pending(dest, table, into, target=target, iam_role=iam_role, from_image=from_image)
    except SparsesyncError as exc:
        raise fail(exc)
    typer.echo(result.summary())


@app.command("gc")
def gc_command(
    dest: str = typer.Argument(..., metavar="DEST", help="The --dest of the sync."),
    table: Optional[str] = typer.Argument(None, metavar="[TABLE]", help="One table [default: every table with an image]."),
    keep: str = typer.Option("7d", "--keep", help="Keep unreferenced parts this long after they could last have been read, and a crashed run's folder this long after its last write; a number and a unit s, m, h, d or w (e.g. 90s, 12h, 7d).", show_default=True),
    delete: bool = typer.Option(False, "--delete", help="Really remove them; without it gc only lists what it would remove."),
) -> None:
    """Remove what no image needs any more once older than --keep (dry run by default): unreferenced parts, crashed runs' folders, stale locks.

    Parts no image references; the folders of crashed runs (parts, ledger, report, manifest, staging leftovers) with their <run_id>.lock; lock files left by dead processes. Never a run the image has applied (its manifest.json and load.sql stay for lagging warehouses) nor one a live process owns.

    Example: sparsesync gc s3://lake/sync orders --keep 7d --delete
    """
    from sparsesync.sync.duration import parse_duration
    from sparsesync.sync.gc import collect_garbage

    try:
        results = collect_garbage(dest, table, keep_s=parse_duration(keep), delete=delete)
    except SparsesyncError as exc:
        raise fail(exc)
    for res in results:
        typer.echo(res.summary())
        verb = "would remove" if res.dry_run else "removed"
        for rel in res.removed:
            typer.echo(f"  {verb} {rel}")
        for rel in res.dead_runs:
            n = sum(1 for f in res.dead_run_files if f.startswith(rel + "/"))
            typer.echo(f"  {verb} crashed run {rel}/ ({n} file(s))")
        for rel in res.locks:
            typer.echo(f"  {verb} stale lock {rel}")
        for who in res.live:
            typer.echo(f"  kept {who}")
    if not delete and not all(r.nothing for r in results):
        typer.echo("dry run: nothing was removed; add --delete to remove these")
