"""PartWriter: streaming parts, deterministic roll names, empty groups, sha256, nothing visible until commit."""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparsesync.executor.sink import LocalSink
from sparsesync.executor.writer import PartWriter, dictionary_columns, part_relpath
from sparsesync.errors import DestinationError, UsageError

SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("ts", pa.timestamp("us", tz="UTC")),
    pa.field("v", pa.string()),
    pa.field("d", pa.decimal128(20, 0)),
])


def _batch(lo: int, n: int) -> pa.RecordBatch:
    ids = list(range(lo, lo + n))
    return pa.RecordBatch.from_arrays([
        pa.array(ids, pa.int64()),
        pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=i) for i in ids],
                 pa.timestamp("us", tz="UTC")),
        pa.array([None if i % 5 == 0 else f"v{i}" for i in ids], pa.string()),
        pa.array([2**64 - 1 - i for i in ids], pa.decimal128(20, 0)),
    ], schema=SCHEMA)


REL = "orders/plan1/part-00000.parquet"


def test_part_names_are_deterministic():
    assert part_relpath(REL, 0) == REL
    assert part_relpath(REL, 1) == "orders/plan1/part-00000-001.parquet"
    assert part_relpath("part-00003.parquet", 12) == "part-00003-012.parquet"


def test_single_part_round_trip_row_groups_and_sha(tmp_path):
    sink = LocalSink(tmp_path)
    w = PartWriter(sink, REL, SCHEMA, row_group_rows=1000)
    for lo in range(0, 5000, 700):
        w.write(_batch(lo, min(700, 5000 - lo)))
    assert sink.list("orders") == []  # nothing visible before close
    parts = w.close()
    assert len(parts) == 1 and parts[0].relpath == REL and parts[0].rows == 5000
    path = tmp_path / REL
    assert parts[0].size == path.stat().st_size
    assert parts[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    md = pq.read_metadata(path)
    assert md.num_rows == 5000 and md.num_row_groups == 5
    assert all(md.row_group(i).num_rows == 1000 for i in range(5))
    assert md.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == SCHEMA
    assert table.equals(pa.Table.from_batches([_batch(0, 5000)]))


def test_rolls_past_roll_rows_without_empty_extra_parts(tmp_path):
    sink = LocalSink(tmp_path)
    w = PartWriter(sink, REL, SCHEMA, roll_rows=1000, row_group_rows=300)
    for lo in range(0, 3000, 250):  # exactly 3 × roll_rows
        w.write(_batch(lo, 250))
    parts = w.close()
    assert [p.relpath for p in parts] == [REL, part_relpath(REL, 1), part_relpath(REL, 2)]
    assert [p.rows for p in parts] == [1000, 1000, 1000]
    ids = []
    for p in parts:
        t = pq.read_table(p.url)
        assert t.schema.remove_metadata() == SCHEMA
        ids += t.column("id").to_pylist()
    assert ids == list(range(3000))
    assert sorted(sink.list("orders")) == sorted(p.relpath for p in parts)


def test_empty_group_writes_a_valid_empty_file(tmp_path):
    sink = LocalSink(tmp_path)
    parts = PartWriter(sink, REL, SCHEMA, compression="snappy").close()
    assert len(parts) == 1 and parts[0].rows == 0
    t = pq.read_table(parts[0].url)
    assert t.num_rows == 0 and t.schema.remove_metadata() == SCHEMA


def test_abort_leaves_nothing_visible(tmp_path):
    sink = LocalSink(tmp_path)
    w = PartWriter(sink, REL, SCHEMA, roll_rows=100)
    w.write(_batch(0, 250))  # one part already committed by the roll, one open
    w.abort()
    assert sink.list("orders") == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_schema_mismatch_and_bad_options(tmp_path):
    sink = LocalSink(tmp_path)
    w = PartWriter(sink, REL, SCHEMA)
    other = pa.RecordBatch.from_arrays([pa.array([1], pa.int32())], names=["id"])
    with pytest.raises(DestinationError, match="schema"):
        w.write(other)
    w.abort()
    with pytest.raises(UsageError):
        PartWriter(sink, REL, SCHEMA, compression="lzma")
    with pytest.raises(UsageError):
        PartWriter(sink, REL, SCHEMA, roll_rows=0)


def test_timestamps_are_not_silently_truncated(tmp_path):
    """coerce_timestamps='us' with allow_truncated_timestamps=False: nanoseconds would raise, not vanish."""
    schema = pa.schema([pa.field("t", pa.timestamp("ns"))])
    w = PartWriter(LocalSink(tmp_path), REL, schema)
    w.write(pa.RecordBatch.from_arrays([pa.array([1], pa.timestamp("ns"))], schema=schema))
    with pytest.raises(DestinationError, match="lose data"):
        w.close()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_dictionary_only_for_repetitive_columns(tmp_path):
    """Near-unique columns skip dictionary encoding (speed); repetitive ones keep it (size); values equal."""
    n = 5000
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("cat", pa.string()), pa.field("h", pa.string())])
    batch = pa.RecordBatch.from_arrays([
        pa.array(range(n), pa.int64()), pa.array([f"c{i % 7}" for i in range(n)]),
        pa.array([hashlib.md5(str(i).encode()).hexdigest() for i in range(n)]),
    ], schema=schema)
    assert dictionary_columns(batch) == ["cat"]
    assert dictionary_columns(None) is True
    w = PartWriter(LocalSink(tmp_path), REL, schema)
    w.write(batch)
    parts = w.close()
    md = pq.read_metadata(parts[0].url)
    enc = {md.schema.column(i).name: md.row_group(0).column(i).encodings for i in range(3)}
    assert any("DICTIONARY" in e for e in enc["cat"])
    assert not any("DICTIONARY" in e for e in enc["h"])
    assert pq.read_table(parts[0].url).equals(pa.Table.from_batches([batch]))


# ---- bytes, not rows (issue 7, finding 2) ----------------------------------------------------------------
WIDE = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("b", pa.binary()), pa.field("t", pa.string())])


def _wide(lo: int, n: int, width: int, seed: int = 0) -> pa.RecordBatch:
    import random

    rng = random.Random(lo + seed)
    return pa.RecordBatch.from_arrays([
        pa.array(range(lo, lo + n), pa.int64()),
        pa.array([rng.randbytes(width) for _ in range(n)], pa.binary()),
        pa.array([rng.randbytes(width // 2).hex() for _ in range(n)], pa.string()),
    ], schema=WIDE)


@pytest.mark.parametrize("width", [10_000, 200])  # incompressible wide rows; narrow, compressible rows
def test_parts_roll_at_roll_bytes_whatever_the_batch_size(tmp_path, width):
    sink = LocalSink(tmp_path)
    roll = 1_000_000
    w = PartWriter(sink, REL, WIDE, roll_bytes=roll, row_group_bytes=8 * 1024 * 1024)
    total = 0
    for lo in range(0, 6_000_000 // width, 2000 if width < 1000 else 400):  # batches far above one part
        n = 2000 if width < 1000 else 400
        w.write(_wide(lo, n, width))
        total += n
    parts = w.close()
    assert len(parts) >= 4
    assert [p.relpath for p in parts] == [part_relpath(REL, i) for i in range(len(parts))]
    sizes = [(tmp_path / p.relpath).stat().st_size for p in parts]
    assert max(sizes) <= 1.25 * roll, sizes
    assert min(sizes[:-1]) >= 0.5 * roll, sizes  # rolling is not paid for with tiny parts
    got = pa.concat_tables(pq.read_table(tmp_path / p.relpath) for p in parts)
    assert got.num_rows == total == sum(p.rows for p in parts)
    assert got.column("id").to_pylist() == list(range(total))
    assert all(pq.read_schema(tmp_path / p.relpath).remove_metadata() == WIDE for p in parts)


def test_row_groups_are_bounded_by_bytes(tmp_path):
    sink = LocalSink(tmp_path)
    w = PartWriter(sink, REL, WIDE, row_group_bytes=300_000)
    w.write(_wide(0, 300, 10_000))  # one 4.5 MB batch: written as row groups of ~20 rows, not one
    (part,) = w.close()
    md = pq.read_metadata(tmp_path / part.relpath)
    assert md.num_rows == 300 and md.num_row_groups >= 10
    assert max(md.row_group(i).total_byte_size for i in range(md.num_row_groups)) <= 2 * 300_000
