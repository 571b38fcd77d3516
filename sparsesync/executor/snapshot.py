"""``--consistency snapshot``: the whole table read at ONE point in time, whatever the reader and worker count.

One connection reading every range in one transaction is one point in time (the serial ``pymysql`` route).
Anything faster needs several connections, or a reader that opens its own connections (ConnectorX), so
their views must be opened at one instant — the way mydumper synchronises its threads:

1. a *gate* connection takes ``LOCK TABLES t READ``. That waits for every transaction that wrote ``t`` to
   end and keeps new writes of ``t`` out; reads go on;
2. while it is held, every reading connection opens its view:

   * ``pymysql`` workers: ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` plus a first read of ``t``;
   * ``connectorx`` workers cannot run a statement before their query, so each worker reads ALL its
     ranges with ONE statement (``WHERE key >= lo AND key < hi ORDER BY key``, split into ranges and file
     groups as it streams: :mod:`sparsesync.executor.span`). An InnoDB SELECT reads one view, created
     when it reads its first row: the gate waits until the first batch of every statement has arrived;
   * one ``pymysql`` *helper* transaction for the per-range ``COUNT(*)`` check and the NULL-key rows
     (the span statements carry only keyed rows, in key order);
3. ``UNLOCK TABLES``. No write of ``t`` committed between the first and the last view: they all see the
   same state. Writers waited for the time the lock was held (reported as ``lock_held_s``).

Needs: an MVCC engine (InnoDB; MyISAM/Aria/MEMORY have no snapshots), a server isolation level above
READ UNCOMMITTED (ConnectorX's connections use the server's default), and the ``LOCK TABLES`` privilege on
the table's database when more than one connection is used. Anything missing is refused before anything
is written, with a one-line error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from sparsesync.errors import SourceError, UsageError
from sparsesync.planner.plan import FileGroup, KeyRange, Plan
from sparsesync.source import is_mysql, short_db_error, text_table

CONSISTENCY_MODES = ("range", "snapshot")
MVCC_ENGINES = ("innodb", "xtradb")
LOCK_WAIT_S = 60  # how long the gate waits for writers of the table to finish before giving up
_ACCESS_DENIED = (1044, 1045, 1142, 1227)  # db / user / table access denied, missing privilege


def check_mode(mode: str) -> None:
    """Refuse an unknown ``--consistency``."""
    if mode not in CONSISTENCY_MODES:
        raise UsageError(f"--consistency must be one of {', '.join(CONSISTENCY_MODES)}, got {mode!r}")


def needs_gate(engine, reader_name: str, workers: int) -> bool:
    """True when the snapshot takes more than one connection (so their views must be opened under the lock)."""
    return is_mysql(engine) and (reader_name == "connectorx" or workers > 1)


def _deny_hint(plan: Plan) -> str:
    db = plan.source.database or "<database>"
    return (f"grant it (GRANT LOCK TABLES ON `{db}`.* TO <user>), or use --reader pymysql --workers 1 "
            "(one connection, one transaction: no lock needed, slower)")


def check_possible(engine, plan: Plan, reader_name: str, workers: int) -> None:
    """Refuse, before anything is written, a snapshot the source cannot give (one-line errors).

    MySQL/MariaDB: the table must be InnoDB and the server's isolation above READ UNCOMMITTED; when
    several connections are used, a ``LOCK TABLES … READ`` probe checks the privilege. Other dialects
    give one snapshot only on one connection (``--workers 1``).
    """
    src = plan.source
    if not is_mysql(engine):
        if workers > 1:
            raise UsageError(
                f"--consistency snapshot with --workers {workers} is supported on MySQL/MariaDB only",
                hint="use --workers 1 (one transaction: one point in time) or --consistency range", table=src.table)
        return
    with _pooled(engine, plan) as conn, conn.cursor() as cur:
        try:
            cur.execute("SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) "
                        "AND TABLE_NAME = %s", (src.schema, src.table))
            row = cur.fetchone()
            cur.execute("SELECT @@GLOBAL.tx_isolation" if _is_mariadb(conn) else "SELECT @@GLOBAL.transaction_isolation")
            isolation = str(cur.fetchone()[0]).upper().replace("_", "-")
        except Exception as exc:  # noqa: BLE001
            raise SourceError(f"checking whether a snapshot is possible failed: {short_db_error(exc)}",
                              table=src.qualified_table) from exc
        engine_name = str(row[0]) if row and row[0] else "unknown"
        if engine_name.lower() not in MVCC_ENGINES:
            raise SourceError(
                f"--consistency snapshot needs a transactional (MVCC) table, but the table's engine is {engine_name}: "
                "it has no snapshots, so its ranges cannot be read at one point in time",
                hint="convert it (ALTER TABLE … ENGINE=InnoDB) or use --consistency range", table=src.qualified_table)
        if isolation == "READ-UNCOMMITTED" and reader_name == "connectorx":
            raise SourceError(
                "--consistency snapshot with the connectorx reader needs the server's isolation level above "
                "READ UNCOMMITTED (its connections use the server default), found READ-UNCOMMITTED",
                hint="use --reader pymysql (it sets REPEATABLE READ per session)", table=src.qualified_table)
        if needs_gate(engine, reader_name, workers):
            try:
                cur.execute("SET SESSION lock_wait_timeout = %s", (LOCK_WAIT_S,))
                cur.execute(f"LOCK TABLES {_table(engine, plan)} READ")  # released at once: only a privilege probe
            except Exception as exc:  # noqa: BLE001
                raise _lock_error(exc, plan) from exc
            finally:
                with contextlib.suppress(Exception):
                    cur.execute("UNLOCK TABLES")


def _is_mariadb(conn) -> bool:
    return "mariadb" in str(getattr(conn, "server_version", "") or conn.get_server_info()).lower()


def _table(engine, plan: Plan) -> str:
    # Executed without parameters: pymysql does no % formatting, so no doubled % either.
    return text_table(engine.dialect, plan.source.table, plan.source.schema)


def _lock_error(exc: BaseException, plan: Plan) -> SourceError:
    orig = getattr(exc, "orig", None) or exc
    code = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
    if code in _ACCESS_DENIED:
        return SourceError(
            "--consistency snapshot with several connections opens their snapshots under LOCK TABLES … READ, "
            f"which the source user may not take: {short_db_error(exc)}", hint=_deny_hint(plan),
            table=plan.source.qualified_table)
    if code == 1205:  # lock wait timeout
        return SourceError(
            f"could not take LOCK TABLES … READ within {LOCK_WAIT_S} s: a long transaction is writing to the table",
            hint="retry when it has finished, or use --reader pymysql --workers 1 (no lock needed)",
            table=plan.source.qualified_table)
    return SourceError(f"LOCK TABLES … READ failed: {short_db_error(exc)}", table=plan.source.qualified_table)


@contextlib.contextmanager
def _pooled(engine, plan: Plan):
    """The DB-API connection of a pooled connection (the drift check's, usually: no new connection, whose
    TLS set-up alone costs pymysql ~0.1 s). Its session is put back as found: tables unlocked, the lock
    wait timeout reset; a connection that failed is dropped from the pool instead."""
    try:
        conn = engine.connect()
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"connecting to the source failed: {short_db_error(exc)}", table=plan.source.table) from exc
    try:
        dbapi = conn.connection.dbapi_connection
        yield dbapi
        with dbapi.cursor() as cur:
            cur.execute("UNLOCK TABLES")
            cur.execute("SET SESSION lock_wait_timeout = DEFAULT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.invalidate()
        raise
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# ---- splitting the work -----------------------------------------------------------------------------------
def split_groups(groups: list[FileGroup], workers: int) -> list[list[FileGroup]]:
    """``groups`` cut into at most ``workers`` runs of consecutive groups with about equal estimated rows.

    Each worker reads its run in key order through one snapshot view (one statement for connectorx)."""
    k = max(1, min(workers, len(groups)))
    total = sum(max(1, g.est_rows) for g in groups)
    out: list[list[FileGroup]] = [[]]
    acc = 0
    for i, g in enumerate(groups):
        need = k - len(out)  # workers still without a chunk
        if out[-1] and need > 0 and (acc * k >= total * len(out) or len(groups) - i <= need):
            out.append([])
        out[-1].append(g)
        acc += max(1, g.est_rows)
    return [c for c in out if c]


# ---- sessions -------------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """The open sessions of one snapshot: one per worker, plus the helper transaction when gated."""

    sessions: list[Any]
    closers: list[Any] = field(default_factory=list)
    helper: Any = None
    how: dict[str, Any] = field(default_factory=dict)

    def counts(self, plan: Plan, engine) -> list | None:
        """``COUNT(*)`` per range inside the snapshot (the helper's transaction), or None without one."""
        from .checksum import span_counts_dbapi, spans_of_plan

        if self.helper is None:
            return None
        with self.helper.conn.cursor() as cur:
            return span_counts_dbapi(cur, engine.dialect, plan, spans_of_plan(plan, unplanned=True))

    def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()
        self.closers.clear()


def open_snapshot(rdr, plan: Plan, chunks: list[list[FileGroup]]) -> Snapshot:
    """Open one session per chunk (and the helper) at one point in time, under ``LOCK TABLES … READ``.

    Writers of the table wait while the lock is held: from the lock to the last view (connections, the
    statements' first batches). Returns the sessions; ``how`` says how the snapshot was made.
    """
    from .readers import PyMySQLReader
    from .span import SpanSession

    engine = rdr.engine
    snap = Snapshot(sessions=[])
    helper_reader = PyMySQLReader(engine, plan, batch_rows=rdr.batch_rows, strict_dates=rdr.strict_dates,
                                  snapshot=True, batch_bytes=rdr.batch_bytes)
    helper_reader.stats = rdr.stats  # one set of counters for the run
    if rdr.name == "connectorx":
        # Before the lock (writers must not wait for it): connectorx's first call loads its runtime
        # (~0.25 s), and the rows per batch of a span statement are fixed when it is sent.
        _sample_widths(rdr, plan, chunks)
    try:
        with _pooled(engine, plan) as gate, gate.cursor() as cur:
            try:
                cur.execute("SET SESSION lock_wait_timeout = %s", (LOCK_WAIT_S,))
                t_ask = time.monotonic()
                cur.execute(f"LOCK TABLES {_table(engine, plan)} READ")
            except Exception as exc:  # noqa: BLE001
                raise _lock_error(exc, plan) from exc
            t_lock = time.monotonic()
            at = dt.datetime.now(dt.timezone.utc)
            try:
                snap.helper = _enter(snap, helper_reader.session())
                _pin(snap.helper, engine, plan)
                for chunk in chunks:
                    if rdr.name == "connectorx":
                        s = SpanSession(rdr, [r for g in chunk for r in plan.ranges_of(g)], snap.helper)
                        snap.closers.append(s.close)
                        s.start()
                    else:
                        s = _enter(snap, rdr.session())
                        _pin(s, engine, plan)
                    snap.sessions.append(s)
            finally:
                with contextlib.suppress(Exception):
                    cur.execute("UNLOCK TABLES")
            held = time.monotonic() - t_lock
    except BaseException:
        snap.close()
        raise
    n = len(chunks) + 1
    what = ("one statement per worker" if rdr.name == "connectorx" else
            "START TRANSACTION WITH CONSISTENT SNAPSHOT per worker")
    snap.how = {
        "method": "LOCK TABLES READ",
        "connections": n,
        "workers": len(chunks),
        "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "lock_wait_s": round(t_lock - t_ask, 3),
        "lock_held_s": round(held, 3),
        "text": (f"{n} connections ({what}, plus one transaction for the counts) opened their views under "
                 f"LOCK TABLES READ at {at:%Y-%m-%d %H:%M:%S}Z; writers waited {held:.2f} s"),
    }
    return snap


def one_connection_how(reader_name: str) -> dict[str, Any]:
    """``how`` of a snapshot read over one connection in one transaction (no lock)."""
    return {"method": "one transaction", "connections": 1, "workers": 1,
            "text": f"1 connection ({reader_name}), one transaction: every range read in one snapshot"}


def _enter(snap: Snapshot, cm):
    session = cm.__enter__()
    snap.closers.append(lambda: cm.__exit__(None, None, None))
    return session


def _pin(session, engine, plan: Plan) -> None:
    """A first read of the table inside the transaction (InnoDB already opened the view at START
    TRANSACTION WITH CONSISTENT SNAPSHOT; the read makes sure on every engine version)."""
    try:
        with session.conn.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {_table(engine, plan)} LIMIT 1")
            cur.fetchall()
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"opening a snapshot failed: {short_db_error(exc)}", table=plan.source.qualified_table) from exc


def _sample_widths(rdr, plan: Plan, chunks: list[list[FileGroup]]) -> None:
    """Measure the wide columns' real widths on the first keyed range of the span statements (before the gate).

    A span statement's rows per batch are chosen once, from the widest values seen so far; without a
    measurement that is the declared-type guess (~500 rows of a row with a JSON column: many more batches).
    The same probe sizes the per-range reader's first range (``ConnectorXReader.probe_widths``). Later,
    wider values can still exceed the batch byte target, as with the per-range reader between ranges
    (``--reader pymysql`` measures every row).
    """
    from .readers import key_bounds

    first = next((r for chunk in chunks for g in chunk for r in plan.ranges_of(g)
                  if not r.nulls and key_bounds(plan, r) is not None), None)
    if first is not None and rdr.width.guessed():
        rdr.probe_widths(first)
    else:
        rdr.warm_up()  # connectorx's first call loads its runtime: not while writers wait for the lock


__all__ = ["CONSISTENCY_MODES", "check_mode", "check_possible", "needs_gate", "split_groups", "open_snapshot",
           "Snapshot", "one_connection_how"]
