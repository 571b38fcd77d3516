"""sync_table on a real MariaDB table into a local directory: first run, appends, changed spans."""

from __future__ import annotations

import pytest

from sparsesync.executor.checksum import MAX_SPANS_PER_STATEMENT
from sparsesync.sync.table import SyncOptions, sync_table
from tests.sync.conftest import image_rows, source_rows, state_of

pytestmark = pytest.mark.mysql

# A few-KiB --file-size: ~one range per file group. (1e-6 MB, one file per row, now means one image part per row:
# a span is one file, sync/tidy.py — thousands of spans per test.)
SMALL = dict(rows_per_query=200, file_size_mb=0.004, reader="pymysql")


def fill(engine, table, lo, hi, v="a"):
    """Rows lo..hi; updated_at one second apart in the past, so a cursor watermark is one row's time."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{table}` (id, v, n, updated_at) SELECT seq, CONCAT('{v}', seq), "
                             f"MOD(seq, 7), TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_{lo}_to_{hi}")


def test_first_run_then_appends_read_only_new_rows(mysql_url, mysql_engine, sync_table_name, tmp_path):
    t = sync_table_name()
    fill(mysql_engine, t, 1, 1000)
    r1 = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    assert (r1.status, r1.kind, r1.sequence, r1.rows_read) == ("ok", "first", 1, 1000)
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
    st = state_of(tmp_path, t)
    assert st["parts"][0]["lo"] == str(-(2**63)) and st["parts"][-1]["hi"] is None
    assert st["parts"][-1]["read_hi"] == "1001"
    assert st["runs"][0]["replaced"] == [[str(-(2**63)), None]]

    fill(mysql_engine, t, 1001, 1300, v="b")
    r2 = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    assert (r2.kind, r2.rows_read, r2.spans_reexported) == ("append", 300, 0)
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
    st = state_of(tmp_path, t)
    assert st["runs"][-1]["replaced"] == [["1001", None]]
    los = [int(p["lo"]) for p in st["parts"]]
    assert los == sorted(los) and all(a["hi"] == b["lo"] for a, b in zip(st["parts"], st["parts"][1:]))

    r3 = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)  # nothing new
    assert (r3.kind, r3.rows_read, r3.rows_in_image) == ("append", 0, 1300)


@pytest.mark.parametrize("detect", ["checksum", "cursor:updated_at"])
def test_changed_spans_are_reexported(mysql_url, mysql_engine, sync_table_name, tmp_path, detect):
    t = sync_table_name()
    fill(mysql_engine, t, 1, 2000)
    opts = SyncOptions(detect=detect, lookback_s=0, **SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE `{t}` SET v = 'changed' WHERE id IN (50, 1500)")
        conn.exec_driver_sql(f"INSERT INTO `{t}` (id, v) VALUES (5000, 'tail')")
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    # cursor: the watermark row (id 2000, COL = watermark) is in the window the last run recorded and
    # unchanged, so its span is not re-read (it was, before the window was kept: 3 spans)
    assert r.kind == "changed" and r.spans_reexported == 2
    assert r.rows_read < 2000 // 2  # only the two changed spans and the appended row
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)


def test_checksum_sees_deletes_and_late_inserts_below_the_max(mysql_url, mysql_engine, sync_table_name, tmp_path):
    t = sync_table_name()
    fill(mysql_engine, t, 1, 1000)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{t}` (id, v) VALUES (100000, 'far')")
    opts = SyncOptions(**SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM `{t}` WHERE id = 10")
        conn.exec_driver_sql(f"INSERT INTO `{t}` (id, v) VALUES (50000, 'in the gap'), (-5, 'below the min')")
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r.kind == "changed"
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)


def test_empty_table_has_no_manifest_then_fills(mysql_url, mysql_engine, sync_table_name, tmp_path):
    t = sync_table_name()
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    assert (r.status, r.rows_in_image) == ("empty", 0)
    assert not (tmp_path / t / "current.manifest.json").exists()
    assert all(p["path"] is None for p in state_of(tmp_path, t)["parts"])
    fill(mysql_engine, t, 1, 10)
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    assert (r.status, r.rows_in_image) == ("ok", 10)
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM `{t}`")
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    assert (r.status, r.rows_in_image) == ("empty", 0)
    assert not (tmp_path / t / "current.manifest.json").exists()


def test_schema_change_is_refused_with_one_line(mysql_url, mysql_engine, sync_table_name, tmp_path):
    """A change sync cannot carry over (a type family change; ADD/DROP/rename/widening are: test_evolve)."""
    t = sync_table_name()
    fill(mysql_engine, t, 1, 10)
    sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    before = (tmp_path / t / "_state.json").read_bytes()
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE `{t}` MODIFY n VARCHAR(20)")
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL))
    assert r.status == "failed" and "--full" in r.error and "\n" not in r.error and "column 'n'" in r.error
    assert (tmp_path / t / "_state.json").read_bytes() == before
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(full=True, **SMALL), raise_errors=True)
    assert (r.kind, r.rows_in_image) == ("full", 10)


def test_bad_detect_is_a_usage_error(mysql_url, sync_table_name, tmp_path):
    r = sync_table(mysql_url, sync_table_name(), tmp_path, SyncOptions(detect="cursor:"))
    assert r.status == "failed" and "--detect" in r.error


def test_concurrent_sync_of_the_same_table_is_refused(mysql_url, mysql_engine, sync_table_name, tmp_path):
    from sparsesync.executor.lock import destination_lock
    from sparsesync.executor.sink import LocalSink

    t = sync_table_name()
    fill(mysql_engine, t, 1, 10)
    with destination_lock(LocalSink(tmp_path), f"{t}/_sync.lock", purpose="another sync"):
        r = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL))
    assert r.status == "failed" and "another sync" in r.error
    assert not (tmp_path / t / "_state.json").exists()
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)  # released: runs
    assert r.rows_in_image == 10


def test_reexported_spans_keep_the_detection_checksum(mysql_url, mysql_engine, sync_table_name, tmp_path, query_log):
    """A re-exported span whose rows still fit one file keeps the checksum detection measured (before the
    export): one grouped checksum statement for every span plus the new tail, and one more for the spans
    the planner re-cut."""
    t = sync_table_name()
    fill(mysql_engine, t, 1, 1000)
    sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    old = state_of(tmp_path, t)["parts"]
    narrowed_spans = {(p["lo"], p["hi"] if p["hi"] is not None else p["read_hi"]) for p in old}
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE `{t}` SET v = 'x' WHERE MOD(id, 100) = 7")  # every part changes
    with mysql_engine.connect() as conn:
        conn.exec_driver_sql("SET GLOBAL general_log = 'ON'")
    query_log.mark()
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    checksum_statements = sum("md5(" in s.lower() for s in query_log.statements(t))
    new = [p for p in state_of(tmp_path, t)["parts"] if p["run_id"] == r.run_id and p["hi"] is not None]
    recut = [p for p in new if (p["lo"], p["hi"]) not in narrowed_spans]
    # A span is one file (sync/tidy.py): each rolled file is a part, so the parts holding an id ≡ 7 (mod 100)
    # changed, and only those are re-read.
    hit = [p for p in old if any(int(p["lo"]) <= i < int(p["hi"] or p["read_hi"]) for i in range(7, 1001, 100))]
    assert r.spans_reexported == len(hit) < len(old)
    # recut: the old open tail part, cut into the plan's ranges again, and re-exported spans whose rows rolled
    # into two files this time (each file is a part) — every one inside an old span that was re-read
    reread = [(int(p["lo"]), int(p["hi"] or p["read_hi"])) for p in hit + [old[-1]]]
    assert all(any(lo <= int(p["lo"]) and int(p["hi"]) <= hi for lo, hi in reread) for p in recut)
    # detection: one grouped statement per 500 spans; one more only for file groups the planner re-cut (a piece
    # of a group that rolled gets its content checksum from DuckDB, no statement)
    assert checksum_statements <= -(-(len(old) + 1) // MAX_SPANS_PER_STATEMENT) + (1 if recut else 0)
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
