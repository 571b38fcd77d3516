"""The run report: what ``execute`` did, as ``_report.json`` beside the output and a short summary.

It carries identities, counts and timings only; never a URL with a password (the source is described
by the plan's secret-free identity).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RangeCount:
    """Planned (estimated) versus actual rows of one range."""

    index: int
    lo: int
    hi: int | None
    planned: int
    actual: int


@dataclass
class RunReport:
    """Everything a run measured; ``to_dict`` is what ``_report.json`` holds."""

    plan_id: str
    table: str
    source: str
    dest: str
    status: str = "running"  # done | already-complete | dry-run
    reader: str | None = None
    consistency: str | None = None
    workers: int = 1
    engine: str = "local"  # local (threads in this process) | dask (file groups as tasks on a Dask cluster)
    scheduler: str | None = None  # the Dask scheduler's address (no credentials), or "LocalCluster(n)"
    compression: str = "zstd"
    queries: int = 0
    rows: int = 0
    bytes: int = 0
    files: int = 0
    duration_s: float = 0.0
    planned_rows: int = 0
    zero_dates: dict[str, int] = field(default_factory=dict)
    groups_total: int = 0
    groups_skipped: int = 0  # already done in an earlier (interrupted) run
    groups_redone: int = 0  # found running/pending or damaged, redone
    overwrite: bool = False
    tail_rows: int = 0
    late_rows: int = 0  # rows above the planned max that appeared after the read snapshot (not exported)
    drift: dict[str, Any] = field(default_factory=dict)
    ranges: list[RangeCount] = field(default_factory=list)
    deviations: list[RangeCount] = field(default_factory=list)
    snapshot_count: int | None = None
    retries: int = 0  # transient source faults survived (each redid its file group on a new session)
    retried_ranges: dict[str, int] = field(default_factory=dict)  # range index → retries ("-1": opening)
    verified: str = "skipped"  # counts | skipped
    # The per-range COUNT(*) check against the source: where it was taken (snapshot | after-run) and why,
    # ranges, source rows, mismatches — or {"skipped": reason}.
    count_check: dict[str, Any] = field(default_factory=dict)
    # --consistency snapshot: how the one point in time was had (method, connections, at, lock_held_s, text).
    snapshot: dict[str, Any] = field(default_factory=dict)
    # Span statements' queues (executor.spill): bytes and batches that waited on local disk because the
    # writer lagged, and the most one queue held in memory against its bound; empty when none ran.
    spill: dict[str, Any] = field(default_factory=dict)
    # [group index, snapshot | per-range, run] per file group: resumed runs mix groups of several runs.
    group_consistency: list[list[Any]] = field(default_factory=list)
    manifest: str | None = None
    copy_sql: str | None = None
    create_table_sql: str | None = None
    ledger: str | None = None
    queries_sql: list[str] = field(default_factory=list)  # dry-run only: the rendered range queries
    # Widest text/binary value per column and values over the Redshift DDL limit (executor.oversize).
    oversize: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Roadmap Phase 4 summary: sparse regions found, queries saved vs fixed stride, files consolidated,
    # mean range efficiency (actual / planned rows). See ``executor.run.run_metrics``.
    metrics: dict[str, Any] = field(default_factory=dict)
    # Array jobs (executor.shard): a shard's own groups (done now, skipped); finalize: the ledgers merged.
    shard: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_s"] = round(self.rows_per_s, 1)
        # Compact per-range form: [index, lo, hi, planned, actual]; keys as decimal strings (may exceed 2^53).
        d["ranges"] = [[r.index, str(r.lo), None if r.hi is None else str(r.hi), r.planned, r.actual] for r in self.ranges]
        d["deviations"] = [
            [r.index, str(r.lo), None if r.hi is None else str(r.hi), r.planned, r.actual] for r in self.deviations
        ]
        return d

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    def summary_lines(self) -> list[str]:
        """A short human summary for the terminal."""
        if self.status == "dry-run":
            return [
                f"dry run of plan {self.plan_id} ({self.table}): drift check passed, {len(self.queries_sql)} queries, nothing read or written"
            ]
        if self.status == "already-complete" and self.shard.get("shard"):
            from .shard import already_finalized_line

            return [already_finalized_line(self.plan_id, self.dest, self.shard["shard"])]
        if self.status == "already-complete":
            return [f"plan {self.plan_id} already completed into {self.dest} (manifest exists); pass --overwrite to redo it"]
        lines = [
            f"{self.table}: {self.rows:,} rows in {self.files} file(s), {self.bytes / 1e6:,.1f} MB, "
            f"{self.queries} queries, {self.duration_s:.1f} s ({self.rows_per_s:,.0f} rows/s)",
            f"reader {self.reader}, consistency {self.consistency}, "
            # on Dask the cluster's worker threads read the groups, not --workers
            + (f"engine dask on {self.scheduler}, " + (f"{self.workers} worker thread(s)" if self.workers else
                                                     "no file group left to run") if self.engine == "dask"
               else f"workers {self.workers}") + "; "
            + (f"planned ~{self.shard['planned_rows']:,} rows for this shard (~{self.planned_rows:,} in the whole "
               "plan)" if "planned_rows" in self.shard else f"planned ~{self.planned_rows:,} rows")
            + f", verified: {self.verified}",
        ]
        sh = self.shard
        if sh.get("shard") and "planned_rows" in sh:
            lines[0] = lines[0].replace(f"{self.table}: ", f"{self.table} shard {sh['shard']}: ", 1)
        if sh.get("shard"):
            lines.append(f"shard {sh['shard']}: {len(sh['groups'])} of {self.groups_total} file group(s) "
                         f"({_indexes(sh['groups'])}); {len(sh['done_now'])} done now, "
                         f"{len(sh['groups']) - len(sh['done_now'])} already done; "
                         "when every shard is done: sparsesync finalize PLAN --dest …")
        if sh.get("finalized"):
            lines.append("finalized the ledgers of " + ", ".join(
                f"{k} ({len(v)} group(s))" for k, v in sh["groups"].items()))
        m = self.metrics
        if m:
            lines.append(
                f"metrics: {m['sparse_regions']} sparse region(s); {self.queries:,} queries, where a fixed "
                f"{m['fixed_stride_keys']:,}-key stride over the key span would take {count_text(m['fixed_stride_queries'])} queries"
                f"{ratio_text(m['fixed_stride_queries'], self.queries)}; {m['files_consolidated']} range(s) consolidated "
                f"into shared files, mean range efficiency {m['mean_range_efficiency']:.2f}"
            )
        if self.groups_skipped or self.groups_redone:
            lines.append(f"resumed: {self.groups_skipped} file group(s) already done, {self.groups_redone} redone")
        if self.snapshot.get("text") and self.consistency == "snapshot":
            lines.append(f"snapshot: {self.snapshot['text']}")
        if self.spill.get("bytes"):
            lines.append(f"spill: {self.spill['bytes'] / 1e6:,.1f} MB waited on local disk while the writer lagged "
                         f"(in memory at most {self.spill['queue_peak_bytes'] / 1e6:,.1f} of "
                         f"{self.spill['queue_limit_bytes'] / 1e6:,.1f} MB)")
        if self.consistency == "mixed" and self.shard.get("finalized"):
            lines.append("consistency mixed: each shard read its file groups in its own snapshot(s)")
        elif self.consistency == "mixed":
            lines.append("consistency mixed: the file groups were read in different snapshots (runs); "
                         "use --overwrite for one point in time")
        if "skipped" in self.count_check:
            lines.append(f"COUNT check skipped: {self.count_check['skipped']}")
        elif self.count_check:
            lines.append(f"COUNT(*) per range matched the source {self.count_check['reason']}")
        if self.tail_rows:
            lines.append(
                f"drift: {self.tail_rows:,} row(s) above the planned max {self.drift.get('planned_max_key')} "
                f"read by the tail range (max key now {self.drift.get('max_key_now')})"
            )
        if self.late_rows:
            lines.append(
                f"drift: {self.late_rows:,} row(s) reached the tail after the read snapshot began; "
                "they are not in this export (re-plan or run again to pick them up)"
            )
        if self.deviations:
            shown = ", ".join(f"#{r.index} {r.planned}→{r.actual}" for r in self.deviations[:5])
            more = f" (+{len(self.deviations) - 5} more)" if len(self.deviations) > 5 else ""
            lines.append(f"{len(self.deviations)} range(s) differ from the plan's estimate: {shown}{more}")
        if self.retries:
            ranges = ", ".join(f"#{k}×{v}" if k != "-1" else f"connect×{v}" for k, v in self.retried_ranges.items())
            lines.append(f"transient source faults survived: {self.retries} retr{'y' if self.retries == 1 else 'ies'} "
                         f"({ranges}); each redid its file group on a new connection")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.zero_dates:
            lines.append("zero dates → NULL: " + ", ".join(f"{k} {v:,}" for k, v in self.zero_dates.items()))
        if self.manifest:
            lines.append(f"manifest: {self.manifest}")
        if self.copy_sql:
            lines.append(f"load with: {self.copy_sql}")
        return lines


def count_text(n: int) -> str:
    """``12,345`` up to a million; beyond, ``about 9.2×10^13`` (a 19-digit count is read by nobody)."""
    if abs(n) < 1_000_000:
        return f"{n:,}"
    exp = len(str(abs(int(n)))) - 1
    return f"about {n / 10 ** exp:.1f}×10^{exp}"


def ratio_text(fixed: int, queries: int) -> str:
    """`` (N× as many)`` for a fixed stride costlier than the run; ``""`` when it is not."""
    if queries <= 0 or fixed <= queries:
        return ""
    r = fixed / queries
    return f" ({count_text(round(r))}× as many)" if r >= 10 else f" ({r:.1f}× as many)"


def _indexes(ix: list[int], limit: int = 20) -> str:
    shown = ", ".join(f"#{i}" for i in ix[:limit])
    return (shown + (f" (+{len(ix) - limit} more)" if len(ix) > limit else "")) or "none"
