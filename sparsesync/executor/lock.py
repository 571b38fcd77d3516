"""One writer per destination path: a lock next to what a run writes (a file on disk, an object on S3).

``execute`` takes it per plan and destination (``<dest>/<table>/<plan_id>.lock``); other features may
take it for any other relative path of a sink (e.g. per table). A second taker is refused with a
:class:`LockedError` naming the holder (pid, host, start time, last refresh).

* **Local** (:class:`FileLock`): ``fcntl.flock`` on the lock file. The kernel drops the lock when its
  process dies (even ``kill -9``), so a dead owner never blocks anyone and no timeout is needed; the
  file's content (pid, host, start time) only names the holder. The file is removed on release.
* **S3** (:class:`S3Lock`): an object created with a conditional put (``If-None-Match: *``; atomic on
  S3 since 2024), then read back and compared (stores that ignore the header, or answer two racing
  puts both with success, are caught there). The holder rewrites it every ``refresh_s`` with
  ``If-Match`` on its own ETag; one that has not been refreshed for ``stale_after_s`` (ages measured
  on S3's clock), or whose owner is a dead process on this host, is taken over by a put with
  ``If-Match`` on the stale ETag, so two takers cannot both win. A holder whose refresh finds another
  owner has lost the lock: :meth:`check` raises and the run stops before writing its manifest.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

from sparsesync.errors import DestinationError

DEFAULT_STALE_AFTER_S = 600.0


class LockedError(DestinationError):
    """Another run holds the lock (or took it over): its holder is named in the message."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def owner_info(purpose: str) -> dict:
    """Who takes a lock: a fresh token plus pid, host, process start and wall-clock start time."""
    pid = os.getpid()
    return {"owner": uuid.uuid4().hex, "purpose": purpose, "pid": pid, "host": socket.gethostname(),
            "pid_start": _process_start(pid), "started_at": _now_iso()}


def describe_holder(info: dict | None, age_s: float | None = None) -> str:
    """``pid 123 on host h (execute plan p), started …, refreshed 4 s ago`` — never more than the lock holds."""
    if not info:
        return "an unknown holder (the lock is being written)"
    text = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    if info.get("purpose"):
        text += f" ({info['purpose']})"
    text += f", started {info.get('started_at', '?')}"
    if age_s is not None:
        text += f", refreshed {age_s:.0f} s ago"
    return text


def owner_is_dead(info: dict | None) -> bool:
    """True only when the holder ran on this host and that process is gone (or its pid was reused)."""
    if not info or info.get("host") != socket.gethostname():
        return False
    try:
        pid = int(info.get("pid"))
    except (TypeError, ValueError):
        return False
    if not pid_alive(pid):
        return True
    start = info.get("pid_start")
    return start is not None and _process_start(pid) not in (None, start)


class FileLock:
    """An ``flock``-ed file; see the module docstring."""

    def __init__(self, path: str | os.PathLike, *, purpose: str = "sparsesync") -> None:
        self.path = Path(path)
        self.purpose = purpose
        self.info: dict | None = None
        self._fd: int | None = None
        self._made: list[Path] = []  # folders this lock created, removed again on release when empty

    def describe(self) -> str:
        return str(self.path)

    def acquire(self) -> "FileLock":
        """Take the lock or raise :class:`LockedError` naming the holder."""
        import fcntl

        self._made = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot create {self.path.parent}: {exc.strerror}", file=str(self.path)) from exc
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise DestinationError(f"cannot open lock file: {exc.strerror}", file=str(self.path)) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._held_error(self._read_holder()) from None
            except OSError as exc:  # e.g. a network filesystem without flock
                os.close(fd)
                raise DestinationError(f"cannot lock {self.path}: {exc.strerror}",
                                       hint="write to a local filesystem that supports flock") from exc
            # A holder releasing unlinks the file before unlocking: make sure we hold the file the path
            # names now, not an unlinked one (else two runs could each hold "the" lock).
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.info = owner_info(self.purpose)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self.info).encode())
            os.fsync(fd)
            self._fd = fd
            return self
        raise LockedError(f"lock {self.path} keeps changing hands", hint="another run is starting; try again")

    def _read_holder(self) -> dict | None:
        for _ in range(10):  # the holder writes its details right after locking: give it a moment
            try:
                data = self.path.read_bytes()
                if data:
                    return json.loads(data)
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        return None

    def _held_error(self, info: dict | None) -> LockedError:
        return LockedError(
            f"another run holds {self.path}: {describe_holder(info)}",
            hint="wait for it to finish (the lock goes when its process ends)",
        )

    def check(self) -> None:
        """Raise :class:`LockedError` if the lock file was removed or replaced under us."""
        if self._fd is None:
            raise LockedError(f"lock {self.path} is not held")
        try:
            ok = os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except FileNotFoundError:
            ok = False
        if not ok:
            raise LockedError(f"lock file {self.path} was removed or replaced while this run held it",
                              hint="make sure one run at a time writes this destination; run again to resume")

    def release(self) -> None:
        """Remove the file (if it is still ours), then unlock."""
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        for folder in self._made:  # folders created for the lock alone (e.g. a run refused before writing)
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _boto_errors():
    from .s3 import boto_errors  # boto3 only when an S3 lock is used

    return boto_errors()


def _s3_error(exc, action, bucket, key):
    from .s3 import s3_error

    return s3_error(exc, action, bucket, key)


_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Lock:
    """A lock object in S3; see the module docstring. ``error`` maps boto errors to DestinationError."""

    def __init__(self, client, bucket: str, key: str, *, purpose: str = "sparsesync",
                 stale_after_s: float = DEFAULT_STALE_AFTER_S, refresh_s: float | None = None, error=None) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        self.client, self.bucket, self.key = client, bucket, key
        self.purpose = purpose
        self.stale_after_s = stale_after_s
        self.refresh_s = refresh_s if refresh_s is not None else stale_after_s / 4
        self._error = error or (lambda exc, action, key: _s3_error(exc, action, bucket, key))
        self.info: dict | None = None
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    # ---- S3 calls -----------------------------------------------------------------------------------------
    @staticmethod
    def _code(exc: BaseException) -> str:
        resp = getattr(exc, "response", None) or {}
        return str(resp.get("Error", {}).get("Code") or resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")

    def _body(self) -> bytes:
        return json.dumps({**self.info, "refreshed_at": _now_iso()}).encode()

    def _put(self, **condition) -> str | None:
        """Put our lock body under ``condition``; the new ETag, or None when the condition failed."""
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                          ContentType="application/json", **condition)
        except _boto_errors() as exc:  # unreachable, no credentials, ...: one line too, not a traceback
            if self._code(exc) in _CONFLICT:
                return None
            if "IfMatch" in condition and self._code(exc) in _MISSING:
                return None  # our lock object was deleted under us (gc of a stale lock, a taker): lost, not unreachable
            raise self._error(exc, "write lock", self.key) from None
        return resp["ETag"]

    def _read(self) -> tuple[dict | None, str | None, float | None]:
        """(holder, ETag, age in seconds on S3's clock) of the current lock object, or Nones when absent."""
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key)
            data = resp["Body"].read()
        except _boto_errors() as exc:
            if self._code(exc) in _MISSING:
                return None, None, None
            raise self._error(exc, "read lock", self.key) from None
        try:
            info = json.loads(data)
        except ValueError:
            info = {}
        age = None
        server_now = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if server_now and resp.get("LastModified") is not None:
            age = max(0.0, (parsedate_to_datetime(server_now) - resp["LastModified"]).total_seconds())
        return info, resp["ETag"], age

    # ---- protocol -------------------------------------------------------------------------------------------
    def acquire(self) -> "S3Lock":
        """Take the lock (or a stale one over) or raise :class:`LockedError` naming the holder."""
        self.info = owner_info(self.purpose)
        etag = self._put(IfNoneMatch="*")
        holder = age = None
        if etag is None:
            holder, held_etag, age = self._read()
            if held_etag is None:  # released between our put and our read: try once more
                etag = self._put(IfNoneMatch="*")
            elif (age is not None and age > self.stale_after_s) or owner_is_dead(holder):
                etag = self._put(IfMatch=held_etag)  # only one taker can replace that exact object
        if etag is not None:
            # Read back: a store that ignored the condition, or let two racing puts succeed, shows the
            # last writer here; only that one holds the lock.
            now, now_etag, _ = self._read()
            if now is None or now.get("owner") != self.info["owner"]:
                holder, age, etag = now, None, None
            else:
                etag = now_etag
        if etag is None:
            raise LockedError(
                f"another run holds {self.describe()}: {describe_holder(holder, age)}",
                hint=f"wait for it to finish; a lock not refreshed for {self.stale_after_s:.0f} s is taken over",
            )
        self._etag = etag
        self._stop.clear()
        self._thread = threading.Thread(target=self._refresh_loop, name="sparsesync-lock", daemon=True)
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            with self._mutex:
                if self._etag is None:
                    return
                try:
                    etag = self._put(IfMatch=self._etag)
                except DestinationError:
                    continue  # S3 unreachable for now; the next refresh tries again
                if etag is None:
                    holder, _, age = self._read()
                    self._lost = describe_holder(holder, age)
                    self._etag = None
                    return
                self._etag = etag

    def check(self) -> None:
        """Raise :class:`LockedError` if another run took the lock over."""
        if self._lost is not None or self._etag is None:
            raise LockedError(
                f"lost the lock {self.describe()} to {self._lost or 'nobody (not held)'}",
                hint="this run stopped without finishing; make sure one run at a time writes this destination",
            )

    def release(self) -> None:
        """Stop refreshing and delete the lock object if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._mutex:
            etag, self._etag = self._etag, None
        if etag is None:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
        except _boto_errors():
            pass  # not ours any more, or unreachable: it goes stale by itself

    def __enter__(self) -> "S3Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def destination_lock(sink, relpath: str, *, purpose: str = "sparsesync",
                     stale_after_s: float = DEFAULT_STALE_AFTER_S, refresh_s: float | None = None):
    """A not-yet-taken lock at ``relpath`` of ``sink`` (a LocalSink or an S3Sink); use it as a context manager."""
    from .sink import LocalSink

    if isinstance(sink, LocalSink):
        return FileLock(sink.url(relpath), purpose=purpose)
    from .s3 import S3Sink

    if isinstance(sink, S3Sink):
        return S3Lock(sink.client, sink.bucket, sink.key(relpath), purpose=purpose, stale_after_s=stale_after_s,
                      refresh_s=refresh_s, error=sink._error)
    raise DestinationError(f"cannot lock destination {sink.describe()}: unknown kind {type(sink).__name__}")


__all__ = ["pid_alive", "LockedError", "FileLock", "S3Lock", "destination_lock", "describe_holder", "owner_is_dead",
           "DEFAULT_STALE_AFTER_S"]
