"""verify_output: per-range counts and order-independent checksums against the source, via DuckDB."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from sparsesync.executor.run import execute_plan
from sparsesync.executor.verify import verify_output
from sparsesync.planner.api import make_plan
from sparsesync.errors import DestinationError, VerifyError
from tests.executor.test_run import fill_mysql, make_sqlite_table, out_dir, sparse_keys, MYSQL_DDL


@pytest.fixture
def exported(sqlite_url, tmp_path):
    keys = sparse_keys(2000, seed=9)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=200, file_size=20_000)
    execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url)
    return plan, tmp_path / "out", keys


def test_verify_passes_on_a_faithful_export(exported, sqlite_url):
    plan, dest, keys = exported
    for all_columns in (False, True):
        rep = verify_output(plan, str(dest), source_url=sqlite_url, all_columns=all_columns)
        assert rep.ok and rep.output_rows == rep.source_rows == len(keys)
        assert rep.ranges_checked == len(plan.ranges) and rep.files == len(plan.files)


def _part_of_range(plan, dest, index):
    group = next(g for g in plan.files if g.first_range <= index <= g.last_range)
    return out_dir(dest, plan) / group.name


def test_verify_names_missing_and_duplicated_ranges(exported, sqlite_url):
    plan, dest, _ = exported
    # One row of range 2 lost from its part → range 2 is named as missing rows.
    r2 = plan.ranges[2]
    path = _part_of_range(plan, dest, 2)
    table = pq.read_table(path)
    ids = table.column("id").to_pylist()
    drop = next(i for i, k in enumerate(ids) if r2.contains(k))
    pq.write_table(table.take([i for i in range(len(ids)) if i != drop]), path)
    with pytest.raises(VerifyError, match=r"missing rows: #2\b"):
        verify_output(plan, str(dest), source_url=sqlite_url)
    # Duplicate range 2's rows into another listed part: reported as duplicated.
    pq.write_table(table, path)
    r = plan.ranges[5]
    other = _part_of_range(plan, dest, 5)
    t2 = pq.read_table(other)
    extra = t2.filter(pa.array([r.contains(k) for k in t2.column("id").to_pylist()]))
    assert extra.num_rows > 0
    pq.write_table(pa.concat_tables([t2, extra]), other)
    rep = verify_output(plan, str(dest), source_url=sqlite_url, raise_on_mismatch=False)
    assert not rep.ok and rep.duplicated == [5] and not rep.missing


def test_all_columns_detects_a_changed_value(exported, sqlite_url):
    plan, dest, keys = exported
    with sa.create_engine(sqlite_url).begin() as conn:
        conn.exec_driver_sql(f"UPDATE t SET v = 'changed' WHERE id = {keys[700]}")
    assert verify_output(plan, str(dest), source_url=sqlite_url).ok  # keys still match
    rep = verify_output(plan, str(dest), source_url=sqlite_url, all_columns=True, raise_on_mismatch=False)
    idx = next(r.index for r in plan.ranges if r.contains(keys[700]))
    assert rep.differ == [idx] and not rep.missing and not rep.duplicated


def test_verify_refuses_an_unfinished_run(exported, sqlite_url):
    plan, dest, _ = exported
    (out_dir(dest, plan) / "manifest.json").unlink()
    with pytest.raises(DestinationError, match="manifest.json missing"):  # exit 8, not 9 (issue 17, finding 8)
        verify_output(plan, str(dest), source_url=sqlite_url)


def test_verify_mysql_all_columns(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(1500, seed=4)
    fill_mysql(mysql_engine, name, keys)
    plan = make_plan(mysql_url, name, rows_per_query=250, file_size=30_000)
    execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url)
    rep = verify_output(plan, str(tmp_path / "out"), source_url=mysql_url, all_columns=True)
    assert rep.ok and rep.output_rows == len(keys)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {name} WHERE id = {keys[10]}")
    rep = verify_output(plan, str(tmp_path / "out"), source_url=mysql_url, raise_on_mismatch=False)
    assert rep.duplicated == [next(r.index for r in plan.ranges if r.contains(keys[10]))]
