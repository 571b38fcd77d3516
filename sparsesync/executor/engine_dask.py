"""The Dask engine: a plan's file groups as tasks on a ``distributed`` cluster (``execute --engine dask``).

Split of duties, the same as the local engine's threads:

* a **task** (one per file group, on some worker) opens its own source session with the usual readers,
  reads the group's ranges and writes its part(s) straight to the destination through staging + atomic
  publish (:func:`sparsesync.executor.run.write_group`), then returns a small :class:`GroupResult`;
* the **driver** (the process that called ``execute_plan``) alone writes the ledger, report and
  manifest. It records each result as its task finishes (``as_completed``) and keeps at most
  ``connections`` tasks in flight, which is the cap on source connections the cluster holds.

Exactly once: a worker killed mid-part leaves only a staging file (local to it) or an incomplete
multipart upload, never a visible part; Dask runs the task again elsewhere, and the retry writes the same
deterministic part name. The ledger marks a group ``done`` only when the driver holds its result, so a
killed driver resumes like a local run. After the last task the driver removes whatever a killed attempt
left in the run's folder (objects no ledger entry names, staging files, incomplete uploads).

Secrets never enter the task graph: tasks get the source URL *without* its password and the destination
as ``s3://bucket/prefix`` or a path. Workers take the password from ``$SPARSESYNC_SOURCE_PASSWORD`` (or a
full ``$SPARSESYNC_SOURCE_URL``) and AWS credentials from the standard AWS settings of their own
environment. A LocalCluster started here inherits the driver's environment, and its nannies set the
password of the driver's source URL in each worker process they spawn (process environment, not the graph).

Dask is imported only inside these functions: the local engine and ``--help`` never load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from sparsesync.errors import DestinationError, UsageError
from sparsesync.source import PASSWORD_ENV

from .dask_task import TaskFailure, TaskSpec, load_plan_task, run_group_task

SCHEDULER_ENV = "SPARSESYNC_DASK_SCHEDULER"
ENGINES = ("local", "dask")


def _redacted_address(address: str) -> str:
    """A scheduler address with any ``user:password@`` removed."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return address.rpartition("@")[2]
    return f"{scheme}://{rest.rpartition('@')[2]}"


@dataclass
class DaskOptions:
    """How ``execute --engine dask`` reaches its cluster.

    ``scheduler`` is a scheduler address (``tcp://host:8786``); None starts a ``distributed.LocalCluster``
    of ``n_workers`` processes (default: the machine's cores) for the run. ``client`` is an open
    ``distributed.Client`` to use instead (library use; ``sync`` shares one over its tables).
    ``connections`` caps tasks in flight (default: the cluster's worker threads). ``shared_fs`` says a
    local destination directory is visible to every worker. ``task_retries`` is passed to
    ``client.submit(retries=…)`` for unexpected task errors; a dead worker's task is rescheduled by Dask.
    """

    scheduler: str | None = None
    n_workers: int | None = None
    connections: int | None = None
    shared_fs: bool = False
    task_retries: int = 2
    client: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.connections is not None and self.connections < 1:
            raise UsageError(f"--connections must be at least 1, got {self.connections}")
        if self.n_workers is not None and self.n_workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.n_workers}")

    @property
    def remote(self) -> bool:
        """True when workers may run on other machines (a scheduler address, or a client not on a LocalCluster)."""
        if self.client is not None:
            return type(getattr(self.client, "cluster", None)).__name__ != "LocalCluster"
        return self.scheduler is not None

    def describe(self) -> str:
        """The scheduler's address without credentials, or ``LocalCluster``."""
        if self.client is not None:
            if not self.remote:
                return f"LocalCluster({len(self.client.cluster.workers)} workers)"
            return _redacted_address(str(getattr(self.client.scheduler, "address", None) or "remote"))
        if self.scheduler:
            return _redacted_address(self.scheduler)
        return f"LocalCluster({self.n_workers or os.cpu_count() or 1} workers)"

    def check_dest(self, dest) -> None:
        """Refuse a local directory that workers on other machines cannot see (unless ``--shared-fs``)."""
        if self.remote and not self.shared_fs and _is_local_dest(dest):
            raise UsageError(
                f"--dest {_dest_text(dest)} is a local directory but the Dask workers may run on other machines",
                hint="write to s3://bucket/prefix, or pass --shared-fs if every worker sees this path",
            )

    @contextlib.contextmanager
    def session(self, *, source_password: str | None = None) -> Iterator["DaskOptions"]:
        """These options with an open client (connected or a LocalCluster started); closed on exit."""
        if self.client is not None:
            yield self
            return
        with _client(self, source_password) as client:
            yield DaskOptions(scheduler=self.scheduler, n_workers=self.n_workers, connections=self.connections,
                              shared_fs=self.shared_fs, task_retries=self.task_retries, client=client)


def _is_local_dest(dest) -> bool:
    if isinstance(dest, str):
        return not dest.strip().lower().startswith("s3://")
    from .dest import is_local

    return is_local(dest)


def _dest_text(dest) -> str:
    """The destination as workers open it: ``s3://bucket/prefix`` or an absolute directory."""
    if isinstance(dest, str):
        return dest
    from .sink import LocalSink

    if isinstance(dest, LocalSink):
        return str(dest.root)
    bucket, prefix = getattr(dest, "bucket", None), getattr(dest, "prefix", "")
    if bucket:
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    raise UsageError(f"the Dask engine cannot send destination {dest!r} to its workers",
                     hint="pass --dest as s3://bucket/prefix or a directory")


@contextlib.contextmanager
def _client(opts: DaskOptions, source_password: str | None):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("--engine dask needs the dask extra", hint="pip install 'sparsesync[dask]'") from None
    import logging

    if opts.scheduler:
        try:
            client = Client(opts.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler {_redacted_address(opts.scheduler)}: "
                             f"{str(exc).splitlines()[0][:200]}",
                             hint=f"check --scheduler / ${SCHEDULER_ENV}") from None
        try:
            yield client
        finally:
            client.close()
        return
    # The nanny sets `env` in each worker process it spawns (also when it restarts a killed one): the
    # password travels over the local spawn pipe, never through the scheduler or a task.
    env = {PASSWORD_ENV: source_password} if source_password and not os.environ.get(PASSWORD_ENV) else {}
    cluster = LocalCluster(n_workers=opts.n_workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR, env=env)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def worker_source_url(engine) -> str:
    """The driver's source URL without its password: what tasks carry (workers add theirs)."""
    from sqlalchemy.engine import URL

    u = engine.url  # URL.set(password=None) keeps the password ("None" means "unchanged" there): rebuild it
    bare = URL.create(u.drivername, username=u.username, host=u.host, port=u.port, database=u.database, query=u.query)
    return bare.render_as_string(hide_password=False)


# ---- the driver ---------------------------------------------------------------------------------------------
def task_key(plan, dest: str, run: int, index: int | None) -> str:
    """Deterministic per (plan, destination, run, group): a retry is the same task, two runs never share one.

    ``index`` None names the task that loads the plan on the workers.
    """
    h = hashlib.sha256(f"{plan.sha256}|{dest}|{run}".encode()).hexdigest()[:12]
    return f"sparsesync-plan-{h}" if index is None else f"sparsesync-group-{index:05d}-{h}"


def cluster_threads(client) -> int:
    """Worker threads of the cluster right now (at least 1)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if _takes_n_workers(client) else \
        client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def run_groups_dask(opts: DaskOptions, plan, dest, sink, folder, engine, book, store, todo, counter, *, reader,
                    compression, batch_rows, strict_dates, budget, oversize, lock, policy, retried, stats,
                    staging, nul: str = "fail") -> tuple[str, int | None]:
    """Run ``todo``'s groups on the cluster, recording each result in the ledger as it arrives.

    Returns the description of where they ran and the cluster's worker threads (None when no group was left
    to run), for the report. Raises the first task's error as the
    same :class:`SparsesyncError` the local engine would raise; groups not finished stay ``running`` or
    ``pending`` in the ledger, so the next run redoes them.
    """
    dest_text = _dest_text(dest)
    spec = TaskSpec(dest=dest_text, source_url=worker_source_url(engine), reader=reader, compression=compression,
                    batch_rows=batch_rows, strict_dates=strict_dates, oversize=oversize, nul=nul,
                    memory_limit_mb=budget.limit_mb, retries=policy.retries, retry_base_s=policy.base_s,
                    staging=staging)
    if not todo:  # a resumed run with every group done: no cluster needed
        _sweep(sink, folder, book, store)
        return opts.describe(), None
    with opts.session(source_password=engine.url.password) as live:
        where = live.describe()
        threads = cluster_threads(live.client)
        _drive(live, plan, dest_text, spec, book, store, todo, counter, lock, retried, stats)
        _sweep(sink, folder, book, store)
    return where, threads


def run_capped(client, items, submit, on_done, cap: int) -> None:
    """Keep at most ``cap`` of ``submit(item)``'s futures in flight; ``on_done(item, future)`` as each finishes.

    The cap is the source connection budget: a task holds one source session while it runs, so tasks
    in flight = connections in use. An exception from ``on_done`` stops submitting; the tasks still in
    flight are waited for (so none publishes after the caller returned), then cancelled.
    """
    from distributed import as_completed, wait

    queue = iter(items)
    running: dict = {}
    finished = as_completed()

    def submit_next() -> None:
        item = next(queue, _END)
        if item is not _END:
            fut = submit(item)
            running[fut] = item
            finished.add(fut)

    try:
        for _ in range(max(1, cap)):
            submit_next()
        for fut in finished:
            on_done(running.pop(fut), fut)
            submit_next()
    finally:
        if running:  # a failure: at most `cap` tasks are still in flight; let them end before we return
            futures = list(running)
            with contextlib.suppress(Exception):
                wait(futures, timeout=120)
            client.cancel(futures)


_END = object()


def _drive(opts: DaskOptions, plan, dest_text, spec, book, store, todo, counter, lock, retried, stats) -> None:
    from sparsesync import interrupt

    from .run import record_group

    client = opts.client
    plan_future = client.submit(load_plan_task, plan.to_json(), key=task_key(plan, dest_text, book.runs, None),
                                pure=False, retries=opts.task_retries)

    def submit(g):
        if lock is not None:
            lock.check()  # taken over as stale: submit nothing more
        interrupt.check()  # SIGINT/SIGTERM: submit nothing more (tasks in flight are waited for, run_capped)
        store.transition(book, g.index, "running")
        return client.submit(run_group_task, plan_future, g.index, spec, key=task_key(plan, dest_text, book.runs, g.index),
                             pure=False, retries=opts.task_retries)

    def done(g, fut) -> None:
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001 - a task that kept dying or crashed: one line, not a traceback
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            raise DestinationError(
                f"file group {g.index} failed on the Dask cluster: {type(exc).__name__}: {first}",
                hint="re-run the same command: finished groups are kept (the ledger resumes the run)",
                table=plan.source.table, file=g.name,
            ) from None
        if isinstance(res, TaskFailure):
            raise res.to_error()
        record_group(store, book, res, run=book.runs)
        stats.add_query(res.queries)
        for r, n in (res.retries or {}).items():
            for _ in range(n):
                retried.add(int(r))
        counter.emit("batch", rows=res.rows, nbytes=res.bytes, group=g.index)
        counter.emit("group", rows=res.rows, group=g.index)

    try:
        run_capped(client, todo, submit, done, opts.connections or cluster_threads(client))
    finally:
        client.cancel([plan_future])


def _sweep(sink, folder: str, book, store) -> None:
    """Remove what killed attempts left: staging files, incomplete uploads, parts no ledger entry names."""
    from .run import ARTIFACTS

    sink.cleanup_staging(folder)
    keep = {p.name for g in book.groups for p in g.parts}
    keep.update(f"{folder}/{a}" for a in ARTIFACTS)
    if getattr(store, "sink", None) is sink and store.relpath:
        keep.add(store.relpath)
    for rel in sink.list(folder):
        if rel not in keep:
            sink.delete(rel)


__all__ = ["DaskOptions", "ENGINES", "SCHEDULER_ENV", "run_groups_dask", "run_group_task", "run_capped", "task_key",
           "TaskSpec"]
