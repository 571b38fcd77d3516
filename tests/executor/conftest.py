"""S3 fixtures: a real moto server on loopback, a fresh bucket per test, a failing proxy in front.

``s3_server`` (session) → moto's endpoint URL. ``s3_bucket`` → a fresh bucket's name, with the standard
AWS environment pointed at moto for the test (``AWS_ENDPOINT_URL``, test credentials, us-east-1, no
profile/config files, no instance metadata lookups). ``faulty_s3`` → a started :class:`FaultProxy`
in front of moto (``str(faulty_s3)`` / ``faulty_s3.url`` is its URL; ``faulty_s3.fail(...)`` adds
fault rules); it stops after the test. ``s3_client`` → a boto3 client talking to moto directly, for
checking what really is in the bucket.
"""

from __future__ import annotations

import uuid

import pytest

from tests.s3server import FaultProxy, MotoServer


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of moto's standalone S3 server on 127.0.0.1 (one per test session)."""
    try:
        server = MotoServer().start()
    except Exception as exc:  # noqa: BLE001 - any failure means "no S3 server"
        pytest.fail(f"cannot start moto's S3 server: {exc}")
    yield server.url
    server.stop()


def _direct_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint, config=Config(retries={"mode": "standard", "max_attempts": 3}))


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """Standard AWS settings pointing at moto, isolated from any real AWS configuration."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # No files from the user's home, and never the instance-metadata address (not loopback).
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


@pytest.fixture(scope="session")
def s3_client(s3_server):
    """A boto3 client talking to moto directly (bypassing any fault proxy); one per session (clients are slow to build)."""
    return _direct_client(s3_server)


@pytest.fixture
def s3_bucket(s3_env, s3_client):
    """A fresh, uniquely named bucket on moto; emptied and deleted after the test."""
    name = f"sps-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    try:
        for page in s3_client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for u in page.get("Uploads", []):
                s3_client.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
            if page.get("Contents"):
                s3_client.delete_objects(
                    Bucket=name, Delete={"Objects": [{"Key": o["Key"]} for o in page["Contents"]], "Quiet": True}
                )
        s3_client.delete_bucket(Bucket=name)
    except Exception:  # noqa: BLE001 - cleanup of a throwaway in-memory bucket is best effort
        pass


@pytest.fixture
def faulty_s3(s3_server):
    """A started FaultProxy in front of moto; stopped after the test (and by itself after 10 min)."""
    proxy = FaultProxy(s3_server, max_lifetime_s=600).start()
    yield proxy
    proxy.stop()
