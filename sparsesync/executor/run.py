"""``execute_plan``: replay a plan into Parquet parts, resumably, then write the Redshift load files.

Order of events, chosen so a crash at any instant leaves a state a re-run repairs:

1. drift check (re-introspect; schema change → refuse) — nothing written yet;
2. ledger loaded or created (the first write); leftovers of crashed runs removed: staging files, parts
   of groups that never reached ``done``, damaged parts of ``done`` groups;
3. each remaining file group: ledger ``running`` → parts staged and committed → ledger ``done``;
4. counts checked; ``create_table.sql``, ``copy.sql``, ``_report.json``; ``manifest.json`` LAST.

The manifest is the commit marker: a folder with a manifest is a finished run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from sparsesync import interrupt
from sparsesync.planner.plan import FileGroup, KeyRange, Plan
from sparsesync.errors import DestinationError, UsageError, VerifyError
from sparsesync.logs import get_logger, log_range_done
from sparsesync.naming import table_folder
from sparsesync.source import (
    SourceIdentity,
    create_engine,
    direct_url_for_identity,
    identity_of,
    parse_direct_url,
    quoted_table,
    resolve_url,
    url_for_identity,
)

from . import redshift
from .dest import open_sink
from .lock import destination_lock
from .retry import RetryPolicy, RetryStats, SessionHolder, with_retries
from .drift import DriftReport, check_drift, count_tail
from .ledger import DONE, PENDING, RUNNING, Ledger, LedgerStore, PartRecord
from .report import RangeCount, RunReport

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

REPORT, LEDGER = "_report.json", "_ledger.json"
ARTIFACTS = (redshift.MANIFEST, redshift.COPY_SQL, redshift.CREATE_TABLE_SQL, REPORT, LEDGER)
COMPRESSIONS = ("zstd", "snappy", "gzip", "none")


@dataclass(frozen=True)
class ProgressEvent:
    """Passed to the ``progress`` callback: ``kind`` is start | batch | range | group | retry | finish.

    ``retry`` carries negative ``rows``: a discarded attempt's rows taken back from ``rows_done``.
    ``rows_done`` counts rows read (handed to a writer, which may still be encoding them; a reader may have
    fetched ahead); ``rows_written`` only those of file groups committed at the destination (and groups an
    earlier run finished).
    """

    kind: str
    rows_done: int
    rows_total: int
    bytes_done: int = 0
    group: int | None = None
    range_index: int | None = None
    rows: int = 0  # rows of this batch / range / group
    rows_written: int = 0  # rows of committed file groups


def output_folder(plan: Plan) -> str:
    """``<table>/<plan_id>``: the one folder a plan writes into."""
    return f"{table_folder(plan.source.table)}/{plan.plan_id}"


def lock_relpath(plan: Plan) -> str:
    """``<table>/<plan_id>.lock``: held while a run writes the plan's folder (beside it, so no listing sees it)."""
    return f"{output_folder(plan)}.lock"


# ---- source -------------------------------------------------------------------------------------------
def _same_host(a: str | None, b: str | None) -> bool:
    local = {"localhost", "127.0.0.1", "::1"}
    return (a or "").lower() == (b or "").lower() or ((a or "").lower() in local and (b or "").lower() in local)


def _family(dialect: str) -> str:
    return "mysql" if dialect in ("mysql", "mariadb") else dialect


def plan_identity(plan: Plan) -> SourceIdentity:
    """The secret-free identity the plan was made on."""
    s = plan.source
    return SourceIdentity(dialect=s.dialect, host=s.host, port=s.port, database=s.database, username=s.username)


def check_source_matches(plan: Plan, ident: SourceIdentity) -> None:
    """Refuse a source URL that points at another server or database than the plan's."""
    want = plan_identity(plan)
    same = _family(ident.dialect) == _family(want.dialect)
    if same and want.dialect == "sqlite":
        same = os.path.realpath(ident.database or "") == os.path.realpath(want.database or "")
    elif same:
        same = _same_host(ident.host, want.host) and (ident.port or None) == (want.port or None) and ident.database == want.database
    if not same:
        raise UsageError(
            f"the source URL points at {ident.describe()} but plan {plan.plan_id} was made on {want.describe()}",
            hint="pass the plan's source with --source (or SPARSESYNC_SOURCE_URL), or re-plan on this source",
            table=plan.source.table,
        )


def connect_source(plan: Plan, source_url: str | None = None) -> "Engine":
    """An Engine for the plan's source: ``source_url``, else ``$SPARSESYNC_SOURCE_URL``, else the plan's identity.

    A plain ``mysql+pymysql://`` source gets a :class:`sparsesync.direct.DirectSource` instead: the same
    source over PyMySQL, SQLAlchemy imported only if the run needs it (start-up, issue 11).
    """
    from sparsesync.direct import DirectSource

    url = resolve_url(source_url, required=False)  # the CLI's one rule (sparsesync.source.resolve_url)
    if url:
        parts = parse_direct_url(url)
        check_source_matches(plan, identity_of(parts if parts is not None else url))
        return DirectSource(parts, url).check() if parts is not None else create_engine(url)
    parts = direct_url_for_identity(plan_identity(plan))
    if parts is not None:
        return DirectSource(parts).check()
    return create_engine(url_for_identity(plan_identity(plan)))


# ---- SQL shown by --dry-run -----------------------------------------------------------------------------
def render_range_sql(engine: "Engine", plan: Plan, r: KeyRange) -> str:
    """The readers' range query (:func:`sparsesync.executor.readers.range_query`) with its keys inlined, for review."""
    from .readers import range_query

    built = range_query(plan, r)
    if built is None:
        return f"-- range {r.index} [{r.lo}, ∞) lies beyond the key type's maximum: not queried"
    stmt, params = built
    from sparsesync.direct import sa_dialect

    compiled = stmt.params(**params).compile(dialect=sa_dialect(engine), compile_kwargs={"literal_binds": True})
    return " ".join(line.strip() for line in str(compiled).splitlines())


# ---- the run -------------------------------------------------------------------------------------------------
def memory_budget(memory_limit_mb: int, workers: int, dest=None):
    """The byte sizes for ``--memory-limit`` MB shared by ``workers`` writing to ``dest``.

    Refuses a limit below the reserve plus one worker's minimum of data; to S3 (whose client and uploads
    are reserved too), below the reserve plus every worker's minimum, so the uploads never take the run over
    the limit. A directory destination keeps the older, one-worker rule: many workers on a small limit still
    get the minimum each (:attr:`MemoryBudget.fits` is then False).
    """
    from .budget import MIN_DATA, RESERVED_MB, MemoryBudget, MiB
    from .dest import is_s3

    budget = MemoryBudget(memory_limit_mb, workers, s3=is_s3(dest))
    need = budget.reserved_bytes + (budget.workers if budget.s3 else 1) * MIN_DATA
    if memory_limit_mb * MiB < need:
        where = " and the S3 client and uploads" if budget.s3 else ""
        fewer = ", or fewer --workers" if budget.s3 and workers > 1 else ""
        raise UsageError(
            f"--memory-limit {memory_limit_mb} MB is too small: the libraries{where} alone take about "
            f"{budget.reserved_bytes // MiB} MB",
            hint=f"pass --memory-limit {max(-(-need // MiB), RESERVED_MB + 64)} or more{fewer} (default 512)",
        )
    return budget


class _Cancelled(Exception):
    """Raised inside a worker when another worker failed: stop reading, discard staging."""


def _stopped() -> Exception:
    """What a worker raises when its run's ``stop`` is set: :class:`~sparsesync.interrupt.Interrupted` when a
    signal set it (SIGINT/SIGTERM, :mod:`sparsesync.interrupt`), else :class:`_Cancelled` (another worker failed)."""
    sig = interrupt.requested()
    return interrupt.Interrupted(sig) if sig else _Cancelled()


def _run_scope(fn):
    """SIGINT/SIGTERM stop the run between batches rather than at once (:func:`sparsesync.interrupt.run_scope`)."""
    @functools.wraps(fn)
    def scoped(*args, **kwargs):
        with interrupt.run_scope():
            interrupt.check()  # a signal before the run: nothing is written
            return fn(*args, **kwargs)

    return scoped


@_run_scope
def execute_plan(
    plan: Plan,
    dest,
    *,
    source_url: str | None = None,
    reader: str = "auto",
    workers: int = 1,
    compression: str = "zstd",
    ledger: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    strict_dates: bool = False,
    verify: bool = True,
    iam_role: str | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    batch_rows: int = 65536,
    memory_limit_mb: int = 512,
    oversize: str = "fail",
    nul: str = "fail",
    engine: "Engine | None" = None,
    staging: str | None = None,
    retries: int = 5,
    retry_base_s: float = 0.5,
    shard=None,
    consistency: str = "range",
    dask=None,
    late_rows: bool = True,
) -> RunReport:
    """Replay ``plan`` into ``dest`` (a directory, ``s3://bucket/prefix`` or a Sink) without re-planning.

    Resumes from the ledger when a previous run was interrupted; returns the :class:`RunReport`
    (also written as ``_report.json``). Every failure is a :class:`SparsesyncError` subclass.
    ``staging`` is the local directory S3 parts are staged in (default ``$TMPDIR``). A transient source
    fault is retried up to ``retries`` times per range (backoff from ``retry_base_s``), see
    :mod:`sparsesync.executor.retry`. ``shard`` (a :class:`sparsesync.executor.shard.Shard`) runs only
    that shard's file groups, with its own ledger and lock, and writes no load files (``finalize`` does).
    ``consistency="snapshot"`` reads the whole table at one point in time whatever the reader and worker count
    (:mod:`sparsesync.executor.snapshot`), or refuses before writing anything; ``"range"`` (default) reads each range consistently on its own.
    ``dask`` (a :class:`sparsesync.executor.engine_dask.DaskOptions`)
    runs the file groups as tasks on a Dask cluster instead of local threads (the driver — this call —
    still owns ledger, report and manifest).
    ``late_rows=False`` skips counting the tail range once more after
    the run (the report's ``late_rows``): ``sync`` reads those rows in its next run anyway.
    """
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if compression not in COMPRESSIONS:
        raise UsageError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    policy = RetryPolicy(retries=retries, base_s=retry_base_s)
    budget = memory_budget(memory_limit_mb, workers, dest)
    from .heap import bound_heap

    bound_heap()  # freed batches go back to the system instead of staying in glibc's heaps
    from .oversize import check_mode, check_nul_mode

    check_mode(oversize)
    check_nul_mode(nul)
    scope = None
    if shard is not None:
        from .shard import ShardScope

        if overwrite or ledger:
            raise UsageError(f"--shard cannot be combined with {'--overwrite' if overwrite else '--ledger'}",
                             hint="a shard keeps its ledger in the output folder and resumes; to start over, "
                                  "delete the plan's output folder")
        scope = ShardScope(plan, shard)

    from .snapshot import check_mode as check_consistency

    check_consistency(consistency)
    if scope is not None and consistency == "snapshot":
        # Shards are separate processes started whenever the orchestrator gets to them: no one instant.
        raise UsageError("--consistency snapshot cannot be combined with --shard (each shard reads at its own time)",
                         hint="for one point in time run the whole plan with --workers N instead of shards")
    if dask is not None and (scope is not None or consistency == "snapshot"):
        # Not built: Dask tasks open their sessions whenever a worker gets to them, and a shard's groups
        # are a job of their own; both combinations would quietly give something else than asked.
        what = "--shard" if scope is not None else "--consistency snapshot"
        raise UsageError(f"--engine dask cannot be combined with {what}",
                         hint="use the local engine for that run (--engine local)")
    t0 = time.monotonic()
    if dask is not None:
        dask.check_dest(dest)  # before anything opens: a local dir with a remote scheduler is refused
    sink = open_sink(dest, staging=staging, upload_threads=budget.upload_threads)
    folder = output_folder(plan)
    own_engine = engine is None
    engine = engine or connect_source(plan, source_url)
    try:
        # One run per plan and destination: a second one is refused, naming the holder (executor.lock).
        # A shard takes its own lock instead: shards of one plan run side by side (executor.shard).
        lock = None if dry_run else scope.lock(sink) if scope else \
            destination_lock(sink, lock_relpath(plan), purpose=f"execute plan {plan.plan_id}")
        # An error the stop caused (a retry's wait cut short, …) is reported as the interruption; the lock is
        # released after it, and the ledger keeps unfinished groups for the re-run.
        with lock or contextlib.nullcontext(), interrupt.converting():
            return _execute(
                plan, sink, folder, engine, t0=t0, reader_kind=reader, workers=workers, compression=compression,
                ledger_path=ledger, overwrite=overwrite, dry_run=dry_run, strict_dates=strict_dates, verify=verify,
                iam_role=iam_role, progress=progress, batch_rows=batch_rows, budget=budget,
                oversize=oversize, nul=nul, lock=lock, policy=policy, scope=scope, consistency=consistency,
                dask=dask, dest=dest, staging=staging, late_rows=late_rows,
            )
    finally:
        if own_engine:
            engine.dispose()
        if sink is not dest and hasattr(sink, "close"):  # we opened it: release upload threads and staging
            sink.close()


def _execute(plan, sink, folder, engine, *, t0, reader_kind, workers, compression, ledger_path, overwrite,
             dry_run, strict_dates, verify, iam_role, progress, batch_rows, budget, oversize="fail", nul="fail",
             lock=None, policy: RetryPolicy = RetryPolicy(), scope=None, consistency="range", dask=None,
             dest=None, staging=None, late_rows: bool = True) -> RunReport:
    from .readers import make_reader  # the readers engineer's module; imported here to keep import light

    redshift.check_load_inputs(plan, iam_role)
    drift = check_drift(engine, plan)
    want_snapshot = consistency == "snapshot"
    rdr = make_reader(engine, plan, kind=reader_kind, batch_rows=batch_rows, strict_dates=strict_dates,
                      snapshot=((workers == 1 and dask is None) or want_snapshot), batch_bytes=budget.batch_bytes)
    rdr.spill_dir = staging  # the run's local scratch space, as for S3 parts
    if want_snapshot:
        from .snapshot import check_possible

        check_possible(engine, plan, rdr.name, workers)  # before the first write: refuse with one line
    report = RunReport(
        plan_id=plan.plan_id, table=plan.source.table, source=plan_identity(plan).describe(),
        dest=sink.url(folder), reader=rdr.name, workers=workers, compression=compression,
        planned_rows=plan.estimates.rows, groups_total=len(plan.files), overwrite=overwrite, drift=drift.to_dict(),
    )
    report.consistency = "snapshot" if want_snapshot or (rdr.consistency == "snapshot" and workers == 1) else "per-range"
    if dask is not None:
        report.engine, report.scheduler = "dask", dask.describe()
    if dry_run:
        report.status = "dry-run"
        report.queries_sql = [render_range_sql(engine, plan, r) for r in (scope.ranges() if scope else plan.ranges)]
        report.duration_s = time.monotonic() - t0
        return report

    store = scope.store(sink, folder) if scope else \
        LedgerStore(path=ledger_path) if ledger_path else LedgerStore(sink=sink, relpath=f"{folder}/{LEDGER}")
    report.ledger = store.describe()
    manifest_rel = f"{folder}/{redshift.MANIFEST}"
    try:
        existing = store.load()
    except DestinationError:
        if not overwrite:
            raise
        existing = None  # --overwrite starts over; an unreadable ledger is replaced, not trusted
    if existing is not None and (existing.plan_sha256 != plan.sha256 or existing.plan_id != plan.plan_id):
        raise DestinationError(
            f"{store.describe()} belongs to another plan (sha256 {existing.plan_sha256[:12]}…, this plan {plan.sha256[:12]}…)",
            hint="a plan never writes into another plan's folder; use another --dest or --ledger",
            table=plan.source.table,
        )
    if sink.exists(manifest_rel) and not overwrite:
        report.status = "already-complete"
        if scope:
            scope.already_finalized(report)  # its line must not suggest --overwrite, which --shard refuses
        report.manifest = sink.url(manifest_rel)
        report.duration_s = time.monotonic() - t0
        return report

    if overwrite or existing is None:
        book = Ledger.fresh(plan)
        if ledger_path:
            store.delete()
    else:
        book = existing
    if scope:
        skipped = scope.prepare(sink, folder, book, store, fresh=existing is None)
    else:
        from .shard import refuse_if_sharded

        if not (overwrite and sink.exists(manifest_rel)):  # a finalized sharded run may be redone whole
            refuse_if_sharded(sink, folder, plan)  # after taking the plan's lock, before removing anything
        skipped = _prepare_folder(sink, folder, book, store, plan)
    book.runs += 1
    store.save(book)  # first write of this run: an unwritable destination fails here, before any reading
    report.groups_skipped = len(skipped)
    report.groups_redone = sum(1 for g in book.groups if g.attempts > 0 and g.state != DONE)

    todo = scope.todo(book) if scope else [g for g in plan.files if book.groups[g.index].state != DONE]
    counter = _Counter(sum(book.groups[i].rows for i in skipped), scope.est_rows() if scope else plan.estimates.rows,
                       progress)
    counter.emit("start")
    # Per-range COUNT(*) inside the read snapshot when every group is read in it (one session, nothing
    # skipped); otherwise they are counted after the run (see _check_counts).
    retried = RetryStats()
    early_counts = None
    if dask is not None:
        from .engine_dask import run_groups_dask  # lazy: the local engine never imports Dask

        report.scheduler, threads = run_groups_dask(
            dask, plan, dest, sink, folder, engine, book, store, todo, counter, reader=rdr.name,
            compression=compression, batch_rows=batch_rows, strict_dates=strict_dates, budget=budget,
            oversize=oversize, nul=nul, lock=lock, policy=policy, retried=retried, stats=rdr.stats, staging=staging)
        report.workers = threads or 0  # the cluster's worker threads read the groups, not --workers (0: none ran)
        snapshot_counts = None  # groups were read on many workers: counted after the run
    else:
        # Ranges read one by one on one worker are counted after the run (_check_counts); the counts can start
        # as soon as the last range is read, while its group's Parquet file is still being closed.
        early = _EarlyCounts(engine, plan) if (verify and not scope and workers == 1 and consistency == "range"
                                               and rdr.consistency != "snapshot") else None
        try:
            snapshot_counts = _run_groups(plan, sink, folder, rdr, book, store, todo, workers, compression, counter,
                                          want_count=verify and not skipped and not scope, budget=budget,
                                          oversize=oversize, nul=nul, lock=lock, policy=policy, retried=retried,
                                          consistency=consistency, how=report.snapshot,
                                          after_reads=early.start if early else None)
            early_counts = early.result() if early else None
        finally:
            if early:
                early.close()
    interrupt.check()  # a signal stopped the groups (some may be undone): never commit after it
    report.retries = retried.total
    report.retried_ranges = {str(k): v for k, v in sorted(retried.by_range.items())}
    after_counts = None
    if verify and snapshot_counts is None and not scope:
        # the tail's count among them: one statement less
        after_counts = early_counts if early_counts is not None else _after_run_counts(engine, plan)
    if late_rows:  # rows that arrived above the plan after our snapshot
        drift.tail_rows_after = tail_rows_now(engine, plan, after_counts)
    _finish_report(report, plan, book, rdr, drift, snapshot_counts)
    if retried.snapshots > 1 and report.consistency == "snapshot":
        report.consistency = "mixed"  # a fault ended the serial run's snapshot; groups after it read a newer one
    _oversize_report(report, plan, book, oversize, nul)
    if scope:
        scope.finish(report, sink, folder, lock, todo, t0)  # finalize checks counts and writes the load files
        counter.emit("finish")
        return report
    if verify:
        in_snapshot = snapshot_counts is not None
        _check_counts(plan, sink, book, report, snapshot_counts if in_snapshot else after_counts,
                      in_snapshot=in_snapshot, skipped=len(skipped))
        report.verified = "counts"
    else:
        report.count_check = {"skipped": "--no-verify: output not compared with the source"}
    if lock is not None:
        lock.check()  # a run that lost its lock must not write the commit marker
    interrupt.check()
    _write_load_files(report, plan, sink, folder, book, iam_role, t0)
    counter.emit("finish")
    return report


def _prepare_folder(sink, folder: str, book: Ledger, store: LedgerStore, plan: Plan) -> list[int]:
    """Remove crash leftovers; return the indexes of groups that are done and intact (to skip)."""
    sink.cleanup_staging(folder)
    skipped = []
    keep = set()
    for g in book.groups:
        if g.intact_in(sink):
            skipped.append(g.index)
            keep.update(p.name for p in g.parts)
        elif g.state != PENDING or g.parts:  # interrupted or damaged: redo from scratch
            g.reset()
    if store.sink is sink and store.relpath:
        keep.add(store.relpath)
    for rel in sink.list(folder):
        if rel not in keep:  # parts of unfinished groups, stale reports/manifest of an overwritten run
            sink.delete(rel)
    return skipped


class _Counter:
    """Thread-safe running totals feeding the progress callback."""

    def __init__(self, rows_done: int, rows_total: int, callback) -> None:
        self.rows_done, self.rows_total, self.bytes_done = rows_done, rows_total, 0
        self.rows_written = rows_done  # the groups an earlier run finished
        self.callback = callback
        self.lock = threading.Lock()

    def emit(self, kind: str, *, rows: int = 0, nbytes: int = 0, group: int | None = None, range_index: int | None = None):
        with self.lock:
            if kind in ("batch", "retry"):  # a retry takes a discarded attempt's rows back (negative)
                self.rows_done += rows
                self.bytes_done += nbytes
            elif kind == "group":  # committed: its rows are at the destination now
                self.rows_written += rows
            event = ProgressEvent(kind, self.rows_done, max(self.rows_total, self.rows_done), self.bytes_done,
                                  group, range_index, rows, self.rows_written)
        if self.callback is not None:
            self.callback(event)


def _run_groups(plan, sink, folder, rdr, book, store, todo, workers, compression, counter, *, want_count,
                budget=None, oversize="fail", nul="fail", lock=None, policy: RetryPolicy = RetryPolicy(),
                retried: RetryStats | None = None, consistency="range", how: dict | None = None,
                after_reads: Callable[[], None] | None = None) -> int | None:
    """Read and write every group in ``todo``; serial runs share one session (one snapshot).

    With ``consistency="snapshot"`` and several connections (workers, or connectorx), the groups are cut
    into one run of consecutive groups per worker, each read through a session opened at one point in
    time (:func:`sparsesync.executor.snapshot.open_snapshot`); ``how`` receives how it was made.

    A transient source fault redoes the group on a new session (:func:`sparsesync.executor.retry.with_retries`).
    ``after_reads`` is called on the serial path once the last range is read, while its group is finished.
    """
    if not todo:
        return None
    stop = interrupt.stop_event()  # set by a failing worker, or by SIGINT/SIGTERM
    retried = retried if retried is not None else RetryStats()

    def read(sessions: SessionHolder, g: FileGroup, defer: bool):
        def attempt(session):
            tally = _AttemptCounter(counter)
            # Zero dates the discarded attempt counted are taken back too; with one reading thread the
            # counts before the attempt are exact (parallel workers share the counters, see README).
            zero_before = dict(rdr.stats.zero_dates) if workers == 1 else None
            try:
                return _run_group(plan, sink, folder, session, book, store, g, compression, tally, stop, defer=defer,
                                  budget=budget, oversize=oversize, nul=nul, lock=lock)
            except BaseException:
                tally.retract()  # the attempt's rows are discarded: take them back from the progress total
                if zero_before is not None:
                    rdr.stats.zero_dates.clear()
                    rdr.stats.zero_dates.update(zero_before)
                raise

        return with_retries(attempt, sessions, plan, policy, retried, stop=stop, group=g.index)

    def serial(sessions: SessionHolder, groups: list[FileGroup], after_reads=None) -> None:
        # One session (one snapshot) reads the groups in order; each group's finishing work (closing the
        # Parquet file, the upload to S3, the ledger's `done`) runs on a helper thread while the next
        # group is read. At most one group is in flight, so staging space stays bounded.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsesync-finish") as fin:
            pending = None
            try:
                for g in groups:
                    finish = read(sessions, g, True)
                    if pending is not None:
                        try:
                            pending.result()
                        except BaseException:
                            finish.abort()  # the group just read must not stay staged (finding 10)
                            raise
                    pending = fin.submit(finish)
                if after_reads is not None:
                    after_reads()  # every range is read; the last group is still being finished
                if pending is not None:
                    pending.result()
                    pending = None
            finally:
                if pending is not None:  # an error while reading: let the in-flight group finish or fail
                    wait([pending])

    from .snapshot import needs_gate, one_connection_how

    if consistency == "snapshot" and needs_gate(rdr.engine, rdr.name, workers):
        return _run_snapshot(plan, rdr, todo, workers, serial, stop, want_count, retried, how)
    if workers == 1:
        sessions = SessionHolder(rdr)
        try:
            serial(sessions, todo, after_reads)
            retried.snapshots = sessions.opened
            if how is not None and consistency == "snapshot":
                how.update(one_connection_how(rdr.name))
            return _snapshot_counts(sessions.current, rdr, plan) if want_count and sessions.opened == 1 else None
        finally:
            sessions.close()

    def work(g: FileGroup) -> None:
        if stop.is_set():
            raise _stopped()
        sessions = SessionHolder(rdr)
        try:
            read(sessions, g, False)
        finally:
            sessions.close()

    _run_all([functools.partial(work, g) for g in todo], workers, "sparsesync-group", stop)
    return None


def _run_all(calls, max_workers: int, prefix: str, stop: threading.Event) -> None:
    """Run ``calls`` on a thread pool. At the first error set ``stop`` (running calls end at their next
    batch, their groups stay pending; queued ones never start), wait for all, raise the first real error."""
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=prefix) as pool:
        futures = [pool.submit(c) for c in calls]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C while waiting: leaving the pool waits for the workers, so stop them too
            stop.set()
            for f in futures:
                f.cancel()
            raise
        if any(f.exception() for f in done if f.done()):
            stop.set()
            for f in futures:
                f.cancel()
        wait(futures)
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    real = [e for e in errors if not isinstance(e, _Cancelled)]
    if real:
        raise real[0]


def _run_snapshot(plan, rdr, todo, workers, serial, stop, want_count, retried, how):
    """``--consistency snapshot`` over several connections: one run of consecutive groups per worker, all
    sessions opened at one point in time; the per-range counts are taken inside that snapshot."""
    from .snapshot import open_snapshot, split_groups

    chunks = split_groups(todo, workers)
    snap = open_snapshot(rdr, plan, chunks)
    if how is not None:
        how.update(snap.how)
    holders = [SessionHolder.holding(rdr, s) for s in snap.sessions]
    try:
        _run_all([functools.partial(serial, h, c) for h, c in zip(holders, chunks)], len(chunks),
                 "sparsesync-snapshot", stop)
        # A fault replaced a worker's session: its later groups were read in another view.
        retried.snapshots = 1 + sum(h.opened - 1 for h in holders)
        return snap.counts(plan, rdr.engine) if want_count and retried.snapshots == 1 else None
    finally:
        for h in holders:
            h.close()
        snap.close()


class _AttemptCounter:
    """Forwards one group attempt's progress and remembers its rows, so a discarded attempt can be taken back."""

    def __init__(self, counter: "_Counter") -> None:
        self.counter, self.rows, self.bytes = counter, 0, 0

    def emit(self, kind: str, **kw) -> None:
        if kind == "batch":
            self.rows += kw.get("rows", 0)
            self.bytes += kw.get("nbytes", 0)
        self.counter.emit(kind, **kw)

    def retract(self) -> None:
        if self.rows or self.bytes:
            self.counter.emit("retry", rows=-self.rows, nbytes=-self.bytes)
            self.rows = self.bytes = 0


def _snapshot_counts(session, rdr, plan):
    """``COUNT(*)`` per range inside the reader's snapshot (same connection), when it has one."""
    conn = getattr(session, "conn", None)
    if rdr.consistency != "snapshot" or conn is None:
        return None
    import sqlalchemy as sa

    from .checksum import span_checksums, span_counts_dbapi, spans_of_plan

    spans = spans_of_plan(plan, unplanned=True)
    if isinstance(conn, sa.Connection):
        return span_checksums(conn, plan, spans, counts_only=True)
    with conn.cursor() as cur:
        return span_counts_dbapi(cur, rdr.engine.dialect, plan, spans)


def _run_group(plan, sink, folder, session, book, store, g: FileGroup, compression, counter, stop, defer=False,
               budget=None, oversize="fail", nul="fail", lock=None):
    """Read the group's ranges into a PartWriter; then close, commit and mark it done in the ledger.

    With ``defer`` the reading happens now and the closing/committing is returned as a callable, so
    the caller can overlap it with reading the next group.
    """
    if lock is not None:
        lock.check()  # taken over as stale (a paused run): stop before writing anything more
    interrupt.pause("group", g.index)  # test hook (sparsesync.interrupt), nothing unless asked for
    if stop.is_set():
        raise _stopped()  # between file groups: the next group never starts
    store.transition(book, g.index, RUNNING)
    close = write_group(plan, sink, folder, session, g, compression, counter, stop, budget=budget, oversize=oversize,
                        nul=nul)

    def finish() -> None:
        record_group(store, book, close(), run=book.runs)
        counter.emit("group", rows=sum(book.groups[g.index].range_rows.values()), group=g.index)

    if defer:
        finish.abort = close.abort  # for a caller that cannot run it after all
        return finish
    finish()
    return None


@dataclass
class GroupResult:
    """What writing one file group produced: everything the ledger records for it, nothing secret.

    Small and picklable, so an engine's worker can hand it back to the driver that owns the ledger.
    """

    index: int
    parts: list[PartRecord]
    range_rows: dict[str, int]
    max_bytes: dict[str, int]
    oversize: dict[str, int]
    zero_dates: dict[str, int]
    consistency: str
    queries: int = 0  # statements the group's reader sent (engines whose reader the driver cannot see)
    retries: dict[int, int] = field(default_factory=dict)  # range index → transient faults survived
    nul: dict[str, int] = field(default_factory=dict)  # text values with a NUL byte (stripped or kept), per column

    @property
    def rows(self) -> int:
        return sum(self.range_rows.values())

    @property
    def bytes(self) -> int:
        return sum(p.size for p in self.parts)


def record_group(store: LedgerStore, book: Ledger, res: GroupResult, *, run: int) -> None:
    """Mark the group ``done`` in the ledger with what :func:`write_group` produced (driver side only)."""
    store.transition(
        book, res.index, DONE, parts=res.parts, rows=res.rows, bytes=res.bytes, range_rows=res.range_rows,
        max_bytes=res.max_bytes, oversize=res.oversize, nul=res.nul, zero_dates=res.zero_dates,
        consistency=res.consistency,
        run=run,
    )


def write_group(plan, sink, folder, session, g: FileGroup, compression, counter, stop, *, budget=None,
                oversize="fail", nul="fail") -> Callable[[], GroupResult]:
    """Read group ``g``'s ranges through ``session`` into a staged PartWriter; touches no ledger.

    Returns ``close()``: it closes the writer, commits the part(s) (atomic publish) and returns the
    :class:`GroupResult`; ``close.abort()`` discards them instead. Any error while reading aborts the
    writer first, so nothing of the group stays staged or visible. Engines call this wherever the
    group runs (a local thread, a Dask worker); the ledger is the caller's business.
    """
    from .oversize import OversizeGuard
    from .pipeline import BackgroundWriter
    from .writer import PartWriter

    relpath = f"{folder}/{g.name}"
    budget = budget or memory_budget(512, 1)
    # Parts roll at the plan's file size whatever its estimates said; row groups are bounded by bytes.
    writer = PartWriter(sink, relpath, plan.arrow_schema(), compression=compression,
                        roll_bytes=plan.strategy.file_size or None, row_group_bytes=budget.row_group_bytes)
    writer = BackgroundWriter(writer)  # encoding overlaps reading the next batch (executor.pipeline)
    range_rows: dict[str, int] = {}
    guard = OversizeGuard(plan, oversize, nul=nul)
    # Each group carries its own zero-date counts and consistency into the ledger, so a resumed run
    # reports them for groups an earlier run read.
    stats = getattr(getattr(session, "reader", None), "stats", None)
    zero_dates = stats.begin_tally() if stats is not None else {}
    consistency = getattr(getattr(session, "reader", None), "consistency", "per-range")
    try:
        if hasattr(session, "expect"):
            session.expect(plan.ranges_of(g))  # lets a reader fetch a range while the one before is written
        for r in plan.ranges_of(g):
            n = 0
            for batch in session.read_range(r):
                if stop.is_set():
                    raise _stopped()
                if batch.num_rows:
                    batch = guard.apply(batch, r)  # before writing: an oversize or NUL value stops the run here
                    writer.write(batch)
                    n += batch.num_rows
                    interrupt.pause("batch", g.index)  # test hook (sparsesync.interrupt): mid-group
                    counter.emit("batch", rows=batch.num_rows, nbytes=batch.nbytes, group=g.index, range_index=r.index)
            range_rows[str(r.index)] = n
            counter.emit("range", rows=n, group=g.index, range_index=r.index)
            log_range_done(_EFFICIENCY_LOG, r.index, r.lo, r.hi, r.est_rows, n, table=plan.source.table, group=g.index)
    except BaseException:
        writer.abort()
        raise
    finally:
        if stats is not None:
            stats.end_tally()

    def close() -> GroupResult:
        try:
            parts = writer.close()
        except BaseException:
            writer.abort()
            raise
        records = [PartRecord(name=p.relpath, url=p.url, size=p.size, rows=p.rows, sha256=p.sha256) for p in parts]
        return GroupResult(index=g.index, parts=records, range_rows=range_rows, max_bytes=guard.max_bytes,
                           oversize=guard.counts, nul=guard.nul_counts,
                           zero_dates={k: v for k, v in zero_dates.items() if v},
                           consistency=consistency)

    close.abort = writer.abort
    return close


# Per-range efficiency events (roadmap Phase 4); `monitoring.log_efficiency_metrics: false` silences them.
_EFFICIENCY_LOG = get_logger("sparsesync.efficiency")
FIXED_STRIDE_KEYS = 50_000  # the roadmap's chunk span, the baseline the metrics compare against


def run_metrics(plan: Plan, ranges: list[RangeCount], queries: int, files: int) -> dict:
    """The roadmap's monitoring summary for one run.

    ``fixed_stride_queries`` is what ``WHERE id > a AND id <= a + 50000`` chunking over the planned key
    span would have issued (one per chunk, arithmetic, nothing run); ``files_consolidated`` counts ranges
    that share a file with an earlier range; efficiency is actual / planned rows per finite range with a
    plan estimate (1.0 means the estimate was exact).
    """
    fp = plan.fingerprint
    span = 0 if fp.min_key is None else fp.max_key - fp.min_key + 1
    fixed = -(-span // FIXED_STRIDE_KEYS)
    finite = [r for r in ranges if r.hi is not None and r.planned > 0]
    eff = [r.actual / r.planned for r in finite]
    return {
        "sparse_regions": len(plan.histogram.sparse_regions),
        "gaps": len(plan.histogram.gaps),
        "outliers": len(plan.histogram.outliers),
        "fixed_stride_keys": FIXED_STRIDE_KEYS,
        "fixed_stride_queries": fixed,
        "queries_saved_vs_fixed_stride": max(0, fixed - queries),
        "files_consolidated": max(0, len(plan.ranges) - files),
        "mean_range_efficiency": round(sum(eff) / len(eff), 4) if eff else 1.0,
        "min_range_efficiency": round(min(eff), 4) if eff else 1.0,
    }


def _finish_report(report: RunReport, plan: Plan, book: Ledger, rdr, drift: DriftReport, snapshot_counts) -> None:
    """Totals over all groups (this run's and skipped ones), planned vs actual per range, drift.

    Zero dates and consistency come from the ledger's groups, so groups an earlier run read count too.
    """
    actual: dict[int, int] = {}
    for g in book.groups:
        for k, v in g.range_rows.items():
            actual[int(k)] = v
    report.ranges = [RangeCount(r.index, r.lo, r.hi, r.est_rows, actual.get(r.index, 0)) for r in plan.ranges]
    report.deviations = [rc for rc in report.ranges if rc.planned != rc.actual]
    report.rows = sum(g.rows for g in book.groups)
    report.bytes = sum(g.bytes for g in book.groups)
    report.files = sum(len(g.parts) for g in book.groups)
    stats = rdr.stats
    stat = (lambda k, d: stats.get(k, d)) if isinstance(stats, dict) else (lambda k, d: getattr(stats, k, d))
    report.queries = int(stat("queries", 0) or 0)
    zero: dict[str, int] = {}
    for g in book.groups:
        for k, v in (g.zero_dates or {}).items():
            zero[k] = zero.get(k, 0) + int(v)
    report.zero_dates = {k: v for k, v in zero.items() if v}
    report.group_consistency = [[g.index, g.consistency, g.run] for g in book.groups]
    report.consistency = overall_consistency(book)
    report.tail_rows = actual.get(plan.tail.index, 0)
    report.metrics = run_metrics(plan, report.ranges, report.queries, report.files)
    drift.tail_rows = report.tail_rows
    report.late_rows = drift.late_rows
    report.drift = drift.to_dict()
    report.snapshot_count = None if snapshot_counts is None else sum(c.rows for c in snapshot_counts)
    limit = int(stat("queue_limit_bytes", 0) or 0)
    if limit:  # span statements ran (--consistency snapshot with connectorx)
        report.spill = {"bytes": int(stat("spilled_bytes", 0) or 0), "batches": int(stat("spilled_batches", 0) or 0),
                        "queue_peak_bytes": int(stat("queue_peak_bytes", 0) or 0), "queue_limit_bytes": limit}


def overall_consistency(book: Ledger) -> str:
    """``snapshot`` when every group was read in one snapshot of one run, ``per-range`` when every range
    was read consistently on its own, ``mixed`` otherwise (groups of different runs' snapshots, or a mix)."""
    kinds = {(g.consistency, g.run if g.consistency == "snapshot" else None) for g in book.groups if g.state == DONE}
    if not kinds:
        return "snapshot"
    if all(c == "per-range" for c, _ in kinds):
        return "per-range"
    if len(kinds) == 1 and next(iter(kinds))[0] == "snapshot":
        return "snapshot"
    return "mixed"


def _oversize_report(report: RunReport, plan: Plan, book: Ledger, mode: str, nul: str = "fail") -> None:
    """Widest values and oversize counts over every group (resumed ones from the ledger) into the report."""
    from .oversize import nul_warning_lines, summarize, summarize_nul, warning_lines

    report.oversize = summarize(book.groups, mode)
    report.warnings.extend(warning_lines(plan, report.oversize))
    report.oversize["nul"] = summarize_nul(book.groups, nul)  # --nul: text values with a NUL byte
    report.warnings.extend(nul_warning_lines(report.oversize["nul"]))


class _EarlyCounts:
    """The after-run counts started on a thread of their own once every range is read (see ``_execute``)."""

    def __init__(self, engine, plan: Plan) -> None:
        self.engine, self.plan, self.future, self.pool = engine, plan, None, None

    def start(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsesync-count")
        self.future = self.pool.submit(_after_run_counts, self.engine, self.plan)

    def result(self) -> list | None:
        """The counts, or ``None`` when no range was read on this path (nothing to do, another engine)."""
        return None if self.future is None else self.future.result()

    def close(self) -> None:
        if self.pool is not None:  # a failed run still waits for the statement it started
            self.pool.shutdown(wait=True)


def _after_run_counts(engine, plan: Plan) -> list:
    """The source's ``COUNT(*)`` per range (and per NULL-key span) now, after every range was read."""
    from .checksum import spans_of_plan
    from .counts import after_run_counts

    return after_run_counts(engine, plan, spans_of_plan(plan, unplanned=True))


def tail_rows_now(engine, plan: Plan, after_counts: list | None) -> int:
    """Rows in the plan's tail range now: read from the after-run counts when they were taken, else counted."""
    if after_counts is None:
        return count_tail(engine, plan)
    return after_counts[plan.ranges.index(plan.tail)].rows


def _check_counts(plan: Plan, sink, book: Ledger, report: RunReport, counts, *, in_snapshot: bool,
                  skipped: int) -> None:
    """Rows streamed == rows in the parts (writer count, Parquet footers where local), then the rows
    written per range == the SOURCE's ``COUNT(*)`` per range (``counts``): taken inside the read snapshot when
    the whole run was read in it, else after the run (groups of an earlier run, or ranges read one by one)."""
    for g in book.groups:
        streamed = sum(g.range_rows.values())
        written = sum(p.rows for p in g.parts)
        if streamed != written:
            raise VerifyError(
                f"file group {g.index} streamed {streamed} rows but its parts hold {written}",
                hint="re-run with --overwrite", table=plan.source.table, file=g.name,
            )
        for p in g.parts:
            size = sink.size(p.name)
            if size != p.size:
                raise VerifyError(f"part has {size} bytes, {p.size} were written", hint="re-run with --overwrite",
                                  table=plan.source.table, file=p.url)
            footer_rows = _footer_rows(sink, p.name)
            if footer_rows is not None and footer_rows != p.rows:
                raise VerifyError(f"part holds {footer_rows} rows, {p.rows} were written", hint="re-run with --overwrite",
                                  table=plan.source.table, file=p.url)
    written = {int(k): v for g in book.groups for k, v in g.range_rows.items()}
    bad = []
    for r, c in zip(plan.ranges, counts):
        have = written.get(r.index, 0)
        if c.rows == have or (not in_snapshot and r is plan.tail and c.rows > have):
            continue  # more rows in the tail now than read: they arrived later (reported as late rows)
        bad.append(f"#{r.index} {r.describe()}: source {c.rows:,}, written {have:,}")
    for c in counts[len(plan.ranges):]:  # NULL keys of a nullable key in a plan made before format 1.1
        if c.rows:
            bad.append(f"{c.rows:,} row(s) with a NULL key are in no range of this plan (re-plan: plans since "
                       "format 1.1 read them)")
    why = ("inside the read snapshot" if in_snapshot else
           f"after the run ({skipped} group(s) were written by an earlier run)" if skipped else
           "after the run (ranges were read one by one, not in one snapshot)")
    report.count_check = {"where": "snapshot" if in_snapshot else "after-run", "reason": why,
                          "ranges": len(counts), "source_rows": sum(c.rows for c in counts), "mismatched": len(bad)}
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise VerifyError(
            f"rows written per range differ from the source's COUNT(*) {why}: " + "; ".join(bad[:5]) + more,
            hint=("rows outside every range? check the plan" if in_snapshot else
                  "the table changed during the export, or rows were lost; for one point in time use "
                  "--consistency snapshot") + "; re-run with --overwrite",
            table=plan.source.table,
        )


def _footer_rows(sink, relpath: str) -> int | None:
    """Row count from the Parquet footer of a local part (remote parts are trusted by size)."""
    from .dest import is_local

    if not is_local(sink):
        return None
    import pyarrow.parquet as pq

    return pq.read_metadata(sink.url(relpath)).num_rows


def _write_load_files(report: RunReport, plan: Plan, sink, folder: str, book: Ledger, iam_role, t0) -> None:
    """create_table.sql, copy.sql, _report.json, then manifest.json — the commit marker — last."""
    parts = [p for g in book.groups for p in g.parts]
    manifest_rel = f"{folder}/{redshift.MANIFEST}"
    manifest_url = sink.url(manifest_rel)
    sink.put_bytes(f"{folder}/{redshift.CREATE_TABLE_SQL}", redshift.create_table_sql(plan).encode())
    sink.put_bytes(f"{folder}/{redshift.COPY_SQL}",
                   redshift.copy_sql(plan, manifest_url, iam_role, warnings=report.warnings).encode())
    report.create_table_sql = sink.url(f"{folder}/{redshift.CREATE_TABLE_SQL}")
    report.copy_sql = sink.url(f"{folder}/{redshift.COPY_SQL}")
    report.manifest = manifest_url
    report.status = "done"
    report.duration_s = round(time.monotonic() - t0, 3)
    sink.put_bytes(f"{folder}/{REPORT}", report.to_json())
    sink.put_bytes(manifest_rel, redshift.manifest_json(parts))


def load_report(sink, plan: Plan) -> dict | None:
    """The ``_report.json`` of a finished run, if any."""
    import json

    data = sink.get_bytes(f"{output_folder(plan)}/{REPORT}")
    return None if data is None else json.loads(data)


__all__ = ["execute_plan", "ProgressEvent", "output_folder", "connect_source", "render_range_sql", "load_report"]
