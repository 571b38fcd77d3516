"""A writer racing the export: the checksum recorded for each part is measured before its rows are read,
so a write landing during the export shows up as a difference on the next run (a re-export), never as a
miss. A writer updates, inserts and deletes rows in a loop while a sync runs; once it stops, one more sync
must make the image equal to the source."""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa

from sparsesync.sync.table import SyncOptions, sync_table
from tests.sync.conftest import SYNC_DDL, image_rows, source_rows

pytestmark = pytest.mark.mysql


def writer(engine, table: str, stop: threading.Event, seed: int) -> None:
    rnd = random.Random(seed)
    i = 0
    while not stop.is_set():
        i += 1
        with engine.begin() as conn:
            k = rnd.randint(1, 6000)
            op = rnd.random()
            if op < 0.6:
                conn.execute(sa.text(f"UPDATE `{table}` SET v = :v WHERE id = :id"), {"id": k, "v": f"w{i}"})
            elif op < 0.8:
                conn.execute(sa.text(f"DELETE FROM `{table}` WHERE id = :id"), {"id": k})
            else:
                conn.execute(sa.text(f"INSERT IGNORE INTO `{table}` (id, v) VALUES (:id, :v)"), {"id": k, "v": f"i{i}"})


@pytest.mark.parametrize("seed", [1, 2])
def test_writes_racing_the_export_are_caught_by_the_next_sync(mysql_url, mysql_engine, mysql_table, tmp_path, seed):
    table = mysql_table(SYNC_DDL, prefix="cw")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{table}` (id, v) SELECT seq, 'a' FROM seq_1_to_5000")
    opts = SyncOptions(rows_per_query=100, file_size_mb=0.004, reader="pymysql")
    sync_table(mysql_url, table, tmp_path, opts, raise_errors=True)
    for _ in range(3):  # syncs while the writer runs: each may race it
        stop = threading.Event()
        th = threading.Thread(target=writer, args=(mysql_engine, table, stop, seed))
        th.start()
        try:
            sync_table(mysql_url, table, tmp_path, opts, raise_errors=True)
        finally:
            stop.set()
            th.join()
    sync_table(mysql_url, table, tmp_path, opts, raise_errors=True)  # the writer has stopped
    assert image_rows(tmp_path, table) == source_rows(mysql_engine, table)
