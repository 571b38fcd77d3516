"""S3Sink against a real (moto, loopback) S3 server: commit, list, put/get, cleanup, clear errors."""

from __future__ import annotations

import os
import uuid

import pytest

from sparsesync.executor.s3 import MiB, S3Sink, parse_s3_url
from sparsesync.executor.sink import STAGING_MARK
from sparsesync.errors import DestinationError, TransientDestinationError, UsageError
from tests.s3server import free_port

pytestmark = pytest.mark.s3


def _stage(sink: S3Sink, rel: str, data: bytes):
    path = sink.staging_path(rel)
    path.write_bytes(data)
    return path


def _small_multipart_sink(bucket: str, prefix: str, **kw) -> S3Sink:
    # 5 MiB is S3's (and s3transfer's) smallest part; anything larger than that goes multipart here.
    return S3Sink(bucket, prefix, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_attempts=3, **kw)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("s3://my-bucket/exports/orders", ("my-bucket", "exports/orders")),
        ("s3://my-bucket/exports/orders/", ("my-bucket", "exports/orders")),
        ("s3://my.bucket.1", ("my.bucket.1", "")),
        ("s3://abc/", ("abc", "")),
    ],
)
def test_parse_s3_url_accepts(url, expected):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://bucket/x",
        "s3://",
        "s3://ab/x",
        "s3://Upper/x",
        "s3://key:secret@bucket/x",
        "s3://bucket:9000/x",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "s3://bucket/x?versionId=1",
        "s3://-bucket/x",
    ],
)
def test_parse_s3_url_refuses(url):
    with pytest.raises(UsageError) as info:
        parse_s3_url(url)
    line = info.value.one_line()
    assert "\n" not in line and "secret" not in line


def test_endpoint_comes_from_standard_aws_settings(s3_bucket, s3_server):
    sink = S3Sink(s3_bucket, "p")
    assert sink.client.meta.endpoint_url == s3_server
    assert s3_server in sink.describe() and f"s3://{s3_bucket}/p" in sink.describe()


def test_retry_settings_come_from_standard_aws_settings(s3_bucket, monkeypatch):
    assert S3Sink(s3_bucket).client.meta.config.retries == {"mode": "standard", "total_max_attempts": 8}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    assert S3Sink(s3_bucket).client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    explicit = S3Sink(s3_bucket, max_attempts=5, retry_mode="standard")
    assert explicit.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}


def test_commit_small_file_is_visible_with_its_size(s3_bucket, s3_client):
    sink = S3Sink(s3_bucket, "exports/t1")
    data = os.urandom(123_457)
    staging = _stage(sink, "t1/plan/part-00000.parquet", data)
    assert str(staging).startswith(str(sink.staging_root)) and STAGING_MARK in staging.name
    assert not sink.exists("t1/plan/part-00000.parquet")

    committed = sink.commit(staging, "t1/plan/part-00000.parquet")

    assert committed.url == f"s3://{s3_bucket}/exports/t1/t1/plan/part-00000.parquet"
    assert committed.size == len(data)
    assert not staging.exists()
    body = s3_client.get_object(Bucket=s3_bucket, Key="exports/t1/t1/plan/part-00000.parquet")["Body"].read()
    assert body == data
    assert sink.size("t1/plan/part-00000.parquet") == len(data)
    assert sink.get_bytes("t1/plan/part-00000.parquet") == data
    sink.close()


def test_commit_large_file_goes_multipart_and_leaves_no_upload(s3_bucket, s3_client):
    sink = _small_multipart_sink(s3_bucket, "big")
    data = os.urandom(12 * MiB + 12_345)
    committed = sink.commit(_stage(sink, "part-00000.parquet", data), "part-00000.parquet")

    assert committed.size == len(data)
    head = s3_client.head_object(Bucket=s3_bucket, Key="big/part-00000.parquet")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart ETag: 3 parts of 5+5+2 MiB
    assert s3_client.get_object(Bucket=s3_bucket, Key="big/part-00000.parquet")["Body"].read() == data
    assert "Uploads" not in s3_client.list_multipart_uploads(Bucket=s3_bucket)
    sink.close()


def test_commit_async_overlaps_and_returns_committed(s3_bucket, s3_client, tmp_path):
    # Its own staging dir: other sinks of this process share the default per-pid one.
    with S3Sink(s3_bucket, "async", upload_workers=2, staging_dir=tmp_path) as sink:
        payloads = {f"t/part-{i:05d}.parquet": os.urandom(50_000 + i) for i in range(5)}
        futures = {rel: sink.commit_async(_stage(sink, rel, data), rel) for rel, data in payloads.items()}
        results = {rel: f.result(timeout=60) for rel, f in futures.items()}
    for rel, data in payloads.items():
        assert results[rel].size == len(data)
        assert results[rel].url == f"s3://{s3_bucket}/async/{rel}"
        assert s3_client.get_object(Bucket=s3_bucket, Key=f"async/{rel}")["Body"].read() == data
    assert not sink.staging_root.exists()  # close() removed the empty per-process staging dir


def test_list_is_relative_sorted_and_directory_scoped(s3_bucket, s3_client):
    sink = S3Sink(s3_bucket, "root")
    for rel in ["t/p/part-00001.parquet", "t/p/part-00000.parquet", "t/p/manifest.json", "t/p2/part-00000.parquet"]:
        sink.put_bytes(rel, rel.encode())
    s3_client.put_object(Bucket=s3_bucket, Key="elsewhere/t/p/x", Body=b"x")  # outside the sink's prefix

    assert sink.list("t/p") == ["t/p/manifest.json", "t/p/part-00000.parquet", "t/p/part-00001.parquet"]
    assert sink.list("t/p/") == sink.list("t/p")
    assert sink.list("t") == sorted(["t/p/manifest.json", "t/p/part-00000.parquet", "t/p/part-00001.parquet",
                                     "t/p2/part-00000.parquet"])
    assert len(sink.list("")) == 4
    assert sink.list("nothing") == []


def test_list_paginates(s3_bucket):
    sink = S3Sink(s3_bucket, "many")
    sink.list_page_size = 10  # S3 pages at 1000 keys; a small page exercises the same continuation path
    n = 37
    for i in range(n):
        sink.put_bytes(f"d/o-{i:05d}", b".")
    listed = sink.list("d")
    assert listed == [f"d/o-{i:05d}" for i in range(n)]


def test_put_get_delete_and_missing(s3_bucket):
    sink = S3Sink(s3_bucket, "")
    committed = sink.put_bytes("t/manifest.json", b'{"entries": []}')
    assert committed.url == f"s3://{s3_bucket}/t/manifest.json" and committed.size == 15
    assert sink.get_bytes("t/manifest.json") == b'{"entries": []}'
    assert sink.exists("t/manifest.json") and sink.size("t/manifest.json") == 15
    sink.delete("t/manifest.json")
    assert not sink.exists("t/manifest.json")
    assert sink.get_bytes("t/manifest.json") is None and sink.size("t/manifest.json") is None
    sink.delete("t/manifest.json")  # deleting twice is fine


def test_paths_escaping_the_prefix_are_refused(s3_bucket):
    sink = S3Sink(s3_bucket, "p")
    for bad in ["../x", "a/../../x", "a//b", ""]:
        with pytest.raises(DestinationError):
            sink.url(bad)


def test_discard_removes_staging(s3_bucket):
    sink = S3Sink(s3_bucket, "p")
    staging = _stage(sink, "x.parquet", b"abc")
    sink.discard(staging)
    assert not staging.exists() and not sink.exists("x.parquet")


def test_cleanup_aborts_incomplete_uploads_and_removes_staging(s3_bucket, s3_client, tmp_path):
    sink = S3Sink(s3_bucket, "exp", staging_dir=tmp_path)
    # A crashed run: an upload started under our prefix with one part sent, and a staged file left.
    mine = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="exp/t/plan/part-00003.parquet")["UploadId"]
    s3_client.upload_part(Bucket=s3_bucket, Key="exp/t/plan/part-00003.parquet", UploadId=mine, PartNumber=1,
                          Body=os.urandom(1000))
    other = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="exp/t/other/part-00000.parquet")["UploadId"]
    staged = _stage(sink, "t/plan/part-00004.parquet", b"half written")
    # ... and a dead process's staging dir (pid that cannot exist).
    dead = tmp_path / "sparsesync-staging-999999999" / s3_bucket / "exp/t/plan/part-00001.parquet.ab12cd34"
    dead = dead.with_name(dead.name + STAGING_MARK)
    dead.parent.mkdir(parents=True)
    dead.write_bytes(b"old")

    assert sink.incomplete_uploads("t/plan") == [("exp/t/plan/part-00003.parquet", mine)]
    removed = sink.cleanup_staging("t/plan")

    assert removed == 3
    assert not staged.exists() and not dead.exists()
    left = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in left] == [("exp/t/other/part-00000.parquet", other)]
    assert not sink.exists("t/plan/part-00003.parquet")
    assert sink.cleanup_staging("t/plan") == 0


def test_missing_bucket_is_one_clear_line(s3_env):
    sink = S3Sink(f"sps-missing-{uuid.uuid4().hex[:8]}", "p", max_attempts=2)
    staging = _stage(sink, "part.parquet", b"x" * 100)
    with pytest.raises(DestinationError) as info:
        sink.commit(staging, "part.parquet")
    line = info.value.one_line()
    assert "does not exist" in line and sink.bucket in line and "\n" not in line
    assert not isinstance(info.value, TransientDestinationError)
    assert staging.exists()  # kept for the caller to retry or discard
    with pytest.raises(DestinationError, match="does not exist"):
        sink.list("")


def test_unreachable_endpoint_is_one_clear_line(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    sink = S3Sink("some-bucket", "p", max_attempts=2, connect_timeout=2)
    with pytest.raises(DestinationError) as info:
        sink.put_bytes("m.json", b"{}")
    line = info.value.one_line()
    assert "unreachable" in line and "AWS_ENDPOINT_URL" in line and "s3://some-bucket/p/m.json" in line


def test_no_credentials_is_one_clear_line(s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    sink = S3Sink(s3_bucket, "p", max_attempts=1)
    with pytest.raises(DestinationError, match="no AWS credentials") as info:
        sink.put_bytes("m.json", b"{}")
    assert "AWS_PROFILE" in info.value.one_line()


def test_access_denied_names_key_and_hides_secret(s3_bucket, faulty_s3, monkeypatch):
    secret = "S3cr3t-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty_s3.url)
    faulty_s3.fail("*", "403")
    sink = S3Sink(s3_bucket, "p", max_attempts=2)
    staging = _stage(sink, "part-00000.parquet", b"data")
    with pytest.raises(DestinationError) as info:
        sink.commit(staging, "part-00000.parquet")
    line = info.value.one_line()
    assert "access denied" in line and f"s3://{s3_bucket}/p/part-00000.parquet" in line
    assert secret not in line and "testing" not in line


def test_rejected_credentials_is_one_clear_line(s3_bucket, faulty_s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty_s3.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    faulty_s3.fail("*", "bad_key")
    sink = S3Sink(s3_bucket, "p", max_attempts=2)
    with pytest.raises(DestinationError) as info:
        sink.put_bytes("m.json", b"{}")
    line = info.value.one_line()
    assert "credentials rejected (InvalidAccessKeyId)" in line and f"s3://{s3_bucket}/p/m.json" in line
    assert "AKIAWRONG" not in line and not isinstance(info.value, TransientDestinationError)
