"""Value conversion to the plan's Arrow types: special tags, overflow, NOT NULL, error context."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from sparsesync.executor.convert import Context, ReadStats, RowBatcher, ValueColumn
from sparsesync.planner.plan import ColumnSpec, KeyRange
from sparsesync.errors import ValueConversionError

RANGE = KeyRange(3, 100, 200, 10, "dense")


def _col(arrow: str, conversion: str | None = None, nullable: bool = True, *, strict: bool = False,
         stats: ReadStats | None = None, source_type: str = "x", loose: bool = False) -> ValueColumn:
    spec = ColumnSpec("c", source_type, arrow, "X", nullable, conversion)
    return ValueColumn(spec, pa.field("c", spec.pa_type, nullable), strict_dates=strict, stats=stats or ReadStats(),
                       loose_types=loose)


def _ctx(keys) -> Context:
    return Context("shop.orders", RANGE, keys)


def test_zero_dates_become_null_and_are_counted():
    stats = ReadStats()
    col = _col("timestamp[us]", "zero_date", stats=stats)
    values = [dt.datetime(2024, 1, 2, 3, 4, 5, 6), "0000-00-00 00:00:00", None, "2024-00-01 00:00:00"]
    arr = col(values, _ctx([101, 102, 103, 104]))
    assert arr.to_pylist() == [dt.datetime(2024, 1, 2, 3, 4, 5, 6), None, None, None]
    assert stats.zero_dates == {"c": 2}


def test_strict_dates_name_column_key_and_range():
    col = _col("date32[day]", "zero_date", strict=True)
    with pytest.raises(ValueConversionError) as err:
        col([dt.date(2024, 1, 1), "0000-00-00"], _ctx([150, 151]))
    text = err.value.one_line()
    assert "'c'" in text and "key 151" in text and "shop.orders" in text and "[100, 200)" in text


def test_time_bit_and_unsigned():
    t = _col("int64", "time_us")
    assert t([dt.timedelta(hours=838, minutes=59, seconds=59), -dt.timedelta(hours=838, minutes=59, seconds=59,
                                                                               microseconds=1), None],
             _ctx([1, 2, 3])).to_pylist() == [3_020_399_000_000, -3_020_399_000_001, None]
    b = _col("int64", "bit_int")
    assert b([b"\x01\x00", b"\xff", None], _ctx([1, 2, 3])).to_pylist() == [256, 255, None]
    b64 = _col("decimal128(20, 0)", "bit_int")
    assert b64([b"\xff" * 8], _ctx([1])).to_pylist() == [Decimal(2**64 - 1)]
    u = _col("decimal128(20, 0)")
    assert u([2**64 - 1, 0], _ctx([1, 2])).to_pylist() == [Decimal(2**64 - 1), Decimal(0)]


def test_decimal_overflow_names_the_key():
    col = _col("decimal128(5, 2)")
    with pytest.raises(ValueConversionError) as err:
        col([Decimal("1.50"), Decimal("123456.78")], _ctx([120, 121]))
    assert "key 121" in err.value.one_line() and "decimal128(5, 2)" in err.value.one_line()


def test_integer_overflow_and_wrong_kind_name_the_key():
    with pytest.raises(ValueConversionError, match="key 7"):
        _col("int16")([1, 40000], _ctx([6, 7]))
    with pytest.raises(ValueConversionError, match="key 9"):
        _col("int64")([1, "abc"], _ctx([8, 9]))
    with pytest.raises(ValueConversionError, match="row #1"):  # key column not selected
        _col("int64")([1, "x"], _ctx(None))
    # SQLite may hold a REAL in an INTEGER column; Arrow alone would truncate 2.5 to 2
    with pytest.raises(ValueConversionError, match="key 5.*float"):
        _col("int64", loose=True)([1, 2.5], _ctx([4, 5]))


def test_not_null_column_refuses_null():
    with pytest.raises(ValueConversionError, match="NOT NULL"):
        _col("int32", nullable=False)([1, None], _ctx([1, 2]))


def test_bool_json_and_decimal_str():
    assert _col("bool", "bool")([1, 0, None, True], _ctx([1, 2, 3, 4])).to_pylist() == [True, False, None, True]
    with pytest.raises(ValueConversionError, match="key 2"):
        _col("bool", "bool")([1, 2], _ctx([1, 2]))
    assert _col("string", "json")([b'{"a": "\xc3\xa9"}', '{"b": 1}'], _ctx([1, 2])).to_pylist() == [
        '{"a": "é"}', '{"b": 1}']
    with pytest.raises(ValueConversionError, match="UTF-8"):
        _col("string", "json")([b"\xff"], _ctx([1]))
    assert _col("string", "decimal_str")([Decimal("1" * 50), None], _ctx([1, 2])).to_pylist() == ["1" * 50, None]


def test_iso_text_dates_from_sqlite():
    d = _col("date32[day]", "iso_date")
    assert d(["2024-02-29", None], _ctx([1, 2])).to_pylist() == [dt.date(2024, 2, 29), None]
    with pytest.raises(ValueConversionError, match="key 2"):
        d(["2024-02-29", "tomorrow"], _ctx([1, 2]))
    with pytest.raises(ValueConversionError, match="time of day"):
        d(["2024-02-29 10:00:00"], _ctx([1]))
    ts = _col("timestamp[us]", "iso_datetime")
    assert ts(["2024-02-29 10:11:12.123456", "2024-02-29T10:11:12"], _ctx([1, 2])).to_pylist() == [
        dt.datetime(2024, 2, 29, 10, 11, 12, 123456), dt.datetime(2024, 2, 29, 10, 11, 12)]
    # driver objects (PostgreSQL) and text mixed
    assert ts([dt.datetime(2020, 1, 1), "2021-01-01 00:00:00"], _ctx([1, 2])).to_pylist() == [
        dt.datetime(2020, 1, 1), dt.datetime(2021, 1, 1)]
    with pytest.raises(ValueConversionError, match="key 3"):
        ts([dt.datetime(2020, 1, 1), "2021-01-01", "nope"], _ctx([1, 2, 3]))


def test_float_numeric_from_sqlite_goes_through_decimal_text():
    assert _col("decimal128(12, 3)")([1.25, 0.1, None], _ctx([1, 2, 3])).to_pylist() == [
        Decimal("1.250"), Decimal("0.100"), None]


class _FakePlan:
    """Just enough of a Plan for RowBatcher."""

    def __init__(self, columns, key="id"):
        from types import SimpleNamespace

        self.columns = tuple(columns)
        self.source = SimpleNamespace(key=key, qualified_table="db.t")

    def arrow_schema(self):
        return pa.schema([pa.field(c.name, c.pa_type, nullable=c.nullable) for c in self.columns])


def test_row_batcher_builds_exact_schema_column_wise():
    plan = _FakePlan([ColumnSpec("id", "bigint", "int64", "BIGINT", False),
                      ColumnSpec("t", "time", "int64", "BIGINT", True, "time_us"),
                      ColumnSpec("s", "varchar(5)", "string", "VARCHAR(20)", True)])
    rb = RowBatcher(plan, strict_dates=False, stats=ReadStats())
    batch = rb.build([(1, dt.timedelta(seconds=1), "a"), (2, None, "😀")], RANGE)
    assert batch.schema.equals(plan.arrow_schema())
    assert batch.to_pylist() == [{"id": 1, "t": 1_000_000, "s": "a"}, {"id": 2, "t": None, "s": "😀"}]
    assert rb.build([], RANGE).num_rows == 0
    with pytest.raises(ValueConversionError, match="key 2"):
        rb.build([(1, None, "a"), (2, None, 5)], RANGE)


def test_a_column_arrow_had_to_chunk_becomes_several_batches_not_a_type_error():
    """pa.array returns a ChunkedArray past 2 GiB of string data; RecordBatch.from_arrays raised TypeError."""
    import pyarrow as pa

    from sparsesync.executor.convert import batch_of_columns, batches_of

    schema = pa.schema([pa.field("id", pa.int64()), pa.field("t", pa.string())])
    ids = pa.array(range(5), pa.int64())
    text = pa.chunked_array([pa.array(["a", "b"]), pa.array(["c", "d", "e"])])  # what pa.array gives past 2 GiB
    with pytest.raises(TypeError):
        pa.RecordBatch.from_arrays([ids, text], schema=schema)  # the old path
    batches = batches_of(batch_of_columns([ids, text], schema))
    assert [b.num_rows for b in batches] == [2, 3] and all(b.schema == schema for b in batches)
    assert pa.Table.from_batches(batches).column("t").to_pylist() == list("abcde")
