"""Drift: schema changes refused with what changed; a vanished table; growth read by the tail and reported."""

from __future__ import annotations

import pytest

from sparsesync.executor.drift import check_drift, compare_columns
from sparsesync.executor.run import execute_plan
from sparsesync.planner.api import make_plan
from sparsesync.errors import DriftError
from tests.conftest import insert_keys
from tests.executor.test_run import read_output


def _table(mysql_table, mysql_engine, keys):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(20), w INT)")
    insert_keys(mysql_engine, name, keys, extra=lambda k: f"v{k}")
    return name


@pytest.mark.parametrize(
    "alter, words",
    [
        ("ADD COLUMN z INT", ["added z"]),
        ("DROP COLUMN w", ["removed w"]),
        ("MODIFY COLUMN v VARCHAR(50)", ["retyped v", "varchar(50)"]),
        ("MODIFY COLUMN v VARCHAR(20) NOT NULL", ["retyped v", "NOT NULL"]),
    ],
)
def test_schema_change_is_refused_naming_it(mysql_engine, mysql_url, mysql_table, tmp_path, alter, words):
    name = _table(mysql_table, mysql_engine, range(1, 200))
    plan = make_plan(mysql_url, name, rows_per_query=50)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {name} {alter}")
    with pytest.raises(DriftError) as info:
        execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url)
    text = info.value.one_line()
    for w in words:
        assert w.lower() in text.lower()
    assert info.value.exit_code == DriftError.exit_code != 1
    assert not (tmp_path / "out").exists()


def test_vanished_table(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = _table(mysql_table, mysql_engine, range(1, 50))
    plan = make_plan(mysql_url, name)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {name}")
    with pytest.raises(DriftError, match="no longer exists"):
        execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url)


def test_rows_above_planned_max_are_read_by_the_tail_and_reported(mysql_engine, mysql_url, mysql_table, tmp_path):
    keys = list(range(1, 600)) + [10_000, 50_000]
    name = _table(mysql_table, mysql_engine, keys)
    plan = make_plan(mysql_url, name, rows_per_query=100)
    late = [50_001, 70_000, 2**60]
    insert_keys(mysql_engine, name, late, extra=lambda k: "late")
    with mysql_engine.begin() as conn:  # and a row below the planned minimum: range 0 covers it
        conn.exec_driver_sql(f"INSERT INTO {name} (id, v) VALUES (-5, 'below')")
    drift = check_drift(mysql_engine, plan)
    assert drift.grew and drift.max_key_now == 2**60 and drift.min_key_now == -5
    report = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url)
    assert report.tail_rows == len(late)
    assert report.drift["max_key_now"] == str(2**60) and report.drift["tail_rows"] == len(late)
    assert any("above the planned max" in line for line in report.summary_lines())
    assert [r[0] for r in read_output(tmp_path / "out", plan, "id")] == sorted([-5] + keys + late)
    assert report.deviations and report.deviations[-1].index == plan.ranges[-1].index


def test_compare_columns_names_changes():
    from sparsesync.planner.plan import ColumnSpec

    a = [ColumnSpec("id", "bigint", "int64", "BIGINT", False), ColumnSpec("v", "int", "int32", "INTEGER")]
    b = [ColumnSpec("id", "bigint", "int64", "BIGINT", True), ColumnSpec("x", "int", "int32", "INTEGER")]
    added, removed, retyped = compare_columns(a, b)
    assert added == ["x"] and removed == ["v"] and retyped == ["id NOT NULL → NULL"]
