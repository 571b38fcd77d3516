"""The connection budget of a multi-table sync: the source never sees more than N of our connections.

Two levels, so tables cannot deadlock each other:

* a table is admitted only when the budget has its whole share free (``reserve``), so the shares of the
  tables running at once never add up to more than N;
* inside its share, every connection the table opens goes through its :func:`budget_engine`, whose
  connects take a slot and whose closes give it back; an idle pooled connection keeps its slot, so idle
  connections are counted too. connectorx, which opens and closes its own connections, is not used under
  a budget (:func:`sparsesync.sync.many.table_share`).

A table that needs more connections at once than its share waits ``wait_s`` and then fails with one
line instead of hanging.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from sparsesync.errors import SourceError, UsageError
from sparsesync.source import create_engine, dbapi_connect, pymysql_do_connect


class ConnectionBudget:
    """At most ``limit`` source connections open at once across every table of one sync."""

    def __init__(self, limit: int, *, wait_s: float = 600.0) -> None:
        if limit < 1:
            raise UsageError(f"--connections must be at least 1, got {limit}")
        self.limit = limit
        self.wait_s = wait_s
        self._cond = threading.Condition()
        self._free = limit
        self.open = 0
        self.peak = 0  # most connections open at once, as counted by us (the test samples the server too)

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator["Share"]:
        """Block until ``n`` slots are free and hold them as one table's :class:`Share`."""
        n = max(1, min(n, self.limit))
        with self._cond:
            self._cond.wait_for(lambda: self._free >= n)
            self._free -= n
        try:
            yield Share(self, n)
        finally:
            with self._cond:
                self._free += n
                self._cond.notify_all()

    def _opened(self) -> None:
        with self._cond:
            self.open += 1
            self.peak = max(self.peak, self.open)

    def _closed(self) -> None:
        with self._cond:
            self.open -= 1


class Share:
    """One table's slots: each open connection holds one."""

    def __init__(self, budget: ConnectionBudget, n: int) -> None:
        self.budget = budget
        self.size = n
        self._cond = threading.Condition()
        self._free = n

    def acquire(self, table: str | None = None) -> None:
        """Take a slot, or fail with one line after the budget's wait."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._free > 0, timeout=self.budget.wait_s):
                raise SourceError(
                    f"waited {self.budget.wait_s:.0f} s for a source connection: this table needs more than "
                    f"its {self.size} connection(s) at once", table=table,
                    hint="raise --connections or lower --workers",
                )
            self._free -= 1
        self.budget._opened()

    def release(self) -> None:
        """Give a slot back."""
        self.budget._closed()
        with self._cond:
            self._free += 1
            self._cond.notify_all()


def budget_engine(url: str, share: Share, *, table: str | None = None) -> Engine:
    """An Engine whose every connection (pooled or detached from its pool) holds a slot of ``share``."""
    share.acquire(table)  # covers create_engine's own connection check, closed again before the release
    try:
        # Connections are reused within the share (reconnecting for every statement cost 2x on a whole
        # sync, benchmarks/results/many.md); an idle pooled one keeps its slot until it is closed.
        # The slots are the only limit (no pool timeout of its own): overflow connections close on return.
        engine = create_engine(url, poolclass=QueuePool, pool_size=share.size, max_overflow=-1)
        engine.dispose()
    finally:
        share.release()

    # create_engine's own listener would connect without taking a slot: this one connects instead
    if sa.event.contains(engine, "do_connect", pymysql_do_connect):
        sa.event.remove(engine, "do_connect", pymysql_do_connect)

    @sa.event.listens_for(engine, "do_connect")
    def _take(dialect, conn_rec, cargs, cparams):
        share.acquire(table)
        try:
            return dbapi_connect(dialect, cargs, cparams)
        except BaseException:
            share.release()
            raise

    @sa.event.listens_for(engine.pool, "close")
    def _give(dbapi_conn, conn_rec):
        share.release()

    @sa.event.listens_for(engine.pool, "close_detached")
    def _give_detached(dbapi_conn):
        share.release()

    return engine
