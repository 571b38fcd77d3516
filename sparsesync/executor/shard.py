"""Array jobs: ``execute --shard I/N`` runs one share of a plan's file groups; ``finalize`` commits the whole.

An orchestrator (Airflow task mapping, a Kubernetes Indexed Job, an AWS Batch or Slurm array) starts N
copies of ``sparsesync execute PLAN --dest D --shard I/N``, then one ``sparsesync finalize PLAN --dest D``.

* **Assignment** (:func:`assign_groups`) depends on the plan alone: groups sorted by estimated bytes,
  largest first (ties by index), each onto the least-loaded shard (ties by shard number). Every shard
  computes the same split, so no coordination is needed, and no shard's load exceeds the mean by more
  than the largest group.
* **Own ledger, own lock**: shard I of N keeps ``_ledger.shard-I-of-N.json`` in the plan's folder and
  holds ``<table>/<plan_id>.shard-I-of-N.lock``, so shards of one plan never write the same object and
  run side by side, while a second run of the same shard is refused. A shard cleans up only its own
  groups' leftovers (parts, staging files, multipart uploads), never another shard's.
* **Against a whole-plan run**: ``execute`` without ``--shard`` takes the plan's lock and then refuses a
  folder holding shard ledgers; a shard writes its ledger first and then refuses while the plan's lock is
  held (a whole-plan run or ``finalize``). Each side raises its flag before looking at the other's, so
  they cannot both go ahead.
* A shard writes its report (``_report.shard-I-of-N.json``) but no ``copy.sql``/``create_table.sql``/
  manifest; :func:`finalize_plan` checks that every group is done exactly once (in the shard ledgers or a
  plain ``_ledger.json`` of an earlier whole-plan run), runs the same end-of-run checks as ``execute``,
  and writes the load files and, last, the manifest.
"""

from __future__ import annotations

import heapq
import json
import os
import posixpath
import re
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Sequence

from sparsesync.errors import DestinationError, IncompleteRunError, UsageError
from sparsesync.naming import table_folder
from sparsesync.planner.plan import Plan

from .ledger import DONE, Ledger, LedgerStore
from .lock import DEFAULT_STALE_AFTER_S, LockedError, describe_holder, destination_lock, owner_is_dead

# Array index variables of the orchestrators ``--shard auto/N`` reads; all of them count from 0.
AUTO_INDEX_VARS = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")
_LEDGER_RE = re.compile(r"^_ledger\.shard-(\d+)-of-(\d+)\.json$")


@dataclass(frozen=True, order=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"


def parse_shard(text: str, environ: dict | None = None) -> Shard:
    """``"I/N"`` (1 ≤ I ≤ N) as a :class:`Shard`; ``"auto/N"`` takes I from ``$JOB_COMPLETION_INDEX`` or
    ``$AWS_BATCH_JOB_ARRAY_INDEX`` (0-based, so I = index + 1). Anything else is a one-line UsageError."""
    env = os.environ if environ is None else environ
    m = re.fullmatch(r"\s*(auto|\d+)\s*/\s*(\d+)\s*", text or "")
    if m is None:
        raise UsageError(f"--shard {text!r} is not I/N", hint="e.g. --shard 2/8 for the second of 8 shards (I counts from 1)")
    count = int(m.group(2))
    if count < 1:
        raise UsageError(f"--shard {text}: N must be at least 1")
    if m.group(1) == "auto":
        found = [(v, env[v]) for v in AUTO_INDEX_VARS if env.get(v, "").strip()]
        if len(found) != 1 or not found[0][1].strip().isdigit():
            what = "none is set" if not found else ", ".join(f"{v}={x!r}" for v, x in found)
            raise UsageError(f"--shard auto/{count} needs exactly one of {', '.join(AUTO_INDEX_VARS)} as a number: {what}",
                             hint="pass --shard I/N (e.g. Slurm: --shard $SLURM_ARRAY_TASK_ID/N with --array=1-N)")
        index = int(found[0][1]) + 1
    else:
        index = int(m.group(1))
    if not 1 <= index <= count:
        raise UsageError(f"--shard {index}/{count}: I must be between 1 and {count}", hint="shards count from 1: --shard 1/N … N/N")
    return Shard(index, count)


# ---- assignment -------------------------------------------------------------------------------------------
def assign_groups(sizes: Sequence[int], count: int) -> list[list[int]]:
    """Positions of ``sizes`` per shard (list i is shard i+1), balanced greedily: largest first (ties by
    position) onto the least-loaded shard (ties by shard number). Deterministic; each shard's load is at
    most the mean plus the largest size (the last item a shard got went onto the then-lightest shard)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    order = sorted(range(len(sizes)), key=lambda i: (-max(0, sizes[i]), i))
    heap = [(0, s) for s in range(count)]  # (load, shard): already a heap
    out: list[list[int]] = [[] for _ in range(count)]
    for i in order:
        load, s = heapq.heappop(heap)
        out[s].append(i)
        heapq.heappush(heap, (load + max(0, sizes[i]), s))
    return [sorted(x) for x in out]


def owners(plan: Plan, count: int) -> dict[int, int]:
    """File group index → the shard number (1-based) that owns it among ``count`` shards."""
    split = assign_groups([g.est_bytes for g in plan.files], count)
    return {plan.files[pos].index: s + 1 for s, positions in enumerate(split) for pos in positions}


def shard_groups(plan: Plan, shard: Shard) -> list[int]:
    """The file group indexes ``shard`` executes."""
    return sorted(g for g, s in owners(plan, shard.count).items() if s == shard.index)


def ledger_name(shard: Shard | None) -> str:
    """``_ledger.shard-I-of-N.json`` (``_ledger.json`` for a whole-plan run)."""
    return "_ledger.json" if shard is None else f"_ledger.{shard.tag}.json"


def report_name(shard: Shard) -> str:
    return f"_report.{shard.tag}.json"


def shard_lock_relpath(plan: Plan, shard: Shard) -> str:
    """``<table>/<plan_id>.shard-I-of-N.lock``: beside the folder like the plan's own lock."""
    return f"{table_folder(plan.source.table)}/{plan.plan_id}.{shard.tag}.lock"


def find_ledgers(sink, folder: str) -> dict[Shard | None, str]:
    """The ledgers in the plan's folder: shard → relative path (``None`` for a whole-plan ``_ledger.json``)."""
    found: dict[Shard | None, str] = {}
    for rel in sink.list(folder):
        name = posixpath.basename(rel)
        if posixpath.dirname(rel) != folder:
            continue
        m = _LEDGER_RE.match(name)
        if m:
            found[Shard(int(m.group(1)), int(m.group(2)))] = rel
        elif name == "_ledger.json":
            found[None] = rel
    return found


def _part_owner(names: set[str]):
    """Predicate: is ``relpath`` a part (or rolled part) of one of the groups named ``names``?"""
    stems = {n.rpartition(".")[0] or n: n.rpartition(".")[2] for n in names}

    def owns(relpath: str) -> bool:
        name = posixpath.basename(relpath)
        if name in names:
            return True
        m = re.fullmatch(r"(.+)-\d{3}\.([^.]+)", name)
        return m is not None and stems.get(m.group(1)) == m.group(2)

    return owns


def lock_holder(sink, relpath: str) -> dict | None:
    """Who holds the lock at ``relpath`` right now (``{}`` if unknown), or None when nobody does. Reads only."""
    from .sink import LocalSink

    if isinstance(sink, LocalSink):
        import fcntl

        try:
            fd = os.open(sink.url(relpath), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared probe: succeeds only while nobody holds it
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            try:
                return json.loads(os.read(fd, 65536) or b"{}")
            except ValueError:
                return {}
        finally:
            os.close(fd)
    from .lock import S3Lock

    probe = S3Lock(sink.client, sink.bucket, sink.key(relpath), error=sink._error)
    info, etag, age = probe._read()
    if etag is None or (age is not None and age > DEFAULT_STALE_AFTER_S) or owner_is_dead(info):
        return None  # absent, or one a taker would take over
    return info or {}


def refuse_if_sharded(sink, folder: str, plan: Plan) -> None:
    """A whole-plan ``execute`` (holding the plan's lock) must not clean up a folder shards are writing."""
    shards = sorted(s for s in find_ledgers(sink, folder) if s is not None)
    if shards:
        raise UsageError(
            f"{sink.url(folder)} holds the ledgers of a sharded run (--shard {', '.join(map(str, shards))}); "
            "a run without --shard would remove their parts",
            hint=f"run the missing shards and `sparsesync finalize`, or delete {sink.url(folder)} to start over",
            table=plan.source.table,
        )


# ---- the shard's part of execute ----------------------------------------------------------------------------
class ShardScope:
    """What ``execute_plan`` does differently for one shard (see :mod:`sparsesync.executor.run`)."""

    def __init__(self, plan: Plan, shard: Shard) -> None:
        self.plan, self.shard = plan, shard
        self.groups = shard_groups(plan, shard)
        self.elsewhere: list[int] = []  # own groups a whole-plan run already finished (its _ledger.json)
        self.did: list[int] = []

    def lock(self, sink):
        return destination_lock(sink, shard_lock_relpath(self.plan, self.shard),
                                purpose=f"execute plan {self.plan.plan_id} shard {self.shard}")

    def store(self, sink, folder: str) -> LedgerStore:
        return LedgerStore(sink=sink, relpath=f"{folder}/{ledger_name(self.shard)}")

    def ranges(self):
        return [r for g in self.groups for r in self.plan.ranges_of(self.plan.files[g])]

    def est_rows(self) -> int:
        return sum(self.plan.files[g].est_rows for g in self.groups)

    def prepare(self, sink, folder: str, book: Ledger, store: LedgerStore, fresh: bool) -> list[int]:
        """Check the folder, raise this shard's flag, clean its own leftovers; the groups to skip."""
        from .run import lock_relpath

        plan, mine = self.plan, set(self.groups)
        found = find_ledgers(sink, folder)
        other = sorted({s.count for s in found if s is not None and s.count != self.shard.count})
        if other:
            raise UsageError(
                f"{sink.url(folder)} holds ledgers of a run split {other[0]} ways; --shard {self.shard} would split it "
                f"{self.shard.count} ways", hint=f"run every shard with the same N (--shard I/{other[0]})",
                table=plan.source.table,
            )
        book.shard = {"index": self.shard.index, "count": self.shard.count, "groups": self.groups}
        store.save(book)  # our flag first, then look for a whole-plan run or finalize holding the plan's lock
        holder = lock_holder(sink, lock_relpath(plan))
        if holder is not None:
            if fresh:
                store.delete()
            raise LockedError(f"{describe_holder(holder)} holds plan {plan.plan_id} in {sink.url(folder)}",
                              hint="a whole-plan execute or finalize is running; run the shard after it ends")
        whole = LedgerStore(sink=sink, relpath=found[None]).load() if None in found else None
        if whole is not None and whole.plan_sha256 == plan.sha256:
            self.elsewhere = [g.index for g in whole.groups if g.index in mine and g.intact_in(sink)]
        keep, skipped = set(), list(self.elsewhere)
        for g in book.groups:
            if g.index not in mine:
                continue
            if g.index in self.elsewhere:
                g.state, g.parts, g.rows, g.bytes, g.range_rows = "elsewhere", [], 0, 0, {}
            elif g.intact_in(sink):
                skipped.append(g.index)
                keep.update(p.name for p in g.parts)
            elif g.state != "pending" or g.parts:  # interrupted or damaged: redo from scratch
                g.reset()
        if whole is not None:  # a whole-plan run's parts of our groups it finished stay; they are its
            keep.update(p.name for g in whole.groups if g.index in self.elsewhere for p in g.parts)
        owns = _part_owner({plan.files[i].name for i in mine})
        # Our own ledger and report are written atomically too: a kill mid-write leaves their temp file.
        own_files = {ledger_name(self.shard), report_name(self.shard)}
        sink.cleanup_staging(folder, only=lambda rel: owns(rel) or posixpath.basename(rel) in own_files)
        for rel in sink.list(folder):
            if posixpath.dirname(rel) == folder and owns(rel) and rel not in keep:
                sink.delete(rel)  # a part of one of our unfinished groups (a killed run's)
        return sorted(skipped)

    def already_finalized(self, report) -> None:
        """Mark ``report`` (status already-complete) as this shard's: its line must not say --overwrite."""
        report.shard = {"shard": str(self.shard), "groups": self.groups, "done_now": []}

    def todo(self, book: Ledger):
        return [self.plan.files[i] for i in self.groups if book.groups[i].state not in (DONE, "elsewhere")]

    def finish(self, report, sink, folder: str, lock, todo, t0: float) -> None:
        """Restrict the report to this shard's ranges and write it as ``_report.shard-I-of-N.json``."""
        mine = {r.index for r in self.ranges()}
        report.ranges = [rc for rc in report.ranges if rc.index in mine]
        report.deviations = [rc for rc in report.deviations if rc.index in mine]
        report.count_check = {"skipped": "a shard: `sparsesync finalize` compares the counts with the source"}
        report.metrics = {}  # they describe the whole plan: finalize reports them
        name = f"{folder}/{report_name(self.shard)}"
        before = json.loads(sink.get_bytes(name) or b"{}").get("shard", {}).get("queries_all_runs", 0)
        report.shard = {"shard": str(self.shard), "groups": self.groups, "done_now": [g.index for g in todo],
                        "skipped": [i for i in self.groups if i not in {g.index for g in todo}],
                        "elsewhere": self.elsewhere, "queries_all_runs": before + report.queries,
                        "planned_rows": self.est_rows()}  # report.planned_rows stays the whole plan's
        report.status = "shard-done"
        report.duration_s = round(time.monotonic() - t0, 3)
        if lock is not None:
            lock.check()
        sink.put_bytes(name, report.to_json())


def already_finalized_line(plan_id: str, dest: str, shard: str) -> str:
    """What a shard of a finalized run says (``--overwrite`` does not combine with ``--shard``)."""
    return (f"plan {plan_id} already completed into {dest} (finalized, manifest exists): shard {shard} has nothing "
            "to do (--overwrite does not combine with --shard); to export again, run the whole plan with `execute "
            "--overwrite` and no --shard, or delete that folder and run every shard and finalize again")


# ---- finalize -------------------------------------------------------------------------------------------------
def finalize_plan(plan: Plan, dest, *, source_url: str | None = None, iam_role: str | None = None,
                  verify: bool = True, engine=None, staging: str | None = None):
    """Check that every file group of ``plan`` is done exactly once in ``dest`` (shard ledgers, or a
    whole-plan ``_ledger.json``), compare the counts with the source as ``execute`` does at its end, then
    write ``create_table.sql``, ``copy.sql``, ``_report.json`` and, last, ``manifest.json``.

    Refuses with :class:`IncompleteRunError` naming the missing groups and their shards, writing nothing.
    Holds the plan's lock (no whole-plan ``execute`` or second ``finalize`` meanwhile). Returns the
    :class:`~sparsesync.executor.report.RunReport`.
    """
    from . import redshift
    from .dest import open_sink
    from .run import connect_source, lock_relpath, output_folder

    redshift.check_load_inputs(plan, iam_role)
    t0 = time.monotonic()
    sink = open_sink(dest, staging=staging)
    own_engine = engine is None
    try:
        folder = output_folder(plan)
        with destination_lock(sink, lock_relpath(plan), purpose=f"finalize plan {plan.plan_id}") as lock:
            if sink.exists(f"{folder}/{redshift.MANIFEST}"):
                from .report import RunReport
                from .run import plan_identity

                return RunReport(plan_id=plan.plan_id, table=plan.source.table, source=plan_identity(plan).describe(),
                                 dest=sink.url(folder), status="already-complete",
                                 manifest=sink.url(f"{folder}/{redshift.MANIFEST}"))
            book, ledgers = merged_ledger(plan, sink, folder)  # refuses before the source is even opened
            engine = engine or connect_source(plan, source_url)
            return _finalize(plan, sink, folder, engine, book, ledgers, lock, iam_role=iam_role, verify=verify, t0=t0)
    finally:
        if own_engine and engine is not None:
            engine.dispose()
        if sink is not dest and hasattr(sink, "close"):
            sink.close()


def merged_ledger(plan: Plan, sink, folder: str) -> tuple[Ledger, dict]:
    """One ledger of the whole plan from every ledger in the folder; each group must be done (with its parts
    intact) in exactly one of them. Raises :class:`IncompleteRunError` naming what is missing, by shard."""
    found = find_ledgers(sink, folder)
    table = plan.source.table
    if not found:
        raise IncompleteRunError(f"no ledger of plan {plan.plan_id} in {sink.url(folder)}: nothing was executed there",
                                 hint="run `sparsesync execute PLAN --dest … --shard I/N` for I = 1…N first", table=table)
    counts = sorted({s.count for s in found if s is not None})
    if len(counts) > 1:
        raise IncompleteRunError(f"{sink.url(folder)} holds shard ledgers of runs split {' and '.join(map(str, counts))} ways",
                                 hint="delete the folder and run every shard with the same N", table=table)
    ledgers: dict[Shard | None, Ledger] = {}
    for s, rel in found.items():
        led = LedgerStore(sink=sink, relpath=rel).load()
        if led.plan_sha256 != plan.sha256 or led.plan_id != plan.plan_id:
            raise DestinationError(f"{sink.url(rel)} belongs to another plan", hint="use the plan the shards ran", table=table)
        ledgers[s] = led
    count = counts[0] if counts else None
    owner = owners(plan, count) if count else {}
    book = Ledger.fresh(plan)
    missing: dict[str, list[int]] = {}
    twice: list[str] = []
    for g in plan.files:
        done = [(s, led.groups[g.index]) for s, led in ledgers.items()
                if led.groups[g.index].intact_in(sink)]
        if len(done) == 1:
            book.groups[g.index] = done[0][1]
            continue
        if done:
            twice.append(f"#{g.index} ({', '.join('whole-plan run' if s is None else f'shard {s}' for s, _ in done)})")
            continue
        s = Shard(owner[g.index], count) if count else None
        state = "not started" if s not in ledgers else "unfinished: running, killed or failed"
        who = f"shard {s} ({state})" if s is not None else f"the whole-plan run ({state})"
        missing.setdefault(who, []).append(g.index)
    if twice:
        raise IncompleteRunError(f"file group(s) done more than once: {', '.join(twice[:10])}",
                                 hint="delete the folder and run the shards again", table=table)
    if missing:
        n = sum(len(v) for v in missing.values())
        parts = "; ".join(f"{who}: {_ids(ix)}" for who, ix in sorted(missing.items()))
        raise IncompleteRunError(
            f"{n} of {len(plan.files)} file group(s) of plan {plan.plan_id} are not done — {parts}; nothing written",
            hint="re-run those shards (a re-run resumes), then finalize again", table=table)
    book.runs = max((led.runs for led in ledgers.values()), default=0)
    return book, ledgers


def _ids(ix: list[int]) -> str:
    shown = ", ".join(f"#{i}" for i in ix[:20])
    return f"group{'s' if len(ix) > 1 else ''} {shown}" + (f" (+{len(ix) - 20} more)" if len(ix) > 20 else "")


def _finalize(plan, sink, folder, engine, book, ledgers, lock, *, iam_role, verify, t0):
    """The end of ``execute`` (reused, not copied): report totals, oversize, counts, load files, manifest."""
    from .drift import check_drift
    from .report import RunReport
    from .run import (_after_run_counts, _check_counts, _finish_report, _oversize_report, _write_load_files,
                      plan_identity, tail_rows_now)

    drift = check_drift(engine, plan)  # a schema change since the shards ran is refused here too
    reports = [json.loads(b) for s in ledgers if s is not None and (b := sink.get_bytes(f"{folder}/{report_name(s)}"))]
    readers = sorted({r.get("reader") for r in reports if r.get("reader")})
    modes = sorted({(r.get("oversize") or {}).get("mode") for r in reports} - {None})
    report = RunReport(
        plan_id=plan.plan_id, table=plan.source.table, source=plan_identity(plan).describe(), dest=sink.url(folder),
        reader="+".join(readers) or None, workers=sum(int(r.get("workers") or 1) for r in reports) or 1,
        compression=next((r["compression"] for r in reports if r.get("compression")), "zstd"),
        planned_rows=plan.estimates.rows, groups_total=len(plan.files), drift=drift.to_dict(),
    )
    report.shard = {"finalized": sorted(("whole-plan" if s is None else str(s)) for s in ledgers),
                    "groups": {("whole-plan" if s is None else str(s)):
                               sorted(g.index for g in led.groups if book.groups[g.index] is g) for s, led in ledgers.items()}}
    counts = _after_run_counts(engine, plan) if verify else None  # the tail's count among them
    drift.tail_rows_after = tail_rows_now(engine, plan, counts)
    queries = sum(int(r.get("shard", {}).get("queries_all_runs", r.get("queries")) or 0) for r in reports)
    stats = SimpleNamespace(stats={"queries": queries})  # stands in for the reader's counters
    _finish_report(report, plan, book, stats, drift, None)
    if len(ledgers) > 1 and report.consistency == "snapshot":
        report.consistency = "mixed"  # each shard read its groups in its own snapshot
    nuls = sorted({((r.get("oversize") or {}).get("nul") or {}).get("mode") for r in reports} - {None})
    _oversize_report(report, plan, book, modes[0] if len(modes) == 1 else "keep", nuls[0] if len(nuls) == 1 else "keep")
    if verify:
        _check_counts(plan, sink, book, report, counts, in_snapshot=False, skipped=len(plan.files))
        report.count_check["reason"] = "after every shard finished (finalize)"
        report.verified = "counts"
    else:
        report.count_check = {"skipped": "--no-verify: output not compared with the source"}
    lock.check()  # a finalize that lost the plan's lock must not write the commit marker
    _write_load_files(report, plan, sink, folder, book, iam_role, t0)
    return report


__all__ = ["Shard", "parse_shard", "assign_groups", "owners", "shard_groups", "ledger_name", "find_ledgers",
           "ShardScope", "finalize_plan", "merged_ledger", "IncompleteRunError", "refuse_if_sharded", "lock_holder"]
