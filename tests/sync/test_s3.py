"""sync_table into s3://bucket/prefix on the loopback moto server: first run, appends past the planned
max (the tail's largest key comes from the part's footer on S3), a changed span, an emptied table."""

from __future__ import annotations

import json

import duckdb
import pytest

from sparsesync.sync.table import SyncOptions, sync_table
from tests.sync.conftest import SYNC_DDL, source_rows

pytestmark = [pytest.mark.mysql, pytest.mark.s3]
PREFIX = "lake/sync"


def s3_image(s3_client, bucket: str, table: str, tmp_path) -> list[tuple]:
    """Download what current.manifest.json lists (checking content_length) and read it with DuckDB."""
    key = f"{PREFIX}/{table}/current.manifest.json"
    try:
        manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3_client.exceptions.NoSuchKey:
        return []
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, e in enumerate(manifest["entries"]):
        k = e["url"].removeprefix(f"s3://{bucket}/")
        assert s3_client.head_object(Bucket=bucket, Key=k)["ContentLength"] == e["meta"]["content_length"]
        p = tmp_path / f"dl{i}.parquet"
        s3_client.download_file(bucket, k, str(p))
        paths.append(str(p))
    assert len(set(e["url"] for e in manifest["entries"])) == len(paths)
    return duckdb.sql(f"SELECT id, v, n FROM read_parquet({paths!r}) ORDER BY id").fetchall() if paths else []


def test_sync_to_s3(mysql_url, mysql_engine, mysql_table, s3_bucket, s3_client, tmp_path):
    table = mysql_table(SYNC_DDL, prefix="s3s")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{table}` (id, v) SELECT seq, 'a' FROM seq_1_to_800")
    dest = f"s3://{s3_bucket}/{PREFIX}"
    opts = SyncOptions(rows_per_query=100, file_size_mb=0.004, reader="pymysql")
    for step, sql in enumerate([
        None,
        f"INSERT INTO `{table}` (id, v) SELECT seq, 'b' FROM seq_801_to_900",
        f"UPDATE `{table}` SET v = 'c' WHERE id IN (5, 450)",
        f"DELETE FROM `{table}` WHERE id > 10",
    ]):
        if sql:
            with mysql_engine.begin() as conn:
                conn.exec_driver_sql(sql)
        r = sync_table(mysql_url, table, dest, opts, raise_errors=True)
        assert r.status == "ok", r.error
        assert s3_image(s3_client, s3_bucket, table, tmp_path / str(step)) == source_rows(mysql_engine, table)
    # Rows arriving after planning but before reading are read by the open tail range: the tail part's
    # bound then comes from its largest key, read from the part's Parquet footer on S3.
    def late_rows(ev):
        if ev["event"] == "export_start":
            with mysql_engine.begin() as conn:
                conn.exec_driver_sql(f"INSERT INTO `{table}` (id, v) VALUES (5000, 'late'), (5001, 'late')")

    r = sync_table(mysql_url, table, dest, opts, events=late_rows, raise_errors=True)
    state = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{table}/_state.json")["Body"].read())
    assert state["parts"][-1]["read_hi"] == "5002" and r.rows_read == 2
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{table}` (id, v) VALUES (5002, 'next'), (4999, 'below')")
    sync_table(mysql_url, table, dest, opts, raise_errors=True)
    assert s3_image(s3_client, s3_bucket, table, tmp_path / "late") == source_rows(mysql_engine, table)
    state = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{table}/_state.json")["Body"].read())
    assert [r["kind"] for r in state["runs"]] == ["first", "append", "changed", "changed", "append", "changed"]
