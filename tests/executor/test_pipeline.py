"""Issue 11 speed work in the executor: encoding on its own thread (executor.pipeline), the dictionary
choice judged on a part's first row group (writer), after-run counts split over two connections (counts)."""

from __future__ import annotations

import hashlib
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparsesync.errors import DestinationError
from sparsesync.executor.checksum import Span, span_checksums, spans_of_plan
from sparsesync.executor.counts import after_run_counts, split_by_rows
from sparsesync.executor.pipeline import BackgroundWriter
from sparsesync.executor.sink import LocalSink
from sparsesync.executor.writer import PartWriter

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("status", pa.string()),
                    pa.field("note", pa.string())])
REL = "t/plan/part-00000.parquet"


def _batch(lo: int, n: int) -> pa.RecordBatch:
    ids = list(range(lo, lo + n))
    return pa.RecordBatch.from_arrays([
        pa.array(ids, pa.int64()),
        pa.array([("new", "paid", "shipped")[i % 3] for i in ids]),
        pa.array([f"note number {i} with some unique text" for i in ids]),
    ], schema=SCHEMA)


def _batches():
    # A first batch of a few rows, as a reader's first batch on a wide table is, then big ones.
    return [_batch(0, 10)] + [_batch(10 + i * 5000, 5000) for i in range(6)]


def _write(root, wrap: bool):
    w = PartWriter(LocalSink(root), REL, SCHEMA, compression="zstd", row_group_rows=8192)
    w = BackgroundWriter(w) if wrap else w
    for b in _batches():
        w.write(b)
    parts = w.close()
    return parts, (root / REL).read_bytes()


def test_background_writer_writes_the_same_bytes(tmp_path):
    direct, direct_bytes = _write(tmp_path / "a", wrap=False)
    background, background_bytes = _write(tmp_path / "b", wrap=True)
    assert [(p.rows, p.size, p.sha256) for p in direct] == [(p.rows, p.size, p.sha256) for p in background]
    assert hashlib.sha256(direct_bytes).hexdigest() == hashlib.sha256(background_bytes).hexdigest()
    assert pq.read_table(tmp_path / "b" / REL).num_rows == 30_010


class _Failing:
    """A writer whose second write fails (a full disk)."""

    def __init__(self):
        self.writes, self.aborted = 0, False

    def write(self, batch):
        self.writes += 1
        if self.writes == 2:
            raise DestinationError("disk full")

    def close(self):
        return []

    def abort(self):
        self.aborted = True

    @property
    def rows(self):
        return 0


def test_an_encoding_error_is_raised_in_the_reading_thread():
    inner = _Failing()
    w = BackgroundWriter(inner)
    with pytest.raises(DestinationError, match="disk full"):
        for i in range(50):  # some later write (or the close) sees the error; it never gets lost
            w.write(_batch(i, 1))
        w.close()
    w.abort()
    assert inner.aborted and inner.writes == 2  # nothing after the failure was encoded


def test_abort_drops_queued_batches_and_removes_staging(tmp_path):
    sink = LocalSink(tmp_path)
    inner = PartWriter(sink, REL, SCHEMA, row_group_rows=1000)
    gate = threading.Event()
    original = inner.write

    def slow_write(batch):
        gate.wait(10)
        original(batch)

    inner.write = slow_write
    w = BackgroundWriter(inner)
    w.write(_batch(0, 2000))  # taken by the thread, waiting at the gate
    gate.set()
    w.abort()
    assert not (tmp_path / REL).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_unique_columns_get_no_dictionary_even_after_a_tiny_first_batch(tmp_path):
    w = PartWriter(LocalSink(tmp_path), REL, SCHEMA, row_group_rows=8192)
    for b in _batches():
        w.write(b)
    w.close()
    rg = pq.ParquetFile(tmp_path / REL).metadata.row_group(0)
    encodings = {rg.column(i).path_in_schema: set(rg.column(i).encodings) for i in range(rg.num_columns)}
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert not encodings["id"] & dictionary and not encodings["note"] & dictionary
    assert encodings["status"] & dictionary


def test_split_by_rows_is_contiguous_and_covers_every_span():
    spans = [Span(i, i + 1) for i in range(7)]
    halves = split_by_rows(spans, [10, 10, 10, 10, 10, 10, 0], 2)
    assert len(halves) == 2 and [s for h in halves for s in h] == spans
    assert sum(1 for _ in halves[0]) in (3, 4)
    assert split_by_rows(spans[:1], [5], 2) == [spans[:1]]
    assert split_by_rows(spans, [0] * 7, 2) == [spans]


@pytest.mark.mysql
def test_after_run_counts_on_two_connections_equal_the_serial_counts(mysql_engine, mysql_table):
    from sparsesync.planner.api import make_plan

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v INT) ENGINE=InnoDB", prefix="s11cnt")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{name}` (id, v) VALUES (%s, %s)", [(i * 3, i) for i in range(1, 3001)])
    plan = make_plan(mysql_engine, name, rows_per_query=400, use_cache=False)
    assert len(plan.ranges) > 4
    spans = spans_of_plan(plan, unplanned=True)
    serial = span_checksums(mysql_engine, plan, spans, counts_only=True)
    split = after_run_counts(mysql_engine, plan, spans, min_split_rows=0)
    assert split == serial and sum(c.rows for c in split) == 3000


@pytest.mark.mysql
def test_after_run_counts_stay_on_one_connection_under_a_one_slot_budget(mysql_engine, mysql_table, mysql_url):
    """sync --connections 1: the table's engine has one slot; counting on two would wait for it forever."""
    from sparsesync.planner.api import make_plan
    from sparsesync.sync.budget import ConnectionBudget, budget_engine

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v INT) ENGINE=InnoDB", prefix="s11cnt1")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{name}` (id, v) VALUES (%s, %s)", [(i * 3, i) for i in range(1, 2001)])
    plan = make_plan(mysql_engine, name, rows_per_query=400, use_cache=False)
    spans = spans_of_plan(plan, unplanned=True)
    budget = ConnectionBudget(1, wait_s=3)
    with budget.reserve(1) as share:
        engine = budget_engine(mysql_url, share, table=name)
        try:
            with engine.connect() as conn:  # an idle pooled connection holds the one slot, as after a run
                conn.exec_driver_sql("SELECT 1")
            counts = after_run_counts(engine, plan, spans, min_split_rows=0)
        finally:
            engine.dispose()
    assert sum(c.rows for c in counts) == 2000 and budget.peak == 1
