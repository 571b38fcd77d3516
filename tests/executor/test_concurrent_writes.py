"""Concurrent writes during a serial pymysql export: the output is the snapshot taken at the start.

The progress callback fires after range 0 was read, i.e. after the reader's consistent snapshot
began. At that moment the test commits inserts (inside the plan and above its max), updates and
deletes on another connection, and a background thread keeps writing while the export goes on.
Everything the test changed happened after the snapshot, so the expected output is the table as it
was before the first change.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from sparsesync.executor.run import execute_plan
from sparsesync.planner.api import make_plan
from tests.executor.test_run import MYSQL_DDL, assert_clean_folder, fill_mysql, read_output, sparse_keys


def _rows(engine, name):
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT id, v, CAST(n AS CHAR) FROM {name} ORDER BY id").all()
    return [tuple(r) for r in rows]


def test_output_is_the_starting_snapshot_despite_concurrent_writes(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(1500, seed=77)
    fill_mysql(mysql_engine, name, keys)
    plan = make_plan(mysql_url, name, rows_per_query=100, file_size=2_000)
    before = _rows(mysql_engine, name)
    top = plan.fingerprint.max_key
    stop = threading.Event()
    fired = threading.Event()
    writes = {"n": 0}

    def change_once():
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM {name} WHERE id IN ({keys[5]}, {keys[1000]}, {keys[-1]})")
            conn.exec_driver_sql(f"UPDATE {name} SET v = 'updated' WHERE id <= 300")
            conn.exec_driver_sql(f"INSERT INTO {name} (id, v) VALUES (1000001, 'inside'), ({top + 1}, 'above'), ({top + 99}, 'above')")

    def keep_writing():
        k = top + 1000
        while not stop.is_set():
            with mysql_engine.begin() as conn:
                conn.exec_driver_sql(f"INSERT INTO {name} (id, v) VALUES ({k}, 'late')")
                conn.exec_driver_sql(f"UPDATE {name} SET v = 'late' WHERE id = {keys[(k - top) % len(keys)]}")
            writes["n"] += 1
            k += 1
            stop.wait(0.02)  # steady, not a busy loop starving the export of the GIL

    bg = threading.Thread(target=keep_writing)

    def progress(ev):
        if ev.kind == "range" and not fired.is_set():
            fired.set()
            change_once()  # synchronous: committed before the export reads range 1
            bg.start()

    try:
        report = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader="pymysql",
                              workers=1, progress=progress, batch_rows=100)
    finally:
        stop.set()
        if bg.ident is not None:
            bg.join()
    assert fired.is_set() and writes["n"] > 0
    assert report.consistency == "snapshot"
    got = [(r[0], r[1], r[2]) for r in read_output(tmp_path / "out", plan, "id, v, CAST(n AS VARCHAR)")]
    assert got == before
    assert _rows(mysql_engine, name) != before  # the changes really happened
    # Rows above the planned max came after the snapshot: not read, but reported as late.
    assert report.tail_rows == 0
    assert report.late_rows >= 2 and report.drift["late_rows"] == report.late_rows
    assert any("after the read snapshot" in line for line in report.summary_lines())
    assert report.snapshot_count == len(before)  # COUNT(*) in the same snapshot as the reads
    assert_clean_folder(tmp_path / "out", plan)


def test_rows_inserted_above_max_before_execute_are_read_by_the_tail(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(1000, seed=8)
    fill_mysql(mysql_engine, name, keys)
    plan = make_plan(mysql_url, name, rows_per_query=200)
    top = plan.fingerprint.max_key
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {name} (id, v) VALUES ({top + 1}, 'a'), ({top + 5000}, 'b')")
    report = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url)
    assert report.tail_rows == 2 and report.late_rows == 0
    assert report.drift["max_key_now"] == str(top + 5000)
    assert [r[0] for r in read_output(tmp_path / "out", plan, "id")] == sorted(keys + [top + 1, top + 5000])
