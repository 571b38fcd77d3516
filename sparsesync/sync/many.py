"""``sync_many``: sync many tables in parallel under one connection budget, largest first.

A table that fails (no usable key, drift, any error) is recorded and the others go on. The summary is
returned and written to ``<dest>/_sync_report.json``; events (``table_start``, each table's own events,
``table_done``, ``sync_summary``) go to the ``events`` callback and to the ``sparsesync.sync`` logger.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from sparsesync import interrupt
from sparsesync.errors import SparsesyncError, UsageError
from sparsesync.logs import get_logger, redact_text
from sparsesync.source import create_engine, identity_of, is_mysql

from .budget import ConnectionBudget, Share, budget_engine

REPORT = "_sync_report.json"
OK_STATUSES = ("ok", "empty", "skipped")
STOPPED_STATUSES = ("interrupted", "not_started")  # SIGINT/SIGTERM: nothing of the table committed by this sync
log = get_logger("sparsesync.sync")


@dataclass
class SyncSummary:
    """Every table's outcome (dicts with the TableSyncResult fields) plus timing and the budget's peak."""

    source: str
    dest: str
    connections: int
    started_at: str
    finished_at: str | None = None
    seconds: float = 0.0
    peak_connections: int = 0
    tables: list[dict] = field(default_factory=list)
    interrupted: str | None = None  # SIGINT / SIGTERM when a signal stopped the sync

    @property
    def failed(self) -> list[str]:
        """Names of the tables that failed (an interrupted or unstarted table did not fail)."""
        return [t["table"] for t in self.tables if t["status"] not in OK_STATUSES + STOPPED_STATUSES]

    def with_status(self, status: str) -> list[str]:
        return [t["table"] for t in self.tables if t["status"] == status]

    def exit_code(self) -> int:
        """130/143 when SIGINT/SIGTERM stopped the sync; 0 when every table synced; else the failures' exit
        code when they agree, else 1."""
        if self.interrupted:
            return interrupt.exit_code(self.interrupted)
        codes = {t.get("exit_code") or 1 for t in self.tables if t["status"] not in OK_STATUSES}
        return 0 if not codes else (codes.pop() if len(codes) == 1 else 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"failed": self.failed}

    def summary_lines(self) -> list[str]:
        """One line per table, then the total."""
        lines = [table_line(t) for t in self.tables]
        ok = sum(1 for t in self.tables if t["status"] in OK_STATUSES)
        stopped = ""
        if self.interrupted:
            stopped = f"; INTERRUPTED by {self.interrupted}: {len(self.with_status('interrupted'))} interrupted, " \
                      f"{len(self.with_status('not_started'))} not started"
        lines.append(f"{ok}/{len(self.tables)} table(s) synced in {self.seconds:.1f} s"
                     f" (at most {self.peak_connections} of {self.connections} connections)"
                     + (f"; FAILED: {', '.join(self.failed)}" if self.failed else "") + stopped)
        return lines


def table_line(t: dict) -> str:
    """``orders  ok  changed  seq 3  rows read 1,234  image 50,000 rows  2 span(s) re-exported  1.2 s``."""
    if t["status"] == "interrupted":
        return f"{t['table']}  interrupted  nothing committed, the previous image stays in force  {t.get('seconds') or 0:.1f} s"
    if t["status"] == "not_started":
        return f"{t['table']}  not started (interrupted before its turn)"
    if t["status"] not in OK_STATUSES:
        return f"{t['table']}  FAILED  {t.get('error') or 'unknown error'}"
    bits = [t["table"], t["status"]]
    if t.get("kind"):
        bits.append(t["kind"])
    if t.get("sequence") is not None:
        bits.append(f"seq {t['sequence']}")
    bits.append(f"rows read {t.get('rows_read') or 0:,}")
    if t.get("rows_in_image") is not None:
        bits.append(f"image {t['rows_in_image']:,} rows")
    if t.get("spans_reexported"):
        bits.append(f"{t['spans_reexported']} span(s) re-exported")
    tidied = t.get("tidy") or {}
    if tidied.get("parts_merged"):
        bits.append(f"{tidied['parts_merged']} small parts merged into {tidied['merged_into']}")
    bits.append(f"{t.get('seconds') or 0:.1f} s")
    return "  ".join(bits)


# ---- which tables -------------------------------------------------------------------------------------------
def list_tables(engine, *, schema: str | None = None) -> list[tuple[str, int]]:
    """Base tables of the database (no views) with their approximate size in bytes, largest first."""
    names = sa.inspect(engine).get_table_names(schema=schema)
    sizes: dict[str, int] = {}
    if is_mysql(engine):
        t = sa.table("TABLES", sa.column("TABLE_NAME"), sa.column("TABLE_SCHEMA"), sa.column("TABLE_TYPE"),
                     sa.column("DATA_LENGTH"), sa.column("INDEX_LENGTH"), schema="information_schema")
        db = sa.literal(schema) if schema else sa.func.database()
        stmt = sa.select(t.c.TABLE_NAME, sa.func.coalesce(t.c.DATA_LENGTH, 0) + sa.func.coalesce(t.c.INDEX_LENGTH, 0)) \
            .where(t.c.TABLE_SCHEMA == db, t.c.TABLE_TYPE == "BASE TABLE")
        with engine.connect() as conn:
            sizes = {name: int(size or 0) for name, size in conn.execute(stmt)}
    return sorted(((n, sizes.get(n, 0)) for n in names), key=lambda x: (-x[1], x[0]))


def select_tables(available: list[tuple[str, int]], names: Iterable[str] | None, exclude: Iterable[str] = ()) -> list[str]:
    """The tables to sync, largest first: ``names`` (all when None) minus ``exclude`` globs."""
    sizes = dict(available)
    if names is None:
        chosen = [n for n, _ in available]
    else:
        chosen = list(dict.fromkeys(names))  # a named table missing from the source fails on its own line
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, g) for g in exclude)]
    return sorted(chosen, key=lambda n: (-sizes.get(n, 0), n))


# ---- running ----------------------------------------------------------------------------------------------------
def outcome_of(result: Any) -> dict:
    """A TableSyncResult (dataclass, mapping or object) as a plain dict."""
    if isinstance(result, dict):
        return dict(result)
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return dict(vars(result))


def _failed(table: str, exc: BaseException, seconds: float) -> dict:
    if isinstance(exc, interrupt.Interrupted):  # stopped before its swap: the previous image is in force
        return {"table": table, "status": "interrupted", "error": exc.one_line(), "exit_code": exc.exit_code,
                "seconds": round(seconds, 3)}
    if isinstance(exc, SparsesyncError):
        text, code = exc.one_line(), exc.exit_code
    else:  # a bug or a driver error we did not map: still one line, never a password
        text, code = f"{type(exc).__name__}: {redact_text(str(exc)).splitlines()[0] if str(exc) else ''}", 1
    return {"table": table, "status": "failed", "error": text, "exit_code": code, "seconds": round(seconds, 3)}


def _last_success(dest_sink, table: str) -> str | None:
    from .load import read_state

    try:
        runs = read_state(dest_sink, table).get("runs") or []
    except Exception:  # noqa: BLE001 - a table never synced, or an unreadable state: no last success
        return None
    return max((r.get("finished_at") or "" for r in runs), default=None) or None


DASK_DRIVER_SLOTS = 1  # with --engine dask the driver only checks, plans and counts; the tasks read


def table_share(options, *, mysql: bool):
    """``(connections one table holds at most, options)``: one per worker, read with pymysql.

    connectorx cannot be held to a budget: each of its queries opens a pool of its own (up to three
    connections seen on MariaDB) that it closes in the background after the query returns. So under a
    budget MySQL is read with pymysql, whose connections go through the budgeted engine.
    """
    workers = max(1, int(getattr(options, "workers", 1) or 1))
    reader = getattr(options, "reader", "auto")
    if mysql and reader == "connectorx":
        raise UsageError("--reader connectorx cannot be held to --connections (it opens and closes its own "
                         "connections)", hint="use --reader pymysql or auto with sync")
    if mysql and reader == "auto":
        options = dataclasses.replace(options, reader="pymysql")
    dask = getattr(options, "dask", None)
    if dask is not None:
        # The cluster's tasks open their own connections (up to the engine's in-flight cap) and the
        # driver keeps one for detection, planning and the counts: the share covers both.
        return DASK_DRIVER_SLOTS + (dask.connections or workers), options
    return workers, options


def sync_many(
    source_url: str,
    tables: Iterable[str] | None,
    dest,
    options,
    *,
    exclude: Iterable[str] = (),
    connections: int = 4,
    schema: str | None = None,
    events: Callable[[dict], None] | None = None,
    wait_s: float = 600.0,
    sync_fn: Callable | None = None,
) -> SyncSummary:
    """Sync ``tables`` (every base table when None) from ``source_url`` into ``dest``.

    At most ``connections`` source connections are open at once, idle ones included; each table gets a
    share of :func:`table_share` connections. ``sync_fn`` defaults to
    :func:`sparsesync.sync.table.sync_table` and is called with ``engine=`` (the budgeted engine) and
    ``events=``. Bad arguments raise :class:`UsageError`; a table's failure is recorded, not raised.

    SIGINT/SIGTERM (:mod:`sparsesync.interrupt`, or :func:`sparsesync.interrupt.request`): running tables stop
    at their next batch and are ``interrupted`` (unless their image was already swapped: then they report
    their committed run), no table starts after it (``not_started``); the summary's ``interrupted`` names
    the signal. The report is written either way.
    """
    with interrupt.run_scope():
        return _sync_many(source_url, tables, dest, options, exclude=exclude, connections=connections,
                          schema=schema, events=events, wait_s=wait_s, sync_fn=sync_fn)


def _sync_many(source_url, tables, dest, options, *, exclude, connections, schema, events, wait_s,
               sync_fn) -> SyncSummary:
    from sparsesync.executor.dest import open_sink

    extra: dict = {}
    if sync_fn is None:
        from .table import sync_table as sync_fn

        extra["raise_errors"] = True  # a failure reaches us as the error itself, with its exit code
    emit = events or (lambda ev: None)
    budget = ConnectionBudget(connections, wait_s=wait_s)
    t0 = time.monotonic()
    sink = open_sink(dest)
    summary = SyncSummary(source=identity_of(source_url).describe(), dest=sink.describe(), connections=connections,
                          started_at=_now())
    with budget.reserve(1) as share:  # listing tables counts against the budget too
        lister = budget_engine(source_url, share)
        mysql = is_mysql(lister)
        try:
            available = list_tables(lister, schema=schema)
        except sa.exc.SQLAlchemyError as exc:
            from sparsesync.errors import SourceError
            from sparsesync.source import short_db_error

            raise SourceError(f"cannot list the tables: {short_db_error(exc)}") from exc
        finally:
            lister.dispose()
    chosen = select_tables(available, None if tables is None else list(tables), exclude)
    if not chosen:
        raise UsageError("no tables to sync", hint="name tables, or use --all (check --exclude)")
    need, options = table_share(options, mysql=mysql)
    dask = getattr(options, "dask", None)
    if dask is not None and need > connections:
        # Without Dask a table's readers wait for slots of its share; Dask tasks cannot, so refuse.
        raise UsageError(f"with --engine dask one table needs {need} source connections at once ({DASK_DRIVER_SLOTS} "
                         f"for the driver + {need - DASK_DRIVER_SLOTS} tasks in flight), more than --connections "
                         f"{connections}", hint=f"raise --connections to {need} or lower --workers")

    def not_started(table: str) -> dict:
        out = {"table": table, "status": "not_started", "last_success": _last_success(sink, table),
               "error": f"not started: interrupted by {interrupt.requested()}"}
        _emit(emit, {"event": "table_done", **out})
        return out

    def one(table: str) -> dict:
        if interrupt.requested():  # no table starts after SIGINT/SIGTERM
            return not_started(table)
        with budget.reserve(need) as share:
            if interrupt.requested():  # the signal came while this table waited for its connections
                return not_started(table)
            start = time.monotonic()
            _emit(emit, {"event": "table_start", "table": table})
            engine = None
            try:
                # With Dask the driver's engine gets its own slots; the rest of the share is the tasks'.
                engine = budget_engine(source_url, Share(budget, DASK_DRIVER_SLOTS) if dask is not None else share,
                                       table=table)
                out = outcome_of(sync_fn(source_url, table, dest, options, engine=engine,
                                         events=lambda ev: _emit(emit, {"table": table, **ev}, "debug"), **extra))
            except Exception as exc:  # noqa: BLE001 - one table's failure must not stop the others
                out = _failed(table, exc, time.monotonic() - start)
            finally:
                if engine is not None:
                    engine.dispose()
        out.setdefault("table", table)
        out["last_success"] = _last_success(sink, table)
        _emit(emit, {"event": "table_done", **out})
        return out

    try:
        with ThreadPoolExecutor(max_workers=min(len(chosen), connections), thread_name_prefix="sync") as pool:
            summary.tables = list(pool.map(one, chosen))
        summary.seconds = round(time.monotonic() - t0, 3)
        summary.finished_at = _now()
        summary.peak_connections = budget.peak
        summary.interrupted = interrupt.requested()
        sink.put_bytes(REPORT, (json.dumps(summary.to_dict(), indent=2, default=str) + "\n").encode("utf-8"))
        _emit(emit, {"event": "sync_summary", "tables": len(chosen), "failed": summary.failed, "seconds": summary.seconds,
                     "interrupted": summary.interrupted})
    finally:
        if sink is not dest and hasattr(sink, "close"):
            sink.close()
    return summary


def _emit(emit: Callable[[dict], None], ev: dict, level: str = "info") -> None:
    level = "warning" if ev.get("status") == "failed" else level
    fields = {k: v for k, v in ev.items() if k != "event"}
    getattr(log, level)(ev.get("event", "sync_event"), **fields)
    emit(ev)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
