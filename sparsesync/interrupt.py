"""SIGINT and SIGTERM: stop a run at the next batch, between file groups, and exit 130 / 143.

The CLI's ``sync``, ``execute`` and ``run`` install :func:`handling`. The first signal only *requests* a stop:
every run's ``stop`` event (:func:`stop_event`, the executor's one mechanism that also stops workers after a
failure) is set, so readers end at their next batch, queued file groups and tables never start, and nothing
commits afterwards (:func:`check` before each commit point). A second signal acts at once (Ctrl-C raises
``KeyboardInterrupt``, SIGTERM kills the process): the usual crash safety then applies.

Outside a run (planning, starting a Dask cluster, rendering output) nothing would look at the request, so the
signal raises :class:`Interrupted` in the main thread right away, like Ctrl-C does by default.

Test hook (tiny, for the signal tests only): ``SPARSESYNC_TEST_PAUSE=POINT:N:FILE`` makes the run stop at
``POINT`` (``group`` before reading file group N, ``batch`` after file group N wrote its first batch, ``swap``
before a sync swaps its image) — it creates FILE and
waits until a signal arrives or FILE is removed (at most 120 s). Unset, :func:`pause` costs one dict lookup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import weakref

from sparsesync.errors import SparsesyncError

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
PAUSE_ENV = "SPARSESYNC_TEST_PAUSE"

_lock = threading.RLock()  # re-entrant: the handler runs in the main thread, maybe while it holds the lock
_requested: str | None = None
_any = threading.Event()  # set with _requested: wakes sleep()
_events: "weakref.WeakSet[threading.Event]" = weakref.WeakSet()
_runs = 0  # runs in progress that look at the request (execute_plan, sync_many)


class Interrupted(SparsesyncError):
    """The run stopped on SIGINT / SIGTERM before its commit point; re-running the same command resumes it."""

    def __init__(self, signame: str, *, resume: str = "re-run the same command to resume") -> None:
        super().__init__(f"interrupted by {signame}", hint=resume)
        self.signame = signame
        self.exit_code = exit_code(signame)

    def one_line(self) -> str:
        return f"{self.message}; {self.hint}"


class _Now(KeyboardInterrupt):
    """Raised by the handler when no run looks at the request; a BaseException, so no ``except Exception`` of
    the code it lands in turns it into another error. :func:`handling` makes it :class:`Interrupted`."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


def exit_code(signame: str) -> int:
    """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (what shells and orchestrators expect)."""
    return 128 + int(SIGNALS[signame])


def requested() -> str | None:
    """The name of the signal that asked the process to stop, or None."""
    return _requested


def check() -> None:
    """Raise :class:`Interrupted` when a signal asked to stop (called before each commit point)."""
    if _requested is not None:
        raise Interrupted(_requested)


def stop_event() -> threading.Event:
    """A run's ``stop`` event, also set by a signal (already set when one came before the run)."""
    ev = threading.Event()
    with _lock:
        _events.add(ev)
        if _requested is not None:
            ev.set()
    return ev


def sleep(seconds: float) -> None:
    """``time.sleep`` that a signal cuts short (a back-off before a retry)."""
    _any.wait(seconds)


def request(signame: str) -> None:
    """Ask every run of this process to stop, as the signal ``signame`` does."""
    global _requested
    with _lock:
        if _requested is None:
            _requested = signame
        _any.set()
        events = list(_events)
    for ev in events:
        ev.set()


def reset() -> None:
    """Forget a request (tests, and library callers that handled it)."""
    global _requested
    with _lock:
        _requested = None
        _any.clear()


@contextlib.contextmanager
def run_scope():
    """Marks code that looks at the request (a run): inside it a signal is a request, outside it acts at once."""
    global _runs
    with _lock:
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1


@contextlib.contextmanager
def converting(resume: str | None = None):
    """An error raised after a signal asked to stop (the stop itself caused it) becomes :class:`Interrupted`."""
    try:
        yield
    except Interrupted:
        raise
    except BaseException as exc:
        if _requested is None or isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise Interrupted(_requested) from exc


def _handler(signum, frame) -> None:
    name = signal.Signals(signum).name
    # A second signal acts at once: the defaults come back (Ctrl-C raises KeyboardInterrupt, SIGTERM kills).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    request(name)
    if _runs == 0:  # nothing in progress would look at the request
        raise _Now(name)


@contextlib.contextmanager
def handling(resume: str | None = None):
    """Install the SIGINT/SIGTERM handlers for the block (main thread only; elsewhere nothing changes).

    A stop that acted at once (outside a run, or a second Ctrl-C) leaves the block as :class:`Interrupted`
    too; ``resume`` replaces its "re-run the same command to resume".
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS.values()}
    for s in SIGNALS.values():
        signal.signal(s, _handler)
    try:
        yield
    except KeyboardInterrupt as exc:
        sig = getattr(exc, "signame", None) or _requested or "SIGINT"
        raise (Interrupted(sig, resume=resume) if resume else Interrupted(sig)) from None
    except Interrupted as exc:
        if resume:
            exc.hint = resume
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        reset()  # the request ended with this block (it was raised or reported); the process may go on


def pause(point: str, n: int | None = None) -> None:
    """The test hook of the module docstring (nothing unless ``$SPARSESYNC_TEST_PAUSE`` names this point)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    want, _, rest = spec.partition(":")
    count, _, path = rest.partition(":")
    if want != point or (n is not None and count and int(count) != n) or not path:
        return
    with _lock:
        if path in _paused:
            return
        _paused.add(path)
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + 120
    while _requested is None and os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


_paused: set[str] = set()

__all__ = ["Interrupted", "check", "converting", "exit_code", "handling", "pause", "request", "requested",
           "reset", "run_scope", "stop_event"]
