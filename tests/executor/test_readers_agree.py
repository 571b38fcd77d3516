"""pymysql and connectorx give identical output or identical refusals on the same hostile values (issue 7, finding 5)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import sqlalchemy as sa

from sparsesync.executor.readers import _cx_select_expr, make_reader
from sparsesync.planner.api import make_plan
from sparsesync.planner.typemap import TypeOptions
from sparsesync.errors import ValueConversionError

READERS = ("pymysql", "connectorx")
TIMES = ["00:00:00", "-00:00:00.000001", "-00:00:00.5", "00:00:00.999999", "-00:00:01", "-00:00:01.5",
         "12:34:56.789012", "-12:00:00.000001", "838:59:59", "-838:59:59", "838:59:58.999999", "-838:59:58.999999",
         "23:59:59.999999", "24:00:00", "-24:00:00.000001", None]


def _read_all(engine, plan, kind) -> pa.Table:
    rdr = make_reader(engine, plan, kind=kind, batch_rows=7)
    with rdr.session() as s:
        batches = [b for r in plan.ranges for b in s.read_range(r)]
    return pa.Table.from_batches(batches, schema=plan.arrow_schema())


def _expected_us(text: str | None) -> int | None:
    if text is None:
        return None
    neg = text.startswith("-")
    h, m, s = text.lstrip("-").split(":")
    sec, _, frac = s.partition(".")
    us = ((int(h) * 60 + int(m)) * 60 + int(sec)) * 1_000_000 + int((frac + "000000")[:6])
    return -us if neg else us


def test_time_with_fractions_is_exact_and_identical_in_both_readers(mysql_engine, mysql_url, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY, t6 TIME(6), t3 TIME(3), t0 TIME) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:i, :t, :t, :t)"),
                     [{"i": i, "t": t} for i, t in enumerate(TIMES)])
        stored = dict(conn.exec_driver_sql(f"SELECT id, CAST(t3 AS CHAR) FROM {name}").all())
    plan = make_plan(mysql_engine, name, use_cache=False)
    tables = {k: _read_all(mysql_engine, plan, k) for k in READERS}
    assert tables["pymysql"].equals(tables["connectorx"])
    assert tables["pymysql"].column("t6").to_pylist() == [_expected_us(t) for t in TIMES]
    # TIME(3) rounds on insert; the readers must carry exactly what the server holds.
    assert tables["connectorx"].column("t3").to_pylist() == [_expected_us(stored[i]) for i in range(len(TIMES))]


def test_time_expression_does_not_depend_on_time_to_sec_keeping_fractions():
    """MySQL 8 returns TIME_TO_SEC(t) as an integer (MariaDB as a decimal): fractions must come from elsewhere."""
    from sparsesync.planner.plan import ColumnSpec

    expr, _ = _cx_select_expr(ColumnSpec("t", "time(6)", "int64", "BIGINT", True, "time_us"), "`t`")
    assert "TIME_TO_SEC" not in expr.upper() and "MICROSECOND(`t`)" in expr


@pytest.mark.parametrize("bad", [2, -1, 127])
def test_tinyint1_as_bool_refuses_other_values_the_same_way_in_both_readers(mysql_engine, mysql_table, bad):
    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY, flag TINYINT(1)) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:i, :f)"),
                     [{"i": 1, "f": 0}, {"i": 2, "f": 1}, {"i": 3, "f": None}, {"i": 4, "f": bad}, {"i": 5, "f": 1}])
    plan = make_plan(mysql_engine, name, use_cache=False, type_options=TypeOptions(tinyint1_as_bool=True))
    messages = {}
    for kind in READERS:
        with pytest.raises(ValueConversionError) as err:
            _read_all(mysql_engine, plan, kind)
        messages[kind] = str(err.value)
    assert messages["pymysql"] == messages["connectorx"]
    assert f"value {bad} at key 4" in messages["pymysql"] and "'flag'" in messages["pymysql"]


def test_tinyint1_as_bool_values_0_1_null_are_identical(mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY, flag TINYINT(1), b BOOL NOT NULL) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:i, :f, :b)"),
                     [{"i": i, "f": [0, 1, None][i % 3], "b": i % 2} for i in range(20)])
    plan = make_plan(mysql_engine, name, use_cache=False, type_options=TypeOptions(tinyint1_as_bool=True))
    tables = {k: _read_all(mysql_engine, plan, k) for k in READERS}
    assert tables["pymysql"].equals(tables["connectorx"])
    assert tables["connectorx"].column("flag").to_pylist() == [[False, True, None][i % 3] for i in range(20)]


def test_hostile_text_binary_and_numbers_are_identical_in_both_readers(mysql_engine, mysql_table):
    name = mysql_table(
        "CREATE TABLE {name} (id BIGINT PRIMARY KEY, vc VARCHAR(50), tx LONGTEXT, bl LONGBLOB, vb VARBINARY(8), "
        "u64 BIGINT UNSIGNED, d DECIMAL(38,12), f FLOAT, dbl DOUBLE, b BIT(64), y YEAR) "
        "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
    rows = [
        {"id": 1, "vc": "", "tx": "", "bl": b"", "vb": b"", "u64": 0, "d": "0", "f": 0.0, "dbl": -0.0, "b": 0, "y": 1901},
        {"id": 2, "vc": "😀\u0000'\"\\;\n--", "tx": "é" * 70_000, "bl": bytes(range(256)) * 400, "vb": b"\x00\xff",
         "u64": 2**64 - 1, "d": "-12345678901234567890123456.123456789012", "f": 3.4e38, "dbl": 1.7976931348623157e308,
         "b": 2**64 - 1, "y": 2155},
        {"id": 3, "vc": None, "tx": None, "bl": None, "vb": None, "u64": None, "d": None, "f": None, "dbl": None,
         "b": None, "y": None},
    ]
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:id, :vc, :tx, :bl, :vb, :u64, :d, :f, :dbl, :b, :y)"), rows)
    plan = make_plan(mysql_engine, name, use_cache=False)
    tables = {k: _read_all(mysql_engine, plan, k) for k in READERS}
    assert tables["pymysql"].equals(tables["connectorx"])
    assert tables["pymysql"].column("tx").to_pylist()[1] == "é" * 70_000


FLOATS = [694867.47, 0.1, -3.4028234e38, 1.17549435e-38, 16777217.0, 123456.789, -0.0, None]


def test_float_values_are_the_stored_float32_in_both_readers(mysql_engine, mysql_table):
    """The text protocol prints FLOAT with 6 significant digits (694867.47 → "694867"): pymysql must not
    round what the server stores; both readers carry the exact float32."""
    import numpy as np

    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY, f FLOAT, fn FLOAT NOT NULL DEFAULT 0) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} (id, f, fn) VALUES (:i, :f, :g)"),
                     [{"i": i, "f": f, "g": f or 0.0} for i, f in enumerate(FLOATS)])
    plan = make_plan(mysql_engine, name, use_cache=False)
    tables = {k: _read_all(mysql_engine, plan, k) for k in READERS}
    want = [None if f is None else float(np.float32(f)) for f in FLOATS]
    assert tables["pymysql"].column("f").to_pylist() == want
    assert tables["connectorx"].column("f").to_pylist() == want
    assert tables["pymysql"].equals(tables["connectorx"])
