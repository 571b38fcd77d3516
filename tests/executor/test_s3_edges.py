"""Issue 17, finding 4(a)/(b): S3 edges that used to end in a traceback.

(a) Two runs on one host (shards started together) sweep the same dead process's staging directory: the
    one that comes second finds it (partly) gone and must carry on, not raise FileNotFoundError.
(b) S3 unreachable, or no credentials: the lock (the first S3 call of a run) gives the one line and exit 8
    the sink gives, not a botocore traceback.
"""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from sparsesync.errors import DestinationError, TransientDestinationError
from sparsesync.executor.lock import S3Lock, destination_lock
from sparsesync.executor.s3 import S3Sink
from sparsesync.executor.sink import STAGING_MARK
from sparsesync.planner.api import make_plan
from tests.executor.test_run import make_sqlite_table, sparse_keys
from tests.s3server import free_port

pytestmark = pytest.mark.s3

DEAD = "sparsesync-staging-999999999-abcd1234"  # a pid that cannot exist: a crashed run's directory


def _dead_staging(base, bucket: str) -> list:
    files = []
    for rel in ("exp/t/plan/part-00001.parquet.ab12cd34", "exp/t/plan/sub/part-00002.parquet.cd34ef56"):
        path = base / DEAD / bucket / (rel + STAGING_MARK)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"old")
        files.append(path)
    return files


@pytest.mark.parametrize("when", ["root", "subfolder"])
def test_two_sweeps_of_one_dead_staging_dir_both_succeed(s3_bucket, tmp_path, monkeypatch, when):
    """The second sweep runs *inside* the first one, just before the first lists a folder the second removes:
    deterministic, no timing. Before the fix the first raised FileNotFoundError from Path.rglob."""
    files = _dead_staging(tmp_path, s3_bucket)
    first = S3Sink(s3_bucket, "exp", staging_dir=tmp_path)
    second = S3Sink(s3_bucket, "exp", staging_dir=tmp_path)
    target = tmp_path / DEAD / s3_bucket / ("exp/t/plan" if when == "root" else "exp/t/plan/sub")
    real_scandir = os.scandir
    swept: list[int] = []

    def scandir(path=".", *a, **kw):
        # the first sweep is about to list ``target``: the other run removes the whole dead directory now
        if not swept and os.fspath(path).rstrip("/") == str(target):
            swept.append(0)  # once (the other sweep lists it too)
            swept[0] = second.cleanup_staging("t/plan")
        return real_scandir(path, *a, **kw)

    monkeypatch.setattr(os, "scandir", scandir)
    removed = first.cleanup_staging("t/plan")
    monkeypatch.setattr(os, "scandir", real_scandir)

    assert swept, "the hook never ran: the sweep no longer lists the dead directory"
    assert not any(f.exists() for f in files) and not (tmp_path / DEAD).exists()
    assert removed + swept[0] >= len(files)  # every staged file removed once, by one of the two
    assert first.cleanup_staging("t/plan") == 0 and second.cleanup_staging("t/plan") == 0


# ---------------------------------------------------------------------------------------------- (b)
def _unreachable(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


def _no_credentials(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")


@pytest.mark.parametrize("broken,expect", [(_unreachable, "unreachable"), (_no_credentials, "no AWS credentials")])
def test_lock_on_broken_s3_is_a_destination_error(s3_bucket, monkeypatch, broken, expect):
    broken(monkeypatch)
    sink = S3Sink(s3_bucket, "exp", max_attempts=1, connect_timeout=2)
    lock = destination_lock(sink, "t/p.lock")
    with pytest.raises(DestinationError) as err:
        lock.acquire()
    line = err.value.one_line()
    assert expect in line and f"s3://{s3_bucket}/exp/t/p.lock" in line and "\n" not in line
    assert not isinstance(err.value, TransientDestinationError)
    lock.release()  # nothing held: no call, no error
    # the lock's own default mapping (no sink) says the same
    bare = S3Lock(sink.client, s3_bucket, "exp/t/p.lock")
    with pytest.raises(DestinationError, match=expect):
        bare.acquire()


@pytest.fixture(scope="module")
def app():
    from sparsesync.cli import _register, app

    _register()
    return app


@pytest.mark.parametrize("broken,expect", [(_unreachable, "unreachable"), (_no_credentials, "no AWS credentials")])
def test_execute_to_broken_s3_is_one_line_and_exit_8(app, s3_bucket, sqlite_url, tmp_path, monkeypatch, broken,
                                                     expect):
    monkeypatch.delenv("SPARSESYNC_SOURCE_URL", raising=False)
    make_sqlite_table(sqlite_url, sparse_keys(200, seed=5))
    path = make_plan(sqlite_url, "t", rows_per_query=100, file_size=10_000, use_cache=False).save(tmp_path / "p.json")
    broken(monkeypatch)
    for cmd in ("execute", "verify"):
        res = CliRunner().invoke(app, [cmd, str(path), "--dest", f"s3://{s3_bucket}/exp", "--source", sqlite_url])
        assert res.exit_code == 8, (cmd, res.output)
        assert "Traceback" not in res.output and res.stderr.count("\n") == 1 and expect in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------- 12 (verify)
def test_verify_closes_the_s3_sink_it_opens(s3_bucket, sqlite_url, monkeypatch):
    from sparsesync.executor.run import execute_plan
    from sparsesync.executor.verify import verify_output

    make_sqlite_table(sqlite_url, sparse_keys(200, seed=9))
    plan = make_plan(sqlite_url, "t", rows_per_query=100, file_size=10_000, use_cache=False)
    dest = f"s3://{s3_bucket}/exp"
    execute_plan(plan, dest, source_url=sqlite_url)
    opened, closed = [], []
    real_init, real_close = S3Sink.__init__, S3Sink.close
    monkeypatch.setattr(S3Sink, "__init__", lambda self, *a, **kw: (opened.append(self), real_init(self, *a, **kw))[1])
    monkeypatch.setattr(S3Sink, "close", lambda self: (closed.append(self), real_close(self))[1])
    assert verify_output(plan, dest, source_url=sqlite_url).ok
    assert len(opened) == 1 and closed == opened
    with pytest.raises(Exception):  # a failing verify closes it too
        verify_output(plan, f"s3://{s3_bucket}/nothing-here", source_url=sqlite_url)
    assert len(opened) == 2 and closed == opened
    sink = S3Sink(s3_bucket, "exp")  # a sink the caller passes stays open
    closed.clear()
    assert verify_output(plan, sink, source_url=sqlite_url).ok and closed == []
    sink.close()
