"""--detect checksum on a table without a primary key, synced with --key k (k not unique), every row present
twice: identical rows must not cancel in the span checksum (issue 16, finding 1), and an image checksummed
in the old format (a xor) re-exports each span once, never passing as unchanged."""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb
import pytest

from sparsesync.executor.dest import open_sink
from sparsesync.sync import detect as det
from sparsesync.sync.state import load_state, save_state
from sparsesync.sync.table import SyncOptions, sync_table

pytestmark = pytest.mark.mysql

DDL = "CREATE TABLE {name} (k BIGINT NOT NULL, v VARCHAR(40), n INT NULL, KEY (k))"  # no primary key
OPTS = SyncOptions(key="k", rows_per_query=400, file_size_mb=0.001, reader="pymysql")  # 4 spans
DISTINCT = 1000  # keys 1..1000, each row twice: 2,000 rows


def image(dest, table) -> list[tuple]:
    manifest = dest / table / "current.manifest.json"
    urls = [e["url"] for e in json.loads(manifest.read_text())["entries"]]
    return duckdb.sql(f"SELECT k, v, n FROM read_parquet({urls!r}) ORDER BY k, v, n").fetchall()


def source(engine, table) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT k, v, n FROM `{table}` ORDER BY k, v, n")]


def doubled_table(mysql_table, engine) -> str:
    t = mysql_table(DDL, prefix="dup")
    with engine.begin() as conn:
        for _ in range(2):
            conn.exec_driver_sql(f"INSERT INTO `{t}` (k, v, n) SELECT seq, CONCAT('a', seq), MOD(seq, 7) "
                                 f"FROM seq_1_to_{DISTINCT}")
    return t


def execute(engine, *sql: str) -> None:
    with engine.begin() as conn:
        for s in sql:
            conn.exec_driver_sql(s)


def test_update_of_both_copies_of_a_duplicated_row_is_detected(mysql_url, mysql_engine, mysql_table, tmp_path):
    t = doubled_table(mysql_table, mysql_engine)
    r = sync_table(mysql_url, t, tmp_path, OPTS, raise_errors=True)
    assert (r.kind, r.rows_in_image) == ("first", 2 * DISTINCT)
    assert len(load_state(open_sink(str(tmp_path)), t).parts) > 2  # several spans: k = 5 is in one of them

    execute(mysql_engine, f"UPDATE `{t}` SET v = 'changed' WHERE k = 5")  # both copies: the xor stays equal
    r = sync_table(mysql_url, t, tmp_path, OPTS, raise_errors=True)
    assert (r.kind, r.spans_reexported) == ("changed", 1)
    assert image(tmp_path, t) == source(mysql_engine, t)
    assert [row for row in image(tmp_path, t) if row[0] == 5] == [(5, "changed", 5), (5, "changed", 5)]

    r = sync_table(mysql_url, t, tmp_path, OPTS, raise_errors=True)  # nothing changed since
    assert (r.kind, r.spans_reexported, r.rows_read) == ("append", 0, 0)


def test_a_duplicated_pair_deleted_and_another_inserted_in_one_span_is_detected(
        mysql_url, mysql_engine, mysql_table, tmp_path):
    t = doubled_table(mysql_table, mysql_engine)
    sync_table(mysql_url, t, tmp_path, OPTS, raise_errors=True)
    # Same span, same row count; the pair removed and the pair added each xor to zero.
    execute(mysql_engine, f"DELETE FROM `{t}` WHERE k = 7",
            f"INSERT INTO `{t}` (k, v, n) VALUES (8, 'twin', NULL), (8, 'twin', NULL)")
    r = sync_table(mysql_url, t, tmp_path, OPTS, raise_errors=True)
    assert (r.kind, r.spans_reexported) == ("changed", 1)
    got = image(tmp_path, t)
    assert got == source(mysql_engine, t)
    assert not [row for row in got if row[0] == 7] and got.count((8, "twin", None)) == 2


def test_an_image_checksummed_in_the_old_format_reexports_each_span_once(
        mysql_url, mysql_engine, mysql_table, tmp_path):
    t = doubled_table(mysql_table, mysql_engine)
    sync_table(mysql_url, t, tmp_path, OPTS, raise_errors=True)
    sink = open_sink(str(tmp_path))
    state = load_state(sink, t)
    # Rewrite the recorded checksums as an earlier version recorded them: "<rows>:<16 hex>". The hex is taken
    # from the current sum, so a span of one row or none (where xor and sum agree) would pass as unchanged
    # if only the digits were compared.
    old = tuple(replace(p, checksum=p.checksum.replace(det.CHECKSUM_FORMAT, "", 1)) for p in state.parts)
    assert all(p.checksum and ":sum:" not in p.checksum for p in old)
    save_state(sink, t, replace(state, parts=old))

    r = sync_table(mysql_url, t, tmp_path, OPTS, raise_errors=True)
    assert r.kind == "changed" and r.spans_reexported == len([p for p in old if p.hi is not None or p.rows])
    assert image(tmp_path, t) == source(mysql_engine, t)
    assert all(p.checksum is None or det.CHECKSUM_FORMAT in p.checksum for p in load_state(sink, t).parts)
    r = sync_table(mysql_url, t, tmp_path, OPTS, raise_errors=True)  # once: the new format is in place
    assert (r.kind, r.spans_reexported) == ("append", 0)


def test_merged_checksum_texts_equal_the_checksum_of_the_union():
    from sparsesync.executor.checksum import _fmt, row_hash

    hs = [row_hash(f"{i}|x") for i in range(5)]
    a = det.checksum_text(2, _fmt(hs[0] + hs[1]))
    b = det.checksum_text(3, _fmt(hs[2] + hs[3] + hs[4]))
    assert det.merge_checksum_texts(a, b) == det.checksum_text(5, _fmt(sum(hs)))
    assert det.merge_checksum_texts(a, "3:" + _fmt(0)) is None  # an old-format text: no merged value
    assert det.merge_checksum_texts(None, b) is None
