"""execute_plan end to end into ``s3://bucket/prefix`` on moto: read back, sizes, nothing stray."""

from __future__ import annotations

import json

import duckdb
import pytest

from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.planner.api import make_plan
from tests.executor.test_run import ARTIFACTS, MYSQL_DDL, fill_mysql, make_sqlite_table, sparse_keys

pytestmark = pytest.mark.s3

PREFIX = "exports/nightly"


def _bucket_keys(s3_client, bucket: str) -> set[str]:
    keys = set()
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def _read_back(s3_client, bucket: str, plan, tmp_path, columns: str) -> tuple[list[tuple], dict]:
    """Download every part named by the manifest, check its size, read the rows with DuckDB."""
    folder_key = f"{PREFIX}/{output_folder(plan)}"
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=f"{folder_key}/manifest.json")["Body"].read())
    local = []
    for i, entry in enumerate(manifest["entries"]):
        assert entry["url"].startswith(f"s3://{bucket}/{folder_key}/")
        key = entry["url"].removeprefix(f"s3://{bucket}/")
        head = s3_client.head_object(Bucket=bucket, Key=key)
        assert entry["meta"]["content_length"] == head["ContentLength"]  # Redshift checks this
        path = tmp_path / f"dl-{i:05d}.parquet"
        s3_client.download_file(bucket, key, str(path))
        assert path.stat().st_size == head["ContentLength"]
        local.append(str(path))
    listing = "[" + ", ".join(f"'{p}'" for p in local) + "]"
    key_col = plan.source.key
    rows = duckdb.sql(f'SELECT {columns} FROM read_parquet({listing}) ORDER BY "{key_col}"').fetchall()
    return rows, manifest


def _assert_nothing_stray(s3_client, bucket: str, plan, manifest: dict) -> None:
    folder_key = f"{PREFIX}/{output_folder(plan)}"
    parts = {e["url"].removeprefix(f"s3://{bucket}/") for e in manifest["entries"]}
    expected = parts | {f"{folder_key}/{a}" for a in ARTIFACTS}
    assert _bucket_keys(s3_client, bucket) == expected
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_sqlite_plan_to_s3(sqlite_url, s3_bucket, s3_client, tmp_path):
    keys = sparse_keys(3000, seed=13)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=250, file_size=30_000, use_cache=False)
    assert len(plan.files) > 2

    report = execute_plan(plan, f"s3://{s3_bucket}/{PREFIX}", source_url=sqlite_url)

    assert report.status == "done" and report.rows == len(keys)
    assert report.manifest == f"s3://{s3_bucket}/{PREFIX}/{output_folder(plan)}/manifest.json"
    rows, manifest = _read_back(s3_client, s3_bucket, plan, tmp_path, "id, v, x")
    assert [r[0] for r in rows] == sorted(keys)  # every row exactly once
    assert all(r[1] == f"v{r[0] % 997}" and r[2] == pytest.approx(r[0] / 7) for r in rows)
    assert len(manifest["entries"]) == report.files
    _assert_nothing_stray(s3_client, s3_bucket, plan, manifest)
    copy_sql = s3_client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{output_folder(plan)}/copy.sql")["Body"].read()
    assert report.manifest in copy_sql.decode()


def test_mysql_plan_to_s3_with_workers(mysql_engine, mysql_url, mysql_table, s3_bucket, s3_client, tmp_path):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(2500, seed=17)
    fill_mysql(mysql_engine, name, keys)
    plan = make_plan(mysql_url, name, rows_per_query=300, file_size=40_000, use_cache=False)

    report = execute_plan(plan, f"s3://{s3_bucket}/{PREFIX}", source_url=mysql_url, workers=2)

    assert report.status == "done" and report.rows == len(keys)
    got, manifest = _read_back(s3_client, s3_bucket, plan, tmp_path, "id, v, CAST(n AS VARCHAR), b")
    with mysql_engine.connect() as conn:
        want = conn.exec_driver_sql(f"SELECT id, v, CAST(n AS CHAR), b FROM {name} ORDER BY id").all()
    assert [(r[0], r[1], r[2], bytes(r[3])) for r in got] == [(w[0], w[1], w[2], bytes(w[3])) for w in want]
    _assert_nothing_stray(s3_client, s3_bucket, plan, manifest)


def test_run_through_throttling_s3(sqlite_url, s3_bucket, s3_client, faulty_s3, monkeypatch, tmp_path):
    """Every 3rd PutObject answered 503 SlowDown / every 5th dropped: botocore retries, output is exact."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty_s3.url)
    faulty_s3.fail("PutObject", "503", every=3)
    faulty_s3.fail("PutObject", "drop", every=5)
    keys = sparse_keys(1500, seed=19)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=400, file_size=40_000, use_cache=False)
    assert len(plan.files) >= 2

    report = execute_plan(plan, f"s3://{s3_bucket}/{PREFIX}", source_url=sqlite_url)

    assert report.status == "done"
    assert faulty_s3.log.count("PutObject", "503") >= 1 and faulty_s3.log.count("PutObject", "drop") >= 1
    rows, manifest = _read_back(s3_client, s3_bucket, plan, tmp_path, "id")
    assert [r[0] for r in rows] == sorted(keys)
    _assert_nothing_stray(s3_client, s3_bucket, plan, manifest)


def test_run_against_dead_s3_fails_in_one_line_and_leaves_nothing(sqlite_url, s3_bucket, s3_client, faulty_s3,
                                                                   monkeypatch):
    from sparsesync.errors import DestinationError

    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty_s3.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # the standard setting; keeps the backoff short
    faulty_s3.fail("*", "500")
    make_sqlite_table(sqlite_url, sparse_keys(300, seed=23))
    plan = make_plan(sqlite_url, "t", rows_per_query=100, file_size=20_000, use_cache=False)
    with pytest.raises(DestinationError) as info:
        execute_plan(plan, f"s3://{s3_bucket}/{PREFIX}", source_url=sqlite_url)
    line = info.value.one_line()
    assert "\n" not in line and s3_bucket in line and "InternalError" in line
    assert _bucket_keys(s3_client, s3_bucket) == set()
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
