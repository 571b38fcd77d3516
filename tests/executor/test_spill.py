"""SpillQueue: batches in order, at most ``max_bytes`` in memory, the rest on disk and gone once read or closed."""

from __future__ import annotations

import os
import random
import threading
import time

import pyarrow as pa
import pytest

from sparsesync.errors import DestinationError, TransientSourceError
from sparsesync.executor.spill import SPILL_PREFIX, SpillQueue, sweep_stale


def _batch(i: int, rows: int = 50, width: int = 200) -> pa.RecordBatch:
    rng = random.Random(i)
    return pa.record_batch({"i": pa.array([i] * rows, pa.int64()),
                            "pad": pa.array([rng.randbytes(width) for _ in range(rows)], pa.binary())})


def _spill_dirs(base) -> list:
    return [p for p in os.listdir(base) if p.startswith(SPILL_PREFIX)]


def test_order_is_kept_across_memory_and_disk_and_the_bound_holds(tmp_path):
    size = _batch(0).nbytes
    q = SpillQueue(3 * size, spill_dir=tmp_path, segment_bytes=4 * size)
    n = 40
    seen_files = []

    def produce():
        for i in range(n):
            assert q.put(_batch(i))
            if i == 20:
                seen_files.extend(p for d in _spill_dirs(tmp_path) for p in os.listdir(tmp_path / d))
        q.finish()

    t = threading.Thread(target=produce)
    t.start()
    got = []
    while (b := q.get()) is not None:
        got.append(b.column(0)[0].as_py())
        if len(got) < 10:
            time.sleep(0.01)  # a slow consumer at first: the producer runs ahead onto disk
    t.join()
    assert got == list(range(n))
    assert q.peak_bytes <= q.max_bytes and q.peak_bytes > 0
    assert q.spilled_batches > 0 and q.spilled_bytes == q.spilled_batches * size
    assert seen_files  # spilled as Arrow IPC stream segments …
    assert all(not os.listdir(tmp_path / d) for d in _spill_dirs(tmp_path))  # … deleted once read
    q.close()
    assert _spill_dirs(tmp_path) == []


def test_interleaved_put_and_get_mixes_memory_and_disk_in_order(tmp_path):
    size = _batch(0).nbytes
    q = SpillQueue(2 * size, spill_dir=tmp_path, segment_bytes=3 * size)
    rng = random.Random(5)
    put = got = 0
    out = []
    while got < 200:
        for _ in range(rng.randint(0, 4)):
            if put < 200:
                q.put(_batch(put))
                put += 1
        for _ in range(rng.randint(0, 4)):
            if got < put:
                out.append(q.get().column(0)[0].as_py())
                got += 1
        assert q.peak_bytes <= q.max_bytes
    q.finish()
    assert q.get() is None
    assert out == list(range(200)) and q.spilled_batches > 0
    q.close()
    assert _spill_dirs(tmp_path) == []


def test_a_batch_larger_than_the_bound_goes_to_disk(tmp_path):
    q = SpillQueue(100, spill_dir=tmp_path)
    assert q.put(_batch(1))
    q.finish()
    assert q.get().column(0)[0].as_py() == 1 and q.get() is None
    assert q.peak_bytes == 0 and q.spilled_batches == 1
    q.close()
    assert _spill_dirs(tmp_path) == []


def test_producer_error_reaches_the_consumer_where_the_stream_broke_and_close_removes_the_spill(tmp_path):
    size = _batch(0).nbytes
    q = SpillQueue(size, spill_dir=tmp_path)
    for i in range(5):
        q.put(_batch(i))
    assert q.get().column(0)[0].as_py() == 0
    assert len(_spill_dirs(tmp_path)) == 1
    q.finish(TransientSourceError("lost connection"))
    assert [q.get().column(0)[0].as_py() for _ in range(4)] == [1, 2, 3, 4]  # read before the fault
    with pytest.raises(TransientSourceError, match="lost connection"):
        q.get()
    with pytest.raises(TransientSourceError):
        q.get()  # and again: the stream stays broken
    q.close()
    assert _spill_dirs(tmp_path) == []
    assert q.put(_batch(9)) is False  # closed: the producer is told to stop


def test_closing_a_queue_with_spilled_batches_unread_deletes_them(tmp_path):
    size = _batch(0).nbytes
    q = SpillQueue(size, spill_dir=tmp_path)
    for i in range(6):
        q.put(_batch(i))
    assert q.get().column(0)[0].as_py() == 0 and q.get().column(0)[0].as_py() == 1  # one segment open for reading
    assert len(_spill_dirs(tmp_path)) == 1
    q.close()
    assert _spill_dirs(tmp_path) == [] and q.get() is None


def test_close_wakes_a_waiting_consumer_and_stops_the_producer(tmp_path):
    q = SpillQueue(10, spill_dir=tmp_path)
    got = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(timeout=5)
    assert not t.is_alive() and got == [None]
    assert q.put(_batch(0)) is False


def test_an_unwritable_spill_directory_is_a_destination_error(tmp_path):
    q = SpillQueue(10, spill_dir=tmp_path / "missing")
    with pytest.raises(DestinationError, match="cannot spill") as err:
        q.put(_batch(0))
    assert "--staging" in err.value.hint
    q.close()


def test_stale_spill_of_a_dead_process_is_swept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"{SPILL_PREFIX}{dead}-abc"
    (stale / "x").mkdir(parents=True)
    (stale / "x" / "000001.arrows").write_bytes(b"x")
    mine = tmp_path / f"{SPILL_PREFIX}{os.getpid()}-def"
    mine.mkdir()
    assert sweep_stale(tmp_path) == 1
    assert not stale.exists() and mine.exists()
