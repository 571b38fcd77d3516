"""One statement for a worker's ranges: how ``--consistency snapshot`` reads with ConnectorX.

ConnectorX opens its own connection per query and cannot run a statement before it, so it cannot join a
transaction. One SELECT, though, reads one InnoDB view: a worker that reads all its ranges with ONE
statement reads them at one point in time, and :mod:`sparsesync.executor.snapshot` opens every worker's
statement while the table's writers are held back. :class:`SpanSession` splits that statement's key-ordered
stream back into the plan's ranges, so the executor writes file groups exactly as with per-range queries.
A drain thread keeps ConnectorX's unbounded read-ahead empty: what the writer has not taken yet waits in a
queue bounded in bytes, then on local disk (:mod:`sparsesync.executor.spill`).
"""

from __future__ import annotations

import bisect
import threading
from typing import Iterator

import pyarrow as pa

from sparsesync.errors import SparsesyncError, UsageError
from sparsesync.planner.plan import KeyRange

from .spill import SpillQueue

# Reader batches a span statement may hold in memory ahead of its writer (the rest waits on disk): the
# memory budget counts "a few batches" of read-ahead per worker (executor.budget).
QUEUE_BATCHES = 2
# A span statement's batches are this fraction of the reader's batch bytes: what is in flight outside the
# queue (the batch connectorx is building, the one being converted and encoded, one read back from disk)
# shrinks with them — measured −45 MB of peak RSS on 240k × 2.7 KB rows, same wall time.
SPAN_BATCH_DIV = 4
_JOIN_S = 5.0


class _View:
    """What the executor reads off ``session.reader``: the reader's counters and this session's consistency."""

    def __init__(self, stats, consistency: str) -> None:
        self.stats = stats
        self.consistency = consistency


class SpanSession:
    """A connectorx worker's ranges read by ONE statement (one InnoDB view), handed out range by range.

    The statement covers ``[lo of the first range, hi of the last)`` in key order; :meth:`read_range`
    must be called with the worker's ranges in ascending order: it returns the stream's rows with keys in
    the range, keeps the rest for the next call, and drops rows below it (groups a resumed run skips).
    The NULL-key range is read by the helper transaction of the same snapshot.
    """

    def __init__(self, reader, ranges: list[KeyRange], helper=None) -> None:
        from .readers import key_bounds

        if reader._key_pos is None:
            raise UsageError("--consistency snapshot with the connectorx reader needs the key column among the "
                             "plan's columns", hint="use --reader pymysql", table=reader.plan.source.table)
        self.rd = reader
        self.reader = _View(reader.stats, "snapshot")
        self.helper = helper
        keyed = [b for b in (key_bounds(reader.plan, r) for r in ranges if not r.nulls) if b is not None]
        self.lo = keyed[0][0] if keyed else None
        self.hi = keyed[-1][1] if keyed else None
        self.queue: SpillQueue | None = None
        self._thread: threading.Thread | None = None
        self._buf: pa.RecordBatch | None = None
        self._done = not keyed

    def start(self) -> None:
        """Send the statement and wait for its first batch: from then on its view is fixed.

        A drain thread then empties ConnectorX's read-ahead (unbounded, in memory) into a
        :class:`~sparsesync.executor.spill.SpillQueue` of at most :data:`QUEUE_BATCHES` reader batches in
        memory, the rest on local disk, so a lagging writer costs disk, not memory.
        """
        if self._done:
            return
        rd = self.rd
        query = rd.sql(KeyRange(0, self.lo, self.hi, 0, "dense"))
        if getattr(rd.engine.dialect, "is_mariadb", False):
            # The statement stays open while its worker finishes a group (closing a part, an upload): the
            # server must not give up on a paused client after the default 60 s. MySQL 8 has no per-statement
            # form for it (connectorx cannot SET before its query): there a pause over net_write_timeout
            # breaks the statement, which is retried like any lost connection (the report then says mixed).
            query = f"SET STATEMENT net_write_timeout = 3600 FOR {query}"
        stream = self._open(query)
        self.queue = SpillQueue(QUEUE_BATCHES * rd.batch_bytes, spill_dir=getattr(rd, "spill_dir", None))
        self._thread = threading.Thread(target=self._drain, args=(stream, self.queue), daemon=True,
                                        name="sparsesync-span-drain")
        del stream  # the drain thread holds the only reference: it drops the reader when it ends
        self._thread.start()
        self._buf = self._next_raw()

    def _open(self, query: str):
        from .readers import cx_read_sql

        rd = self.rd
        stream = cx_read_sql(rd, KeyRange(0, self.lo, self.hi, 0, "dense"), query, return_type="arrow_stream",
                             batch_size=rd.width.rows_for(rd.batch_bytes // SPAN_BATCH_DIV, rd.batch_rows))
        rd.stats.add_query()
        return stream

    def _drain(self, stream, queue: SpillQueue) -> None:
        """Drain thread: every batch of the statement into ``queue``; its fault becomes the consumer's error."""
        from .readers import _cx_error

        error: BaseException | None = None
        try:
            while not queue.closed:
                try:
                    # Keeps the GIL while it waits for connectorx's producer (pyo3's __next__ does not release
                    # it), so the writer's Python waits meanwhile. Sleeping between calls (for the shortest
                    # interval seen between batches) won back 5–10 % of wall time on 240k × 2.7 KB rows but
                    # cost up to 60 MB more peak RSS (connectorx's channel fills meanwhile): the bound first.
                    b = stream.read_next_batch()
                except StopIteration:
                    break
                if b.num_rows and not queue.put(b):
                    break
        except SparsesyncError as exc:  # the spill itself failed
            error = exc
        except BaseException as exc:  # noqa: BLE001 - connectorx faults are PanicExceptions (BaseException)
            error = _cx_error(exc, self.rd, KeyRange(0, self.lo, self.hi, 0, "dense"))
            error.__cause__ = exc
        finally:
            del stream  # ends connectorx's reader on the thread that read it
            queue.finish(error)

    def _next_raw(self) -> pa.RecordBatch | None:
        if self._buf is not None:
            b, self._buf = self._buf, None
            return b
        if self._done or self.queue is None:
            return None
        b = self.queue.get()  # raises the drain thread's TransientSourceError / SourceError
        if b is None:
            self._done = True
        return b

    def read_range(self, r: KeyRange) -> Iterator[pa.RecordBatch]:
        """Stream range ``r``'s rows (ascending calls only), converted to the plan's schema."""
        from .readers import MAX_BATCH_BYTES, _byte_slices, key_bounds

        if r.nulls:
            if self.helper is not None:
                yield from self.helper.read_range(r)
            return
        bounds = key_bounds(self.rd.plan, r)
        if bounds is None:
            return
        lo, hi = bounds
        rd = self.rd
        while True:
            batch = self._next_raw()
            if batch is None:
                return
            keys = batch.column(rd._key_pos)
            start, end = _cut(keys, lo), (batch.num_rows if hi is None else _cut(keys, hi))
            if end < batch.num_rows:
                self._buf = batch.slice(end)  # the next range's rows
            if end > start:
                for piece in _byte_slices(batch.slice(start, end - start), MAX_BATCH_BYTES):
                    out = rd.convert(piece, r)
                    rd.width.observe(out)
                    rd.stats.add_batch(out)
                    yield out
            if end < batch.num_rows:
                return

    def close(self) -> None:
        """Stop the drain thread (at its next batch), delete any spill, count what was spilled."""
        self._buf = None
        self._done = True
        q, self.queue = self.queue, None
        if q is None:
            return
        q.close()
        if self._thread is not None:
            # Only a batch in flight holds it (connectorx keeps the GIL while it waits for one): a stuck
            # server must not hold up the run's end; the daemon thread then ends on its own.
            self._thread.join(timeout=_JOIN_S)
        self.rd.stats.add_spill(q.spilled_bytes, q.spilled_batches, q.peak_bytes, q.max_bytes)


def _cut(keys: pa.Array, bound: int) -> int:
    """Index of the first key ``>= bound`` in the sorted, NULL-free key column ``keys``."""
    import numpy as np

    if pa.types.is_integer(keys.type):
        arr = keys.to_numpy(zero_copy_only=False)
        info = np.iinfo(arr.dtype)
        if bound <= info.min:
            return 0
        if bound > info.max:
            return len(arr)
        return int(np.searchsorted(arr, bound, side="left"))
    return bisect.bisect_left(keys.to_pylist(), bound)  # decimal keys (BIGINT UNSIGNED): rare, exact


__all__ = ["SpanSession"]
