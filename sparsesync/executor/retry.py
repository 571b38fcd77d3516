"""Transient source faults (lost connection, deadlock, lock wait timeout, connectorx I/O errors) retried.

A file group is read by one *attempt*; when a range fails with a :class:`TransientSourceError`, the
attempt's output is thrown away whole (its writer aborted: staging discarded, rolled parts deleted), the
broken session is closed, and after an exponential backoff with full jitter the group is read again on
a new session. Redoing the group rather than the range is what keeps every row exactly once: rows of
the failed range may already sit in the open Parquet part, and a Parquet file cannot be cut back.
Failures are counted **per range** against ``retries``; a range that keeps failing stops the run, and
permanent errors (anything not transient) stop it at once.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from sparsesync.errors import TransientSourceError, UsageError
from sparsesync.logs import get_logger

T = TypeVar("T")
_LOG = get_logger("sparsesync.retry")
OPENING = -1  # pseudo range index: the fault came while opening a session, before any range


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` per range; the n-th wait is uniform in ``[0, min(cap_s, base_s · 2^(n-1))]``."""

    retries: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise UsageError(f"--retries must be 0 or more, got {self.retries}")
        if self.base_s < 0 or self.cap_s < 0:
            raise UsageError("retry delays must be 0 or more")

    def delay(self, failure: int) -> float:
        """Seconds to wait after the ``failure``-th fault of a range (full jitter: waiters spread out)."""
        return random.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (failure - 1)))


@dataclass
class RetryStats:
    """Retries of one run, per range index (``-1`` for faults while opening a session); thread-safe."""

    by_range: dict[int, int] = field(default_factory=dict)
    snapshots: int = 0  # sessions a serial run read through (more than one: not one consistent snapshot)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, index: int) -> None:
        with self._lock:
            self.by_range[index] = self.by_range.get(index, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_range.values())


class SessionHolder:
    """A reader session opened on demand and dropped after a fault, so the next attempt gets a new one.

    ``opened`` counts sessions: more than one means the rows came from more than one snapshot.
    """

    def __init__(self, reader) -> None:
        self.reader = reader
        self.opened = 0
        self._cm = None
        self._session = None

    @classmethod
    def holding(cls, reader, session) -> "SessionHolder":
        """A holder starting with an already open ``session`` (opened by its owner, who also closes it);
        after a fault it opens new ones from ``reader`` like any holder."""
        h = cls(reader)
        h._session, h.opened = session, 1
        return h

    def get(self):
        if self._session is None:
            cm = self.reader.session()
            self._session = cm.__enter__()
            self._cm = cm
            self.opened += 1
        return self._session

    @property
    def current(self):
        """The open session, or None."""
        return self._session

    def drop(self) -> None:
        """Close the session (quietly: after a fault it is usually broken)."""
        cm, session, self._cm, self._session = self._cm, self._session, None, None
        try:
            if cm is not None:
                cm.__exit__(None, None, None)
            elif hasattr(session, "close"):
                # Opened by its owner (a snapshot's span statement): end its drain thread and spill now, not
                # when the owner closes the snapshot at the end of the run; closing twice is harmless.
                session.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
            pass

    close = drop


def range_index_of(plan, exc: BaseException) -> int:
    """The plan range an error names (by its key range), or :data:`OPENING`."""
    kr = getattr(exc, "key_range", None)
    if kr is not None:
        for r in plan.ranges:
            if (r.lo, r.hi) == tuple(kr):
                return r.index
    return OPENING


def with_retries(attempt: Callable[[object], T], sessions: SessionHolder, plan, policy: RetryPolicy,
                 stats: RetryStats, *, stop: threading.Event, group: int) -> T:
    """``attempt(session)`` until it returns; transient faults drop the session, wait and try again.

    ``attempt`` must leave nothing behind when it raises (the executor's group reader aborts its writer).
    The fault that exhausts a range's retries is raised with the count in its message.
    """
    failures: dict[int, int] = {}
    while True:
        try:
            return attempt(sessions.get())
        except TransientSourceError as exc:
            sessions.drop()
            where = range_index_of(plan, exc)
            n = failures[where] = failures.get(where, 0) + 1
            if n > policy.retries:
                if policy.retries:
                    exc.message = f"{exc.message} (still failing after {policy.retries} retries)"
                raise
            stats.add(where)
            wait = policy.delay(n)
            _LOG.warning("range_retry", table=plan.source.table, group=group, range=where, retry=n,
                         of=policy.retries, wait_s=round(wait, 3), error=exc.message)
            if stop.wait(wait):  # another worker failed meanwhile: give up this group too
                raise


__all__ = ["RetryPolicy", "RetryStats", "SessionHolder", "with_retries", "range_index_of", "OPENING"]
