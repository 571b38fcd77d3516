"""Export strategies compared by the benchmark, all through the SAME reader and writer.

(a) ``fixed``      fixed key-span chunks (``id > a AND id <= a + 50000``), one file per chunk — the
                   roadmap's current state;
(b) ``quickfix``   (a) + the roadmap's quick fix: stop when a chunk > 1000 keys is < 10 % efficient
                   (the rows after it are left unsynced; the run reports where it stopped);
(c) ``adaptive``   Phase 1: the roadmap's ``AdaptiveChunkSizer`` thresholds (<5 % → ×10 up to 500k,
                   <20 % → ×3 up to 150k, else 50k), one file per chunk;
(d) ``accumulate`` Phase 1 + Phase 2: chunks buffered in memory and flushed to a file at 200k rows
                   (the roadmap's ``SparseSequenceAccumulator``: min 50k / max 200k) and at the end;
(e) ``keyset``     keyset pagination ``key > last ORDER BY key LIMIT n``, one file per page;
(f) ``planner_exact`` / ``planner_sampled`` the density planner: ``planner.api.make_plan`` then
                   ``executor.run.execute_plan``.

Baselines build :class:`~sparsesync.planner.plan.KeyRange` objects for their chunks and read them with
``executor.readers.make_reader`` (the planner's reader), and write with ``executor.writer.PartWriter``,
so the only difference between strategies is which ranges they ask for and how they group files.
Every baseline checks a wall-clock deadline between chunks: a strategy that cannot finish (fixed stride
over keys near 2^63) is reported as not finished with how far it got.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sparsesync.planner.plan import KeyRange, Plan

STRATEGIES = ("fixed", "quickfix", "adaptive", "accumulate", "keyset", "planner_exact", "planner_sampled")
BASELINES = STRATEGIES[:5]
FIXED_CHUNK = 50_000
# The roadmap's quick-fix constants.
SPARSE_EFFICIENCY_THRESHOLD = 0.10
MIN_CHUNK_SIZE_FOR_SPARSE_CHECK = 1000
# The roadmap's accumulator bounds (rows).
ACC_MIN_ROWS = 50_000
ACC_MAX_ROWS = 200_000
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class RoadmapSettings:
    """The roadmap's thresholds for the baselines; defaults are its published values.

    ``sparsesync bench`` fills them from the config file's ``detection``, ``adaptive_scaling`` and
    ``accumulation`` sections.
    """

    efficiency_threshold: float = SPARSE_EFFICIENCY_THRESHOLD
    min_chunk_size_check: int = MIN_CHUNK_SIZE_FOR_SPARSE_CHECK
    max_scale_factor: float = 10
    max_chunk_size: int = 500_000
    acc_max_rows: int = ACC_MAX_ROWS


@dataclass
class RunContext:
    """Where and how one strategy runs: the source table, the output sink and prefix, the deadline."""

    engine: Engine
    table: str
    sink: object
    prefix: str
    deadline: float  # time.monotonic() value after which a strategy stops between chunks
    key: str = "id"
    chunk: int = FIXED_CHUNK
    rows_per_query: int = 100_000
    file_size: int = 256 * 1024 * 1024
    reader_kind: str | None = None
    roadmap: RoadmapSettings = field(default_factory=RoadmapSettings)


@dataclass
class StrategyRun:
    """What a strategy did, as it reports it (the harness measures queries and rows independently)."""

    strategy: str
    finished: bool = True
    note: str = ""
    read_queries: int = 0
    rows_written: int = 0
    files: list[tuple[str, int]] = field(default_factory=list)  # (relpath, bytes)
    min_key: int | None = None
    max_key: int | None = None
    reached_key: int | None = None  # every key below this was requested
    stopped_at: int | None = None  # quick fix: first key it did NOT sync
    elapsed_s: float = 0.0
    plan: Plan | None = None
    output_prefix: str | None = None  # where the files are, when not the context's prefix
    plan_s: float = 0.0  # planner only: time spent in make_plan
    failed: bool = False  # raised an error (the harness records it instead of stopping)

    @property
    def progress(self) -> float | None:
        """Fraction of the key span requested before stopping (1.0 when finished)."""
        if self.finished:
            return 1.0
        if self.reached_key is None or self.min_key is None or self.max_key is None:
            return None
        span = self.max_key - self.min_key + 1
        return max(0.0, min(1.0, (self.reached_key - self.min_key) / span))


class AdaptiveChunkSizer:
    """The roadmap's Phase 1 sizer: its thresholds verbatim, its caps from ``adaptive_scaling``.

    With the defaults (×10 up to 500k, ×3 up to 150k) this is the roadmap's code; a smaller
    ``max_scale_factor`` or ``max_chunk_size`` caps both steps.
    """

    def __init__(self, base_size: int = FIXED_CHUNK, *, max_scale_factor: float = 10, max_chunk_size: int = 500_000) -> None:
        self.base_size = base_size
        self.max_scale_factor = max_scale_factor
        self.max_chunk_size = max_chunk_size

    def get_next_chunk_size(self, current_efficiency: float) -> int:
        if current_efficiency < 0.05:  # <5 % - extremely sparse
            return int(min(self.base_size * min(10, self.max_scale_factor), self.max_chunk_size))
        if current_efficiency < 0.20:  # <20 % - moderately sparse
            return int(min(self.base_size * min(3, self.max_scale_factor), 150_000, self.max_chunk_size))
        return self.base_size


# ---- shared reader / writer ------------------------------------------------------------------------
def schema_plan(engine: Engine, table: str, key: str | None = None) -> Plan:
    """A plan carrying only the table's columns and key (no pre-scan), so baselines can use the reader."""
    from sparsesync.planner.api import build_plan
    from sparsesync.planner.histogram import Histogram, KeyTable
    from sparsesync.planner.introspect import introspect

    info = introspect(engine, table, key=key)
    kt = KeyTable(table=table, key=info.key, signed=info.key_signed)
    empty = Histogram("exact", [], None, None, 0)
    return build_plan(engine, info, kt, empty, chosen="exact", requested="exact", reason="baseline: schema only",
                      rows_per_query=FIXED_CHUNK, file_size=256 * 1024 * 1024, sparse_threshold=SPARSE_EFFICIENCY_THRESHOLD)


def reader_kind(ctx: RunContext) -> str:
    """The reader every strategy uses: ``pymysql`` on MySQL (the driver keyset pages go through too,
    so no strategy gets a faster driver than another), ``sqlalchemy`` elsewhere, unless set."""
    from sparsesync.source import is_mysql

    return ctx.reader_kind or ("pymysql" if is_mysql(ctx.engine) else "sqlalchemy")


def _make_reader(ctx: RunContext, plan: Plan):
    from sparsesync.executor.readers import make_reader

    return make_reader(ctx.engine, plan, kind=reader_kind(ctx))


def write_file(ctx: RunContext, schema: pa.Schema, index: int, batches: list) -> list[tuple[str, int]]:
    """Write ``batches`` as ``<prefix>/part-<index>.parquet`` with the executor's writer; None if no rows."""
    from sparsesync.executor.writer import PartWriter

    if not any(b.num_rows for b in batches):
        return []
    rel = f"{ctx.prefix}/part-{index:05d}.parquet"
    writer = PartWriter(ctx.sink, rel, schema, compression="zstd")
    try:
        for b in batches:
            if b.num_rows:
                writer.write(b)
        parts = writer.close()
    except BaseException:
        writer.abort()
        raise
    # The writer may roll over to several parts; a baseline's "file" is everything it wrote.
    return [(p.relpath, int(p.size)) for p in parts]


def _min_max(ctx: RunContext) -> tuple[int | None, int | None]:
    t = sa.table(ctx.table, sa.column(ctx.key, sa.BigInteger))
    with ctx.engine.connect() as conn:
        lo, hi = conn.execute(sa.select(sa.func.min(t.c[ctx.key]), sa.func.max(t.c[ctx.key]))).one()
    return (None if lo is None else int(lo)), (None if hi is None else int(hi))


# ---- baselines (a)–(d): key-span chunks --------------------------------------------------------------
def _chunk_loop(ctx: RunContext, name: str, *, quickfix: bool = False, adaptive: bool = False,
                accumulate: bool = False) -> StrategyRun:
    t0 = time.monotonic()
    run = StrategyRun(name)
    plan = schema_plan(ctx.engine, ctx.table, ctx.key)
    schema = plan.arrow_schema()
    run.min_key, run.max_key = _min_max(ctx)
    if run.min_key is None:
        run.elapsed_s = time.monotonic() - t0
        return run
    reader = _make_reader(ctx, plan)
    rm = ctx.roadmap
    sizer = AdaptiveChunkSizer(ctx.chunk, max_scale_factor=rm.max_scale_factor, max_chunk_size=rm.max_chunk_size)
    size = ctx.chunk
    a = run.min_key  # next key to read; the chunk is id > a-1 AND id <= a-1+size, i.e. [a, a+size)
    buffer: list = []
    buffered = 0
    files = 0

    def flush() -> None:
        nonlocal buffer, buffered, files
        out = write_file(ctx, schema, files, buffer)
        if out:
            run.files.extend(out)
            files += 1
        buffer, buffered = [], 0

    with reader.session() as s:
        while a <= run.max_key:
            if time.monotonic() > ctx.deadline:
                run.finished = False
                run.note = f"time cap reached after {run.read_queries} chunks"
                break
            # A chunk end past the largest signed key is the open end (drivers refuse ints ≥ 2^63).
            kr = KeyRange(run.read_queries, a, a + size if a + size <= INT64_MAX else None, 0, "dense")
            batches = [b for b in s.read_range(kr) if b.num_rows]
            n = sum(b.num_rows for b in batches)
            run.read_queries += 1
            run.rows_written += n
            if accumulate:
                buffer.extend(batches)
                buffered += n
                if buffered >= ctx.roadmap.acc_max_rows:
                    flush()
            elif n:
                run.files.extend(write_file(ctx, schema, files, batches))
                files += 1
            a += size
            run.reached_key = a
            efficiency = n / size
            if quickfix and size > ctx.roadmap.min_chunk_size_check and n < size * ctx.roadmap.efficiency_threshold:
                if a <= run.max_key:
                    run.stopped_at = a
                    run.note = f"sparse sequence detected at efficiency {efficiency:.1%}: stopped, keys ≥ {a} unsynced"
                break
            if adaptive:
                size = sizer.get_next_chunk_size(efficiency)
    if accumulate and buffer:
        flush()
    run.elapsed_s = time.monotonic() - t0
    return run


def run_fixed(ctx: RunContext) -> StrategyRun:
    """(a) Fixed key-span chunks, one file per non-empty chunk."""
    return _chunk_loop(ctx, "fixed")


def run_quickfix(ctx: RunContext) -> StrategyRun:
    """(b) Fixed chunks with the quick fix's early termination."""
    return _chunk_loop(ctx, "quickfix", quickfix=True)


def run_adaptive(ctx: RunContext) -> StrategyRun:
    """(c) Phase 1 adaptive chunk sizing."""
    return _chunk_loop(ctx, "adaptive", adaptive=True)


def run_accumulate(ctx: RunContext) -> StrategyRun:
    """(d) Phase 1 + Phase 2 accumulation buffer."""
    return _chunk_loop(ctx, "accumulate", adaptive=True, accumulate=True)


# ---- (e) keyset pagination ------------------------------------------------------------------------
def run_keyset(ctx: RunContext) -> StrategyRun:
    """(e) ``key > last ORDER BY key LIMIT n`` pages of ``ctx.chunk`` rows, one file per page.

    The page query is the reader's own range statement (``readers.range_query`` over ``[last+1, ∞)``)
    with a LIMIT, and rows become Arrow through the readers' :class:`~sparsesync.executor.convert.RowBatcher`, so
    values are converted exactly as the range readers do.
    """
    from sparsesync.executor.convert import ReadStats, RowBatcher
    from sparsesync.executor.readers import range_query

    t0 = time.monotonic()
    run = StrategyRun("keyset")
    plan = schema_plan(ctx.engine, ctx.table, ctx.key)
    schema = plan.arrow_schema()
    batcher = RowBatcher(plan, strict_dates=False, stats=ReadStats())
    key_pos = [c.name for c in plan.columns].index(plan.source.key)
    lo = plan.ranges[0].lo  # the key type's minimum: the first page is "everything, ordered, LIMIT n"
    files = 0
    with ctx.engine.connect() as conn:
        while True:
            if time.monotonic() > ctx.deadline:
                run.finished = False
                run.note = f"time cap reached after {run.read_queries} pages"
                break
            kr = KeyRange(run.read_queries, lo, None, 0, "dense")
            stmt, params = range_query(plan, kr)
            rows = [tuple(r) for r in conn.execute(stmt.limit(ctx.chunk), params)]
            run.read_queries += 1
            if not rows:
                break
            batch = batcher.build(rows, kr)
            run.files.extend(write_file(ctx, schema, files, [batch]))
            files += 1
            run.rows_written += len(rows)
            last = int(rows[-1][key_pos])
            if run.min_key is None:
                run.min_key = int(rows[0][key_pos])
            run.reached_key = last + 1
            if len(rows) < ctx.chunk or last >= INT64_MAX:
                break
            lo = last + 1
    run.max_key = run.reached_key - 1 if run.reached_key is not None else None
    run.elapsed_s = time.monotonic() - t0
    return run


# ---- (f) the density planner -------------------------------------------------------------------------
def run_planner(ctx: RunContext, density: str) -> StrategyRun:
    """(f) ``make_plan`` + ``execute_plan`` into ``<prefix>/``."""
    from sparsesync.executor.run import execute_plan, output_folder
    from sparsesync.planner.api import make_plan

    t0 = time.monotonic()
    run = StrategyRun(f"planner_{density}")
    plan = make_plan(ctx.engine, ctx.table, key=ctx.key, rows_per_query=ctx.rows_per_query,
                     file_size=ctx.file_size, density=density, use_cache=False)
    run.plan_s = time.monotonic() - t0
    run.plan = plan
    run.min_key, run.max_key = plan.fingerprint.min_key, plan.fingerprint.max_key
    # The harness reads the output back itself, so the executor's own verification (which re-reads
    # the source) is left out of the measured run.
    execute_plan(plan, ctx.sink, engine=ctx.engine, reader=reader_kind(ctx), verify=False)
    run.output_prefix = output_folder(plan)
    run.read_queries = len(plan.ranges)
    run.files = [(rel, int(ctx.sink.size(rel) or 0)) for rel in ctx.sink.list(run.output_prefix) if rel.endswith(".parquet")]
    run.elapsed_s = time.monotonic() - t0
    return run


RUNNERS: dict[str, Callable[[RunContext], StrategyRun]] = {
    "fixed": run_fixed,
    "quickfix": run_quickfix,
    "adaptive": run_adaptive,
    "accumulate": run_accumulate,
    "keyset": run_keyset,
    "planner_exact": lambda ctx: run_planner(ctx, "exact"),
    "planner_sampled": lambda ctx: run_planner(ctx, "sampled"),
}


def run_strategy(name: str, ctx: RunContext) -> StrategyRun:
    """Run strategy ``name`` (one of :data:`STRATEGIES`) in this process."""
    from sparsesync.errors import UsageError

    if name not in RUNNERS:
        raise UsageError(f"unknown strategy {name!r}", hint=f"choose from: {', '.join(STRATEGIES)}")
    return RUNNERS[name](ctx)
