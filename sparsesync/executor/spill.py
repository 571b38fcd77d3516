"""A batch queue bounded in bytes that overflows to local disk: how a span statement stays under ``--memory-limit``.

ConnectorX reads a statement ahead of its consumer into an unbounded in-process channel, so a span statement
(:mod:`sparsesync.executor.span`) whose writer lags would pile the rest of the statement up in memory. A
drain thread empties that channel as it fills, into a :class:`SpillQueue`: batches wait in memory up to
``max_bytes``; past that they are appended to Arrow IPC stream files on local disk and read back in order.
Disk, not memory, absorbs how far the writer falls behind.

The spill directory is private (``mkdtemp``, mode 0700), named after the process, removed by
:meth:`SpillQueue.close`, at interpreter exit, or — after a ``kill -9`` — by the next run that spills
(:func:`sweep_stale`), like S3 staging directories.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import pyarrow as pa

from sparsesync.errors import DestinationError

SPILL_PREFIX = "sparsesync-spill-"  # + pid + "-" + mkdtemp's random suffix


class _Segment:
    """One spill file: written by the producer thread, read by the consumer thread, never both at once
    on the same batch (a batch is read only after it was completely written and published)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._sink = pa.OSFile(str(path), "wb")  # unbuffered: a published batch is in the file
        self._writer = pa.ipc.new_stream(self._sink, schema)
        self._reader = None
        self.bytes = 0
        self.written = 0  # batches published to the consumer
        self.read = 0  # batches the consumer took
        self.sealed = False  # no more batches will be written

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.bytes += batch.nbytes

    def close_writer(self) -> None:
        if self._writer is not None:
            w, s, self._writer, self._sink = self._writer, self._sink, None, None
            try:
                w.close()
            finally:
                s.close()

    def read_next(self) -> pa.RecordBatch:
        if self._reader is None:
            self._reader = pa.ipc.open_stream(pa.OSFile(str(self.path), "rb"))
        return self._reader.read_next_batch()

    def close_reader(self) -> None:
        r, self._reader = self._reader, None
        if r is not None:
            r.close()


class SpillQueue:
    """FIFO of record batches for one producer thread and one consumer thread, at most ``max_bytes`` in memory.

    :meth:`put` never blocks on the consumer: a batch that does not fit in memory, and every batch after
    it while any wait on disk, goes to a spill file (so batches come out exactly in the order they went
    in). :meth:`get` blocks until a batch is there; an error passed to :meth:`finish` is raised where the
    stream broke, after the batches read before it — where the consumer met it when it read the stream
    itself, so a fault late in a statement still lets the groups before it finish in its view.
    ``peak_bytes`` is the most the queue ever held in memory, ``spilled_bytes``/``spilled_batches`` what
    went through disk.
    """

    def __init__(self, max_bytes: int, *, spill_dir: str | os.PathLike | None = None,
                 segment_bytes: int | None = None) -> None:
        self.max_bytes = max(1, int(max_bytes))
        # Segments are deleted once read: disk use stays near how far the consumer lags, not the whole spill.
        self.segment_bytes = max(1, int(segment_bytes or self.max_bytes))
        self._base = Path(spill_dir) if spill_dir is not None else Path(tempfile.gettempdir())
        self._cond = threading.Condition()
        self._items: collections.deque = collections.deque()  # RecordBatch, or the _Segment holding the next one
        self._mem = 0
        self._on_disk = 0  # items of _items that wait on disk
        self._done = False
        self._error: BaseException | None = None
        self._closed = False
        # Only one thread at a time touches a segment's writer (producer, close) or reader (consumer, close).
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._segment: _Segment | None = None  # the one being written
        self._segments: list[_Segment] = []  # every segment not deleted yet
        self._dir: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._made = 0
        self.peak_bytes = 0
        self.spilled_bytes = 0
        self.spilled_batches = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: the producer should stop."""
        return self._closed

    @property
    def directory(self) -> Path | None:
        """The spill directory, once something was spilled (None before and after :meth:`close`)."""
        return self._dir

    # ---- producer ----------------------------------------------------------------------------------------------
    def put(self, batch: pa.RecordBatch) -> bool:
        """Queue ``batch`` (in memory if it fits and nothing waits on disk, else on disk); False once closed.

        Raises :class:`DestinationError` when the spill directory cannot be written.
        """
        n = batch.nbytes
        with self._cond:
            if self._closed:
                return False
            if self._on_disk == 0 and self._mem + n <= self.max_bytes:
                self._items.append(batch)
                self._mem += n
                self.peak_bytes = max(self.peak_bytes, self._mem)
                self._cond.notify_all()
                return True
        with self._write_lock:
            if self._closed:
                return False
            try:
                seg = self._segment
                if seg is None:
                    seg = self._segment = self._new_segment(batch.schema)
                seg.write(batch)
            except OSError as exc:
                raise DestinationError(
                    f"cannot spill a snapshot statement's rows to {self._dir or self._base}: "
                    f"{exc.strerror or exc}",
                    hint="pass --staging DIR (a writable local directory with room for the rows the writer lags behind)",
                ) from exc
        with self._cond:
            if self._closed:
                return False
            seg.written += 1
            self._items.append(seg)
            self._on_disk += 1
            self.spilled_bytes += n
            self.spilled_batches += 1
            self._cond.notify_all()
        if seg.bytes >= self.segment_bytes:
            self._seal()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        """The producer's last call: end of the stream, or the error the consumer must see."""
        self._seal()
        with self._cond:
            self._done = True
            if error is not None and self._error is None:
                self._error = error
            self._cond.notify_all()

    def _new_segment(self, schema: pa.Schema) -> _Segment:
        if self._dir is None:
            sweep_stale(self._base)
            self._dir = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=self._base))
            # Interpreter exit without close() (Ctrl-C past a stuck thread): still no spill left behind.
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        self._made += 1
        seg = _Segment(self._dir / f"{self._made:06d}.arrows", schema)
        with self._cond:
            self._segments.append(seg)
        return seg

    def _seal(self) -> None:
        with self._write_lock:
            seg, self._segment = self._segment, None
            if seg is not None:
                seg.close_writer()
        if seg is not None:
            with self._cond:
                seg.sealed = True
                if seg.read == seg.written:
                    self._drop(seg)

    # ---- consumer ----------------------------------------------------------------------------------------------
    def get(self) -> pa.RecordBatch | None:
        """The next batch in order; None at the end (or once closed); at the end, raises the producer's error."""
        with self._cond:
            while not self._items and not self._done and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if not self._items:
                if self._error is not None:
                    raise self._error
                return None
            item = self._items.popleft()
            if isinstance(item, pa.RecordBatch):
                self._mem -= item.nbytes
                return item
            self._on_disk -= 1
        with self._read_lock:
            if self._closed:
                return None
            batch = item.read_next()
        with self._cond:
            item.read += 1
            if item.sealed and item.read == item.written:
                self._drop(item)
        return batch

    def _drop(self, seg: _Segment) -> None:
        """Delete a segment every batch of which was read (called with ``_cond`` held)."""
        seg.close_reader()
        seg.path.unlink(missing_ok=True)
        if seg in self._segments:
            self._segments.remove(seg)

    # ---- both --------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop what is queued and delete the spill directory; later :meth:`put` calls return False."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            self._mem = self._on_disk = 0
            self._cond.notify_all()
        with self._write_lock:  # waits for a batch being written, at most
            seg, self._segment = self._segment, None
            if seg is not None:
                _quietly(seg.close_writer)
        with self._read_lock:
            for s in list(self._segments):
                _quietly(s.close_reader)
            self._segments.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._finalizer is not None:
            self._finalizer.detach()


def _quietly(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - closing a file about to be deleted
        pass


def sweep_stale(base: str | os.PathLike) -> int:
    """Remove spill directories under ``base`` left by processes of this user that no longer run."""
    from .lock import pid_alive

    n = 0
    base = Path(base)
    try:
        roots = list(base.glob(f"{SPILL_PREFIX}*"))
    except OSError:
        return 0
    for root in roots:
        m = re.match(rf"^{SPILL_PREFIX}(\d+)-", root.name)
        try:
            if m is None or root.is_symlink() or not root.is_dir() or root.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue  # a live process's spill is in use
        shutil.rmtree(root, ignore_errors=True)
        n += 1
    return n


__all__ = ["SpillQueue", "sweep_stale", "SPILL_PREFIX"]
