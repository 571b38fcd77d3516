"""executor.lock: one holder per path, a dead or stale holder never blocks, a second taker learns who holds it.

Holders that must die or pause run in their own process (``kill -9`` / ``SIGSTOP``), as in real life.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from sparsesync.executor.lock import FileLock, LockedError, S3Lock, destination_lock
from sparsesync.executor.s3 import S3Sink
from sparsesync.executor.sink import LocalSink

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _holder_process(code: str) -> subprocess.Popen:
    """A Python child running ``code`` (which prints 'held' once it holds the lock)."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT}, cwd=ROOT)
    line = proc.stdout.readline().strip()
    assert line == "held", line
    return proc


def test_file_lock_refuses_a_second_taker_naming_the_holder_and_is_gone_after_release(tmp_path):
    path = tmp_path / "t" / "plan.lock"
    first = FileLock(path, purpose="execute plan p1").acquire()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    with pytest.raises(LockedError) as err:
        FileLock(path).acquire()
    line = err.value.one_line()
    assert f"pid {os.getpid()} on host {socket.gethostname()} (execute plan p1)" in line and "\n" not in line
    assert err.value.exit_code == 8
    first.check()
    first.release()
    assert not path.exists()
    with FileLock(path) as again:
        again.check()
    assert not path.exists()


def test_file_lock_of_a_killed_process_is_free_at_once(tmp_path):
    path = tmp_path / "plan.lock"
    proc = _holder_process(f"""
        import time
        from sparsesync.executor.lock import FileLock
        FileLock({str(path)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)
    try:
        with pytest.raises(LockedError, match=f"pid {proc.pid} on host"):
            FileLock(path).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with FileLock(path) as lock:  # the file is still there, but nobody holds it
            lock.check()
    finally:
        proc.kill()
        proc.wait()


def test_file_lock_removed_under_the_holder_is_reported_lost(tmp_path):
    path = tmp_path / "plan.lock"
    lock = FileLock(path).acquire()
    path.unlink()
    with pytest.raises(LockedError, match="removed or replaced"):
        lock.check()
    lock.release()


@pytest.mark.s3
def test_s3_lock_refuses_a_second_taker_and_is_deleted_on_release(s3_bucket, s3_client):
    sink = S3Sink(s3_bucket, "exports")
    first = destination_lock(sink, "t/p1.lock", purpose="execute plan p1").acquire()
    assert s3_client.get_object(Bucket=s3_bucket, Key="exports/t/p1.lock")["Body"].read()
    with pytest.raises(LockedError) as err:
        destination_lock(sink, "t/p1.lock").acquire()
    assert f"pid {os.getpid()} on host {socket.gethostname()} (execute plan p1)" in err.value.one_line()
    assert "s3://" in err.value.one_line()
    first.check()
    first.release()
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="exports/t/")
    with destination_lock(sink, "t/p1.lock") as again:
        again.check()


@pytest.mark.s3
def test_s3_lock_of_a_killed_process_on_this_host_is_taken_over_at_once(s3_bucket):
    proc = _holder_process(f"""
        import time
        from sparsesync.executor.lock import destination_lock
        from sparsesync.executor.s3 import S3Sink
        destination_lock(S3Sink({s3_bucket!r}), "t.lock", stale_after_s=3600).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)
    try:
        with pytest.raises(LockedError, match=f"pid {proc.pid} on host"):
            destination_lock(S3Sink(s3_bucket), "t.lock", stale_after_s=3600).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with destination_lock(S3Sink(s3_bucket), "t.lock", stale_after_s=3600) as lock:
            lock.check()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.s3
def test_s3_lock_not_refreshed_goes_stale_and_its_paused_holder_learns_it_lost(s3_bucket):
    """A holder paused (SIGSTOP) past the timeout loses the lock; resumed, its next check fails."""
    proc = _holder_process(f"""
        import sys, time
        from sparsesync.executor.lock import LockedError, destination_lock
        from sparsesync.executor.s3 import S3Sink
        lock = destination_lock(S3Sink({s3_bucket!r}), "t.lock", stale_after_s=2, refresh_s=0.3).acquire()
        print("held", flush=True)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                lock.check()
            except LockedError as exc:
                print("lost:", exc.one_line(), flush=True)
                sys.exit(0)
        sys.exit(1)
    """)
    try:
        with pytest.raises(LockedError):
            destination_lock(S3Sink(s3_bucket), "t.lock", stale_after_s=2).acquire()  # fresh: refused
        proc.send_signal(signal.SIGSTOP)
        time.sleep(4.5)  # > stale_after_s + S3's one-second timestamp resolution
        taker = destination_lock(S3Sink(s3_bucket), "t.lock", stale_after_s=2, refresh_s=0.3).acquire()
        proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "lost the lock" in out and f"pid {os.getpid()}" in out
        taker.check()  # the taker still holds it after the old holder's failed refresh
        taker.release()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


def test_unknown_sink_kind_is_refused(tmp_path):
    class Other(LocalSink.__mro__[1]):  # plain object
        def describe(self):
            return "elsewhere"

    with pytest.raises(Exception, match="cannot lock destination elsewhere"):
        destination_lock(Other(), "x.lock")
    assert isinstance(destination_lock(LocalSink(tmp_path), "x.lock"), FileLock)
    assert S3Lock  # exported


@pytest.mark.s3
def test_s3_lock_deleted_under_its_holder_is_lost_not_unreachable(s3_bucket, s3_client):
    """Someone deletes the lock object (gc of a stale lock, a taker's release): the holder's next refresh
    finds it gone, so its next check fails — before, NoSuchKey on the conditional put counted as 'S3
    unreachable for now', the holder kept going and could commit beside a new holder."""
    lock = destination_lock(S3Sink(s3_bucket), "gone.lock", refresh_s=0.05).acquire()
    try:
        s3_client.delete_object(Bucket=s3_bucket, Key="gone.lock")
        deadline = time.monotonic() + 60  # waits for the refresh thread's verdict, not for a time
        while time.monotonic() < deadline and lock._lost is None and lock._etag is not None:
            time.sleep(0.02)
        with pytest.raises(LockedError, match="lost the lock"):
            lock.check()
    finally:
        lock.release()
