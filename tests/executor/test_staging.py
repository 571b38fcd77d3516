"""Staging is private and never orphaned.

S3 parts are staged in a fresh ``mkdtemp`` directory (0700) under ``$TMPDIR`` or ``--staging DIR``, files
0600; a directory someone else made beforehand is never used or touched. When a deferred finish (commit of
group N) fails after group N+1 was read, N+1's staging goes too.
"""

from __future__ import annotations

import os
import stat

import pytest

from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.executor.s3 import S3Sink
from sparsesync.executor.sink import STAGING_MARK
from sparsesync.planner.api import make_plan
from sparsesync.errors import DestinationError
from tests.executor.test_run import make_sqlite_table, sparse_keys


def _mode(path) -> int | None:
    """Mode bits of ``path``, or None when the writer renamed or removed it while we were walking."""
    try:
        return stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


@pytest.mark.s3
def test_s3_staging_is_a_private_fresh_directory_and_is_removed(sqlite_url, s3_bucket, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(3000, seed=4))
    plan = make_plan(sqlite_url, "t", rows_per_query=250, file_size=30_000, use_cache=False)
    base = tmp_path / "staging"
    base.mkdir()
    # Someone else got there first: the predictable path of the old code, world-writable, another owner.
    squatted = base / f"sparsesync-staging-{os.getpid()}"
    (squatted / s3_bucket).mkdir(parents=True)
    bait = squatted / s3_bucket / f"x{STAGING_MARK}"
    bait.write_bytes(b"not ours")
    os.chmod(squatted, 0o777)
    os.chown(squatted, 65534, 65534)
    seen = []

    def progress(ev):
        if ev.kind == "batch":
            for root, dirs, files in os.walk(base):
                if root == str(base):
                    dirs.remove(squatted.name)  # not ours: looked at below
                # A temp file can be renamed between listing and lstat (the writer runs on): skip those.
                seen.extend(("d", m) for d in dirs if (m := _mode(os.path.join(root, d))) is not None)
                seen.extend(("f", m) for f in files if (m := _mode(os.path.join(root, f))) is not None)

    report = execute_plan(plan, f"s3://{s3_bucket}/exp", source_url=sqlite_url, staging=str(base), progress=progress)
    assert report.rows == 3000
    assert ("d", 0o700) in seen and ("f", 0o600) in seen
    assert {m for kind, m in seen if kind == "d"} == {0o700}
    assert {m for kind, m in seen if kind == "f"} == {0o600}
    # The squatter's directory was neither used nor cleaned; nothing of ours is left.
    assert bait.read_bytes() == b"not ours"
    assert sorted(os.listdir(base)) == [squatted.name]


@pytest.mark.s3
def test_s3_staging_path_creates_the_file_owner_only(s3_bucket, tmp_path):
    with S3Sink(s3_bucket, "p", staging_dir=tmp_path) as sink:
        path = sink.staging_path("t/plan/part-00000.parquet")
        root = sink.staging_root
        assert path.exists() and _mode(path) == 0o600
        assert _mode(root) == 0o700 and root.parent == tmp_path
        assert root.name.startswith(f"sparsesync-staging-{os.getpid()}-")
        other = S3Sink(s3_bucket, "p", staging_dir=tmp_path)
        assert other.staging_root != root  # every sink its own directory
        other.close()
    assert not root.exists()


def test_failed_deferred_finish_leaves_no_staging_of_the_next_group(sqlite_url, tmp_path):
    """Finding 10: group 0's commit fails after group 1 was read; group 1's staging must not stay."""
    make_sqlite_table(sqlite_url, sparse_keys(3000, seed=8))
    plan = make_plan(sqlite_url, "t", rows_per_query=250, file_size=30_000, use_cache=False)
    assert len(plan.files) > 2
    dest = tmp_path / "out"
    folder = dest / output_folder(plan)
    # A directory where part 0 must go: its commit (a rename) fails, deterministically.
    (folder / plan.files[0].name).mkdir(parents=True)
    with pytest.raises(DestinationError, match="cannot commit"):
        execute_plan(plan, str(dest), source_url=sqlite_url)
    assert [p for p in dest.rglob(f"*{STAGING_MARK}")] == []
    assert not (folder / plan.files[1].name).exists()
