"""What runs on a Dask worker for ``execute --engine dask``: one file group per task (see :mod:`.engine_dask`).

A task gets the plan (from the plan task), the group's index and a :class:`TaskSpec` — no secrets: the
source URL without its password, the destination as ``s3://bucket/prefix`` or a path. It connects with the
password of its own environment, reads the group through the usual readers and publishes its part(s)
through staging + atomic publish; it never touches the ledger. Sparsesync's own errors come back as a
:class:`TaskFailure` value (plain fields) and are re-raised by the driver as the same class.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from sparsesync import errors as _errors
from sparsesync.errors import SparsesyncError
from sparsesync.source import PASSWORD_ENV, SOURCE_URL_ENV


@dataclass(frozen=True)
class TaskSpec:
    """Everything a group task needs besides the plan: no secrets (checked by the tests)."""

    dest: str
    source_url: str | None
    reader: str
    compression: str
    batch_rows: int
    strict_dates: bool
    oversize: str
    memory_limit_mb: int
    retries: int
    retry_base_s: float
    staging: str | None = None
    nul: str = "fail"


@dataclass
class TaskFailure:
    """A :class:`SparsesyncError` raised in a task, sent back as plain fields (re-raised by the driver)."""

    kind: str
    message: str
    hint: str | None = None
    table: str | None = None
    key_range: tuple | None = None
    file: str | None = None

    def to_error(self) -> SparsesyncError:
        cls = getattr(_errors, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, SparsesyncError)):
            cls = SparsesyncError
        return cls(self.message, hint=self.hint, table=self.table, key_range=self.key_range, file=self.file)


_CACHE: dict[tuple, Any] = {}  # per worker process: engines and sinks, reused by the tasks it runs
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple, make):
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def _worker_engine(plan, source_url: str | None):
    from .run import connect_source

    # A password-less URL with no password in this worker's environment: a full URL there wins.
    url = source_url
    if url is not None and not os.environ.get(PASSWORD_ENV) and os.environ.get(SOURCE_URL_ENV):
        url = None
    return _cached(("engine", url, plan.source.database), lambda: connect_source(plan, url))


def load_plan_task(text: str):
    """Task: the plan from its JSON (one task per run; the group tasks depend on it)."""
    from sparsesync.planner.plan import Plan

    return Plan.from_json(text, origin="the plan sent by the Dask driver")


def run_group_task(plan, index: int, spec: TaskSpec):
    """Task: read file group ``index`` and publish its part(s); returns a GroupResult (or a TaskFailure).

    Transient source faults are retried here like in the local engine (the group redone on a new session).
    """
    from .budget import MemoryBudget
    from .dest import is_s3, open_sink
    from .heap import bound_heap
    from .readers import make_reader
    from .retry import RetryPolicy, RetryStats, SessionHolder, with_retries
    from .run import output_folder, write_group

    bound_heap()  # as in the local engine: freed batches go back to the system

    try:
        engine = _worker_engine(plan, spec.source_url)
        # one task per worker thread: the limit is per worker, its S3 uploads included
        budget = MemoryBudget(spec.memory_limit_mb, 1, s3=is_s3(spec.dest))
        sink = _cached(("sink", spec.dest, spec.staging, budget.upload_threads),
                       lambda: open_sink(spec.dest, staging=spec.staging, upload_threads=budget.upload_threads))
        rdr = make_reader(engine, plan, kind=spec.reader, batch_rows=spec.batch_rows, strict_dates=spec.strict_dates,
                          snapshot=False, batch_bytes=budget.batch_bytes)
        g = plan.files[index]
        stop, stats = threading.Event(), RetryStats()
        sessions = SessionHolder(rdr)
        try:
            res = with_retries(
                lambda session: write_group(plan, sink, output_folder(plan), session, g, spec.compression, _Quiet(),
                                            stop, budget=budget, oversize=spec.oversize, nul=spec.nul)(),
                sessions, plan, RetryPolicy(retries=spec.retries, base_s=spec.retry_base_s), stats,
                stop=stop, group=index)
        finally:
            sessions.close()
        res.queries = rdr.stats.queries
        res.retries = dict(stats.by_range)
        return res
    except SparsesyncError as exc:
        return TaskFailure(type(exc).__name__, exc.message, exc.hint, exc.table, exc.key_range, exc.file)


class _Quiet:
    """Progress sink of a task: the driver reports progress per finished group."""

    def emit(self, *args, **kwargs) -> None:
        pass


__all__ = ["TaskSpec", "TaskFailure", "load_plan_task", "run_group_task"]
