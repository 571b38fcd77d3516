"""Injected S3 faults (throttling, 500s, dropped connections, slow answers) through a real proxy.

The sink talks to the fault proxy (via ``AWS_ENDPOINT_URL``, as a user would configure it); the
checks read moto directly, so they see what really landed in the bucket.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from sparsesync.executor.s3 import MiB, S3Sink
from sparsesync.errors import DestinationError, TransientDestinationError

pytestmark = pytest.mark.s3

REL = "t/plan/part-00000.parquet"


@pytest.fixture
def via_proxy(s3_bucket, faulty_s3, monkeypatch):
    """Point the standard AWS settings at the proxy; returns (bucket, proxy)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty_s3.url)
    return s3_bucket, faulty_s3


def _sink(bucket: str, **kw) -> S3Sink:
    kw.setdefault("max_attempts", 5)
    # 5 MiB parts (S3's minimum) so a 12 MiB file is a 3-part multipart upload.
    return S3Sink(bucket, "exp", multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, **kw)


def _upload(sink: S3Sink, data: bytes, rel: str = REL):
    staging = sink.staging_path(rel)
    staging.write_bytes(data)
    return staging, sink.commit(staging, rel)


def _stored(s3_client, bucket: str, rel: str = REL) -> bytes:
    return s3_client.get_object(Bucket=bucket, Key=f"exp/{rel}")["Body"].read()


def _no_leftovers(s3_client, bucket: str) -> None:
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("action", ["503", "drop", "drop_mid_body"])  # 500: see the multipart test
def test_single_put_is_retried(via_proxy, s3_client, action):
    bucket, proxy = via_proxy
    proxy.fail("PutObject", action, limit=2)
    data = os.urandom(300_000)
    staging, committed = _upload(_sink(bucket), data)

    assert proxy.log.count("PutObject", action) == 2
    assert proxy.log.count("PutObject", "ok") == 1
    assert committed.size == len(data) and not staging.exists()
    assert _stored(s3_client, bucket) == data


@pytest.mark.parametrize("action", ["503", "drop_mid_body"])  # "drop": see the single-PUT tests
def test_multipart_parts_and_complete_are_retried(via_proxy, s3_client, action):
    bucket, proxy = via_proxy
    proxy.fail("UploadPart", action, every=3)  # parts 3, 6, ... of all attempts fail
    proxy.fail("UploadPart", action, limit=1)  # ... and the very first one
    proxy.fail("CreateMultipartUpload", "503", limit=1)
    proxy.fail("CompleteMultipartUpload", "500" if action == "503" else action, limit=1)
    data = os.urandom(12 * MiB + 777)
    _, committed = _upload(_sink(bucket), data)

    assert proxy.log.count("UploadPart", action) >= 2
    assert proxy.log.count("CompleteMultipartUpload", "ok") == 1
    assert proxy.log.count("UploadPart", "ok") == 3
    assert committed.size == len(data)
    stored = _stored(s3_client, bucket)
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert s3_client.head_object(Bucket=bucket, Key=f"exp/{REL}")["ETag"].strip('"').endswith("-3")
    _no_leftovers(s3_client, bucket)


def test_slow_answer_times_out_and_is_retried(via_proxy, s3_client):
    bucket, proxy = via_proxy
    proxy.fail("PutObject", "delay", limit=1, delay_s=3.0)
    data = os.urandom(10_000)
    _, committed = _upload(_sink(bucket, read_timeout=1.0), data)
    assert proxy.log.count("PutObject", "delay") == 1 and committed.size == len(data)
    assert _stored(s3_client, bucket) == data


def test_async_uploads_survive_throttling(via_proxy, s3_client):
    bucket, proxy = via_proxy
    proxy.fail("PutObject", "503", every=2)
    payloads = {f"t/plan/part-{i:05d}.parquet": os.urandom(40_000 + i) for i in range(4)}
    with _sink(bucket, upload_workers=2) as sink:
        futures = []
        for rel, data in payloads.items():
            staging = sink.staging_path(rel)
            staging.write_bytes(data)
            futures.append(sink.commit_async(staging, rel))
        sizes = [f.result(timeout=120).size for f in futures]
    assert sizes == [len(d) for d in payloads.values()]
    for rel, data in payloads.items():
        assert _stored(s3_client, bucket, rel) == data
    assert proxy.log.count("PutObject", "503") >= 2


def test_everything_failing_leaves_nothing_and_says_why(via_proxy, s3_client):
    bucket, proxy = via_proxy
    proxy.fail("*", "503")
    sink = _sink(bucket, max_attempts=2)
    for size in (100_000, 11 * MiB):  # single PUT, then multipart
        staging = sink.staging_path(REL)
        staging.write_bytes(os.urandom(size))
        with pytest.raises(TransientDestinationError) as info:
            sink.commit(staging, REL)
        line = info.value.one_line()
        assert "\n" not in line and f"s3://{bucket}/exp/{REL}" in line and "SlowDown" in line
        assert staging.exists()  # the caller decides: retry later or discard
        sink.discard(staging)
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)
    _no_leftovers(s3_client, bucket)


def test_parts_failing_for_good_abort_the_multipart_upload(via_proxy, s3_client):
    bucket, proxy = via_proxy
    proxy.fail("UploadPart", "drop")
    sink = _sink(bucket, max_attempts=2)
    staging = sink.staging_path(REL)
    staging.write_bytes(os.urandom(11 * MiB))
    with pytest.raises(TransientDestinationError, match="connection failed"):
        sink.commit(staging, REL)
    assert proxy.log.count("CreateMultipartUpload", "ok") == 1  # an upload was started ...
    assert proxy.log.count("AbortMultipartUpload", "ok") >= 1  # ... and aborted
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)
    _no_leftovers(s3_client, bucket)


def test_failed_abort_is_retried_by_the_sink(via_proxy, s3_client):
    """s3transfer's own abort fails too; the sink's follow-up abort must remove the upload."""
    bucket, proxy = via_proxy
    proxy.fail("UploadPart", "500")
    proxy.fail("AbortMultipartUpload", "503", limit=2)  # = max_attempts: s3transfer's abort gives up
    sink = _sink(bucket, max_attempts=2)
    staging = sink.staging_path(REL)
    staging.write_bytes(os.urandom(11 * MiB))
    with pytest.raises(TransientDestinationError, match="InternalError"):
        sink.commit(staging, REL)
    assert proxy.log.count("AbortMultipartUpload", "503") == 2
    assert proxy.log.count("AbortMultipartUpload", "ok") == 1
    _no_leftovers(s3_client, bucket)


def test_upload_stranded_by_an_outage_is_removed_by_cleanup(via_proxy, s3_client):
    """If S3 is gone before anything can be aborted, the next run's cleanup_staging aborts it."""
    bucket, proxy = via_proxy
    proxy.fail("UploadPart", "500")
    proxy.fail("AbortMultipartUpload", "503")
    proxy.fail("ListMultipartUploads", "503", limit=2)
    sink = _sink(bucket, max_attempts=2)
    staging = sink.staging_path(REL)
    staging.write_bytes(os.urandom(11 * MiB))
    with pytest.raises(DestinationError):
        sink.commit(staging, REL)
    assert len(s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    proxy.clear()
    assert sink.cleanup_staging("t/plan") == 2  # the stranded upload and the staged file
    _no_leftovers(s3_client, bucket)
    assert not staging.exists()
