"""``sync_table``: bring one table's Parquet image at a destination up to date with its source.

One run, in this order (a crash at any point leaves the previous image in force, and the next run
simply starts again — the run's files live in their own ``<table>/<run_id>/`` folder):

1. read ``_state.json`` (none: a first run) and repair ``current.manifest.json`` if a crash left it ahead;
   and carry a schema change over (:mod:`sparsesync.sync.evolve`: a new schema version, the parts rewritten
   at the destination where the source need not be read) — before detection, which then checks them too;
2. narrow the image's open tail part to the keys it really read (``read_hi``): later keys are appends;
3. detect changed spans (``--detect``) — before anything is exported (the cursor's window probe too);
4. plan only the changed spans and the new tail (the planner re-cuts them into its ranges and files);
5. record each new part's span checksum, measured BEFORE its export (see :func:`_pre_export_checksums`);
6. ``execute_plan`` into ``<table>/<run_id>/`` (ledger-resumable, manifest.json = the run's delta);
7. tidy the image (:mod:`sparsesync.sync.tidy`): a rolled file group becomes one part per file, and small
   adjacent parts are merged at the destination (no source read) while the image is over its part bound;
8. swap the image: new parts in, replaced parts out (with the cursor's window digest per new span);
   write ``current.manifest.json``, then ``_state.json`` LAST (each atomically).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy.engine import Engine

from sparsesync.executor.dest import is_local, open_sink
from sparsesync.executor.ledger import LedgerStore
from sparsesync.executor.lock import destination_lock
from sparsesync.executor.run import LEDGER, execute_plan
from sparsesync.planner.api import DEFAULT_FILE_SIZE_MB, DEFAULT_ROWS_PER_QUERY, make_plan
from sparsesync.planner.introspect import introspect
from sparsesync.planner.partition import DEFAULT_SPARSE_THRESHOLD
from sparsesync.planner.plan import Plan
from sparsesync.planner.typemap import TypeOptions
from sparsesync import interrupt
from sparsesync.errors import DriftError, SparsesyncError, UsageError
from sparsesync.naming import table_folder
from sparsesync.source import create_engine

from . import detect as det
from . import evolve as evo_mod
from . import tidy
from .state import ImageState, Part, PartFile, Run, load_state, narrowed, repair_manifest, save_state

RUN_KINDS = ("first", "append", "changed", "full")
SYNC_LOCK = "_sync.lock"
KEY_MIN = -(2**63)  # below every key type's minimum: "the whole key domain"


@dataclass(frozen=True)
class SyncOptions:
    """How to sync: change detection, plus the plan and execute options with their usual meaning."""

    detect: str = "checksum"  # checksum | cursor:COL | none
    lookback_s: float = 600.0
    rows_per_query: int = DEFAULT_ROWS_PER_QUERY
    file_size_mb: float = DEFAULT_FILE_SIZE_MB
    density: str = "auto"
    key: str | None = None
    schema: str | None = None
    reader: str = "auto"
    compression: str = "zstd"
    workers: int = 1
    retries: int = 5  # per range, after a transient source fault: execute's --retries (the same default)
    run_retries: int = 2  # then a run that still failed transiently resumes from its ledger this many times
    sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD
    type_options: TypeOptions = field(default_factory=TypeOptions)
    cache_path: str | None = None
    use_cache: bool = True
    strict_dates: bool = False
    batch_rows: int = 65536
    iam_role: str | None = None
    memory_limit_mb: int = 512  # each table's export (execute's --memory-limit)
    oversize: str = "fail"  # execute's --oversize: fail | truncate | keep
    nul: str = "fail"  # execute's --nul: fail | strip | keep
    staging: str | None = None  # execute's --staging: S3 parts and spills are staged in a private dir inside it
    full: bool = False  # start a new image (all spans re-read), e.g. after a schema change
    dask: Any = None  # executor.engine_dask.DaskOptions: export each table's file groups on that Dask cluster


@dataclass
class TableSyncResult:
    """What one table's sync did (one line of the multi-table summary)."""

    table: str
    status: str = "failed"  # ok | failed | empty | skipped
    run_id: str | None = None
    sequence: int | None = None
    kind: str | None = None
    rows_read: int = 0
    rows_in_image: int = 0
    bytes_written: int = 0
    spans_reexported: int = 0
    retries: int = 0
    seconds: float = 0.0
    error: str | None = None
    queries: int | None = None
    detect: str | None = None
    notes: list[str] = field(default_factory=list)
    schema_version: int | None = None
    # A schema change carried over by this run (sync.evolve.Evolution.to_dict): changes and their cost
    schema_change: dict | None = None
    tidy: dict | None = None  # parts split and merged by the run, and what it cost (sync.tidy.TidyStats)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def new_run_id(now: datetime, sequence: int) -> str:
    """``<UTC yyyymmddThhmmssZ>-<sequence:06d>``: sortable, unique per table."""
    return now.strftime("%Y%m%dT%H%M%SZ") + f"-{sequence:06d}"


def sync_table(source_url: str, table: str, dest, options: SyncOptions = SyncOptions(), *,
               engine: Engine | None = None, events: Callable[[dict], None] | None = None,
               raise_errors: bool = False) -> TableSyncResult:
    """Sync ``table`` from ``source_url`` (or ``engine``) into its image at ``dest``.

    Returns a :class:`TableSyncResult`; a :class:`SparsesyncError` becomes ``status="failed"`` with its
    one-line message (re-raised with ``raise_errors``). Anything else is a bug and propagates.
    """
    t0 = time.monotonic()
    result = TableSyncResult(table=table, detect=options.detect)
    emit = events or (lambda e: None)
    own_engine = engine is None
    sink = None
    try:
        detect = det.parse_detect(options.detect)
        if options.file_size_mb <= 0:
            raise UsageError(f"--file-size must be positive, got {options.file_size_mb}")
        sink = open_sink(os.fspath(dest) if isinstance(dest, os.PathLike) else dest, staging=options.staging)
        engine = engine or create_engine(source_url)
        # One sync per table and destination at a time (a second is refused naming the holder); the lock
        # dies with its process, so a killed sync never blocks the next one.
        with destination_lock(sink, f"{table_folder(table)}/{SYNC_LOCK}", purpose=f"sync {table}") as lock:
            _Run(engine, sink, table, options, detect, result, emit, lock).go()
    except SparsesyncError as exc:
        result.status, result.error = "interrupted" if isinstance(exc, interrupt.Interrupted) else "failed", exc.one_line()
        emit({"event": "sync_failed", "table": table, "run_id": result.run_id, "error": result.error})
        if raise_errors:
            raise
    finally:
        result.seconds = round(time.monotonic() - t0, 3)
        if own_engine and engine is not None:
            engine.dispose()
        if sink is not None and not hasattr(dest, "put_bytes") and hasattr(sink, "close"):
            sink.close()
    return result


class _Run:
    """One sync run of one table (the steps of the module docstring)."""

    def __init__(self, engine, sink, table, options: SyncOptions, detect: det.Detect, result, emit, lock) -> None:
        self.engine, self.sink, self.table, self.o, self.detect = engine, sink, table, options, detect
        self.result, self.emit, self.lock = result, emit, lock
        self.queries = 0
        self.folder = table_folder(table)  # the table's folder at the destination (encoded when unsafe)

    # ---- steps --------------------------------------------------------------------------------------
    def go(self) -> None:
        o, r = self.o, self.result
        started = datetime.now(timezone.utc)
        state = load_state(self.sink, self.table)
        evo = None
        if state is not None:
            repair_manifest(self.sink, state)
            evo = self._check_shape(state)  # a schema change: how it is carried over (sync.evolve), or refused
        fresh = state is None or o.full
        kind = "full" if (state is not None and o.full) else ("first" if state is None else "append")
        seq = (state.sequence if state else 0) + 1
        run_id = new_run_id(started, seq)
        while self.sink.list(f"{self.folder}/{run_id}"):
            # A crashed run of this sequence left its folder (gc removes it, no image refers to it);
            # never write into it: the next second's name is free.
            started += timedelta(seconds=1)
            run_id = new_run_id(started, seq)
        r.run_id, r.sequence = run_id, seq
        self.emit({"event": "sync_start", "table": self.table, "run_id": run_id, "kind": kind, "detect": str(self.detect)})

        checksums: dict[tuple, str] = {}
        self.probe: det.CursorProbe | None = None
        self.watermark = None
        keep: list[Part] = []
        changed: list[Part] = []
        if evo is not None:
            state = evo.state(state)  # the new schema version (also for --full)
        if not fresh:
            if evo is not None:  # BEFORE detection: it then checks the rewritten parts like any other
                state = evo.rewrite(self.sink, state, run_id, compression=o.compression,
                                    detect_mode=self.detect.mode, engine=self.engine)
                self.queries += evo.queries
            keep = narrowed(state.parts)
            keyed = [p for p in keep if not p.nulls]
            tail_lo = keyed[-1].hi if keyed else None
            if tail_lo is None:  # the image holds no key span yet (an empty table so far): read everything
                fresh, keep = True, []
            else:
                changed = self._changed(state, keep, tail_lo, checksums)
                if evo is not None and evo.forced:  # spans the schema change needs from the source
                    changed = [p for p in keep if p in changed or (p.nulls, p.lo) in evo.forced]
                if changed:
                    kind = "changed"
        if self.detect.mode == "cursor" and self.probe is None:
            self._first_probe()
        if fresh:
            spans, null_read = [(KEY_MIN, None)], True
        else:
            # Each changed part is re-read as its own span (not merged with its changed neighbours): when
            # its rows still fit one file, the new part's span is the old one and the checksum measured by
            # detection is recorded as is — no second checksum pass over the re-exported rows.
            spans = [(p.lo, p.hi) for p in changed if not p.nulls] + [(tail_lo, None)]
            null_read = any(p.nulls for p in changed)
        plan = replace(self._plan(spans, null_read), plan_id=run_id).sealed()
        if state is not None and plan.fingerprint.schema_hash != state.schema_hash:
            raise DriftError(f"the columns of {self.table} changed while this sync ran",
                             hint="run sync again", table=self.table)
        replaced = [(lo, hi) for lo, hi in _plan_spans(plan)]
        null_read = plan.null_range is not None
        if self.detect.mode == "checksum":
            self._pre_export_checksums(plan, checksums)

        report = self._execute(plan, verify=not plan.strategy.key_spans)
        tidied = tidy.TidyStats()  # a span is one file; small parts merged at the destination (sync/tidy.py)
        new_parts = tidy.split_rolled(self.sink, self.folder, plan, self._new_parts(plan, run_id, seq, checksums), tidied)
        parts = [p for p in keep
                 if not (p.nulls and null_read) and not (not p.nulls and any(_within(p, lo, hi) for lo, hi in replaced))]
        parts = sorted(parts + new_parts, key=lambda p: (p.nulls, p.lo or 0))
        if evo is not None:
            evo.commit(self.sink, self.folder, parts)  # the rewritten parts that stay (after the export)
        parts = tidy.merge_small(self.sink, self.folder, run_id, plan, parts, file_size=int(o.file_size_mb * 1024 * 1024),
                                 compression=o.compression, sequence=seq, stats=tidied)
        finished = datetime.now(timezone.utc)
        run = Run(run_id=run_id, sequence=seq, kind=kind, detect=str(self.detect),
                  started_at=started.isoformat(timespec="seconds"), finished_at=finished.isoformat(timespec="seconds"),
                  rows=report.rows, bytes=report.bytes, replaced=tuple(replaced), null_replaced=null_read,
                  manifest=f"{run_id}/manifest.json", schema_version=state.schema_version if state else 1)
        cursor = state.cursor if state is not None and not fresh else None
        if self.detect.mode == "cursor":
            cursor = {"column": self.detect.column, "watermark": det.watermark_out(self.watermark)}
            window = det.window_record([_span(p) for p in narrowed(tuple(parts))], self.probe, self.watermark,
                                       o.lookback_s)
            if window is not None:
                cursor["window"] = window
        new_state = ImageState(
            table=self.table, key=plan.source.key, source=_source_dict(plan), columns=_columns(plan),
            schema_hash=plan.fingerprint.schema_hash, sequence=seq, parts=tuple(parts),
            runs=(() if state is None else state.runs) + (run,), cursor=cursor,
            schema_version=state.schema_version if state else 1, schemas=state.schemas if state else (),
        )
        new_state = self._load_sql(new_state, run)
        self.lock.check()  # a lock lost meanwhile (S3 takeover): stop before the image is swapped
        interrupt.pause("swap")  # test hook (sparsesync.interrupt)
        interrupt.check()  # SIGINT/SIGTERM before the swap: the previous image stays in force
        save_state(self.sink, self.table, new_state)  # LAST: from here on the new image is in force

        r.kind, r.rows_read, r.bytes_written = kind, report.rows, report.bytes
        r.rows_in_image = new_state.rows
        r.spans_reexported = len(changed)
        r.schema_version = new_state.schema_version
        if evo is not None:
            r.schema_change = evo.to_dict() | {"rows_reexported": sum(p.rows for p in changed if (p.nulls, p.lo) in evo.forced)}
            r.notes.append(evo.summary())
            self.emit({"event": "schema_change", "table": self.table, "run_id": run_id, **r.schema_change})
        r.tidy = tidied.to_dict()
        if tidied.did_anything:
            r.notes.append(tidied.describe())
        r.queries = self.queries + int(report.queries or 0)
        r.status = "ok" if new_state.files else "empty"
        if self.detect.mode == "cursor":
            r.notes.append(f"--detect cursor:{self.detect.column} does not see deleted rows; use --detect checksum for deletes")
        elif self.detect.mode == "none":
            r.notes.append("--detect none reads appends only: updates, deletes and inserts below the max are not seen")
        self.emit({"event": "sync_done", "table": self.table, "run_id": run_id, "kind": kind,
                   "rows_read": r.rows_read, "rows_in_image": r.rows_in_image, "bytes": r.bytes_written,
                   "spans_reexported": r.spans_reexported, "parts": len(new_state.files), "tidy": r.tidy})

    def _check_shape(self, state: ImageState):
        """Every file of an image has one Arrow schema: a changed table's image gets a new schema version
        (:mod:`sparsesync.sync.evolve`), or one line refusing what cannot be carried over (--full)."""
        return evo_mod.plan_evolution(self.engine, state, self._table_info(state.key), full=self.o.full,
                                      schema=self.o.schema, cache_path=self.o.cache_path, use_cache=self.o.use_cache)

    def _changed(self, state: ImageState, keep: list[Part], tail_lo, checksums: dict) -> list[Part]:
        """The image parts whose rows changed on the source, per ``--detect``."""
        if self.detect.mode == "none":
            return []
        spans = [_span(p) for p in keep]
        if self.detect.mode == "checksum":
            # The new tail's checksum comes in the same pass, before it is exported.
            now = self._checksums(spans + [(tail_lo, None)])
            checksums[(tail_lo, None)] = now[-1]
            hit = [i for i, p in enumerate(keep) if p.checksum != now[i]]
            for i in hit:
                checksums[spans[i]] = now[i]
        else:
            cur = state.cursor or {}
            if cur.get("column") != self.detect.column or cur.get("watermark") is None:
                return list(keep)  # no watermark for this column yet: every span is suspect once
            # One statement: the (key, COL) pairs of the window and the server's clock; its largest COL, capped
            # at the clock, is the new watermark, read before the export so later changes are above it.
            self.probe = det.cursor_probe(self.engine, self.table, state.key, self.detect.column,
                                          det.probe_bound(cur, self.o.lookback_s), schema=self.o.schema,
                                          clock=self._clock())
            self.queries += 1
            if det.watermark_ahead(cur, self.probe):  # frozen by a future value (before the cap), or the clock went back
                self.result.notes.append(
                    f"the recorded watermark of {self.table} ({cur.get('watermark')}) is ahead of the server clock "
                    f"({det.watermark_out(self.probe.clock)}): every span is re-read once")
                self.probe = None  # go() reads MAX and the window below it again (_first_probe)
                return list(keep)
            self._note_ahead()
            # Never below the last one (which the clock capped): a watermark that drops (its row deleted, or
            # the capped clock giving way to the MAX) would put the window above where this probe started.
            self.watermark = det.later(self.probe.watermark, det.cursor_value(cur.get("watermark")))
            if self.watermark is None:  # nothing at or above the bound any more (rows deleted): ask MAX
                self.watermark = self._max_cursor()
            hit = det.cursor_changed(spans, self.probe, cur)
        return [keep[i] for i in hit]

    def _clock(self) -> str | None:
        """Which server clock caps the cursor's watermark (none for a numeric cursor), see detect.clock_kind."""
        return det.clock_kind(self._table_info(), self.detect.column)

    def _note_ahead(self) -> None:
        note = det.ahead_note(self.table, self.detect.column, self.probe)
        if note:
            self.result.notes.append(note)

    def _max_cursor(self):
        self.queries += 1
        return det.cursor_watermark(self.engine, self.table, self.detect.column, schema=self.o.schema,
                                    clock=self._clock())

    def _first_probe(self) -> None:
        """A run with no usable watermark (first run, new cursor column): read ``MAX(COL)`` (capped at the
        server's clock) and the window below it before the export, so the next run can tell the window's
        rows it has from late ones."""
        self.watermark = self._max_cursor()
        if self.watermark is not None:
            bound = det.window_bound(self.watermark, self.o.lookback_s)
            self.probe = det.cursor_probe(self.engine, self.table, self._table_info().key, self.detect.column,
                                          bound, schema=self.o.schema, clock=self._clock())
            self.queries += 1
            self._note_ahead()

    def _checksums(self, spans) -> list[str]:
        info = self._table_info()
        self.queries += det.checksum_statements(info, spans)  # one grouped statement per ≤ 500 spans
        return det.span_checksums(self.engine, info, spans)

    def _pre_export_checksums(self, plan: Plan, checksums: dict) -> None:
        """Checksum every new part's span BEFORE it is exported and record that value with the part.

        Why before: a write that lands while the span is being read makes the recorded checksum
        differ from the source on the next run, so the span is re-exported (spuriously at worst). A
        checksum taken AFTER the export could include such a write that the export missed, and the
        span would then look unchanged forever. (A write undone again before the next run — A→B→A —
        is the one pattern this cannot tell from "unchanged"; the row is then as the source has it.)
        Spans measured during detection (same pass, also before the export) are not measured twice.
        """
        need = [s for s in _group_spans(plan) if s not in checksums]  # new spans: re-cut, or the NULL keys
        if need:
            for s, c in zip(need, self._checksums(need)):
                checksums[s] = c

    def _plan(self, spans, null_keys: bool) -> Plan:
        o = self.o
        return make_plan(
            self.engine, self.table, key=o.key, schema=o.schema, rows_per_query=o.rows_per_query,
            file_size=int(o.file_size_mb * 1024 * 1024), density=o.density, sparse_threshold=o.sparse_threshold,
            type_options=o.type_options, cache_path=o.cache_path, use_cache=o.use_cache, spans=spans,
            null_keys=null_keys,
        )

    def _execute(self, plan: Plan, *, verify: bool):
        """``execute_plan`` with retries: a transient failure resumes the same run from its ledger."""
        o = self.o
        attempt = 0
        while True:
            try:
                return execute_plan(plan, self.sink, engine=self.engine, reader=o.reader, workers=o.workers,
                                    compression=o.compression, strict_dates=o.strict_dates, verify=verify,
                                    iam_role=o.iam_role, batch_rows=o.batch_rows, progress=self._progress, dask=o.dask,
                                    memory_limit_mb=o.memory_limit_mb, oversize=o.oversize, nul=o.nul,
                                    retries=o.retries, staging=o.staging,
                                    late_rows=False)  # rows arriving in the tail later: the next run reads them
            except SparsesyncError as exc:
                if not exc.transient or attempt >= o.run_retries:
                    raise
                attempt += 1
                self.result.retries = attempt
                self.emit({"event": "sync_retry", "table": self.table, "attempt": attempt, "error": exc.one_line()})
                interrupt.sleep(min(30.0, 0.5 * 2**attempt))  # cut short by SIGINT/SIGTERM

    def _progress(self, ev) -> None:
        """The executor's progress as sync events: export start, each file group, finish (not batches)."""
        if ev.kind in ("start", "group", "finish"):
            self.emit({"event": f"export_{ev.kind}", "table": self.table, "run_id": self.result.run_id,
                       "rows_done": ev.rows_done, "rows_written": ev.rows_written, "rows_total": ev.rows_total,
                       "group": ev.group})

    def _new_parts(self, plan: Plan, run_id: str, seq: int, checksums: dict) -> list[Part]:
        """One image part per file group of the run, from the executor's ledger."""
        book = LedgerStore(sink=self.sink, relpath=f"{self.folder}/{run_id}/{LEDGER}").load()
        prefix = f"{self.folder}/"
        out = []
        for g, rec in zip(plan.files, book.groups):
            first, last = plan.ranges[g.first_range], plan.ranges[g.last_range]
            nulls = first.nulls  # the NULL-key range always has a file group of its own (planner.spans)
            files = [PartFile(p.name[len(prefix):] if p.name.startswith(prefix) else p.name, p.rows, p.size)
                     for p in rec.parts if p.rows]  # an empty span holds no file (Redshift needs none)
            read_hi = None
            if last.hi is None and not nulls:
                # Keys the open tail part holds lie below read_hi; the next run narrows the part to it and
                # reads from there. With nothing read by the tail range that is where the range starts;
                # rows that arrived after planning make it their largest key + 1.
                tail_rows = rec.range_rows.get(str(last.index), 0)
                read_hi = last.lo if not tail_rows else self._max_key(files[-1].path, plan) + 1
            out.append(Part(
                lo=first.lo, hi=last.hi, path=files[0].path if files else None, rows=rec.rows,
                bytes=sum(f.bytes for f in files), run_id=run_id, sequence=seq,
                checksum=checksums.get(det.NULLS if nulls else (first.lo, last.hi)), read_hi=read_hi,
                nulls=nulls, more=tuple(files[1:]),
            ))
        return out

    def _max_key(self, relpath: str, plan: Plan) -> int:
        """The largest key in a written part, from its Parquet footer statistics."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rel = f"{self.folder}/{relpath}"
        src = self.sink.url(rel) if is_local(self.sink) else pa.BufferReader(self.sink.get_bytes(rel))
        pf = pq.ParquetFile(src)
        idx = pf.schema_arrow.get_field_index(plan.source.key)
        best = None
        for i in range(pf.metadata.num_row_groups):
            st = pf.metadata.row_group(i).column(idx).statistics
            if st is None or not st.has_min_max:
                best = None
                break
            best = int(st.max) if best is None else max(best, int(st.max))
        if best is None:
            import pyarrow.compute as pc

            best = int(pc.max(pf.read(columns=[plan.source.key]).column(0)).as_py())
        return best

    def _load_sql(self, state: ImageState, run: Run) -> ImageState:
        """Write ``<run_id>/load.sql`` through i9b's ``write_load_sql`` once it exists."""
        try:
            from .load import write_load_sql  # i9b
        except ImportError:
            return state
        manifest = f"{self.folder}/{run.manifest or run.run_id + '/manifest.json'}"  # the COPY needs its full URL
        sql = write_load_sql(state, run, iam_role=self.o.iam_role, manifest_url=self.sink.url(manifest))
        rel = f"{run.run_id}/load.sql"
        self.sink.put_bytes(f"{self.folder}/{rel}", sql.encode("utf-8"))
        run2 = replace(run, load_sql=rel)
        return replace(state, runs=state.runs[:-1] + (run2,))

    # ---- small helpers ----------------------------------------------------------------------------
    def _table_info(self, key: str | None = None):
        """The table's reflected shape (once per run)."""
        if not hasattr(self, "_info"):
            self._info = introspect(self.engine, self.table, key=self.o.key or key, schema=self.o.schema,
                                    options=self.o.type_options)
        return self._info


def _within(p: Part, lo: int, hi: int | None) -> bool:
    return p.lo >= lo and (hi is None or (p.hi is not None and p.hi <= hi))


def _span(p: Part):
    return det.NULLS if p.nulls else (p.lo, p.hi)


def _group_spans(plan: Plan) -> list:
    out = []
    for g in plan.files:
        first, last = plan.ranges[g.first_range], plan.ranges[g.last_range]
        out.append(det.NULLS if first.nulls else (first.lo, last.hi))
    return out


def _plan_spans(plan: Plan) -> list[tuple]:
    """The key spans a run plan reads (its strategy.key_spans, or the whole domain)."""
    if plan.strategy.key_spans:
        return [(int(lo), None if hi is None else int(hi)) for lo, hi in plan.strategy.key_spans]
    return [(plan.key_ranges[0].lo, None)]


def _source_dict(plan: Plan) -> dict:
    s = plan.source
    return {"dialect": s.dialect, "host": s.host, "port": s.port, "database": s.database, "table": s.table,
            "key": s.key, "username": s.username, "schema": s.schema, "key_signed": s.key_signed}


def _columns(plan: Plan) -> tuple[dict, ...]:
    from dataclasses import asdict

    return tuple(asdict(c) for c in plan.columns)
