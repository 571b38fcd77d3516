"""load and gc against the loopback S3 server (moto), not only a local directory."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from sparsesync.sync.gc import collect_garbage
from sparsesync.sync.load import load_pending

from .dbkit import s3_bucket, s3_client, s3_env, s3_server  # noqa: F401 - fixtures
from .imagekit import Image

pytestmark = pytest.mark.s3


def upload(s3_client, bucket, root, prefix="lake"):
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3_client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())


def test_load_and_gc_on_s3(s3_bucket, s3_client, tmp_path):
    img = Image(tmp_path / "lake")
    img.clock -= timedelta(days=30)
    img.sync({1: "a", 2: "b", 3: "c"}, ["n"])
    first = {p["path"] for p in img.parts if p["path"]}
    img.sync({1: "a", 3: "C", 4: "d"}, [])  # replaces the key part and the NULL-key part
    gone = sorted(f"orders/{p}" for p in first - {p["path"] for p in img.parts})
    assert len(gone) == 2
    upload(s3_client, s3_bucket, tmp_path / "lake")
    dest = f"s3://{s3_bucket}/lake"

    wh = tmp_path / "wh.duckdb"
    res = load_pending(dest, "orders", f"duckdb:///{wh}")
    assert res.from_image == 2 and not res.applied  # a new target is loaded from the image
    assert duckdb.connect(str(wh)).execute("SELECT id, v FROM orders ORDER BY id").fetchall() == [(1, "a"), (3, "C"), (4, "d")]

    [dry] = collect_garbage(dest, keep_s=86400)
    assert sorted(dry.removed) == gone
    [done] = collect_garbage(dest, "orders", keep_s=86400, delete=True)
    assert sorted(done.removed) == gone
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="lake/")["Contents"]}
    assert not {f"lake/{g}" for g in gone} & keys
    assert all(f"lake/orders/{p['path']}" in keys for p in img.parts if p["path"])
