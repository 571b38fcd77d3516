"""Run strategies × fixtures × sizes and measure what matters, independently of the strategies.

Measured per run:
- **queries** against the fixture table, counted by the SERVER (MariaDB general log via
  :class:`benchmarks.counters.QueryLog`); on SQLite (no server) by an SQLAlchemy ``before_cursor_execute``
  hook on every engine — still outside the strategy's own code;
- **rows exported / missing / duplicated**: the Parquet output is read back with DuckDB and its keys
  compared with the fixture's exact key set;
- **files** and their size spread (min / median / max), **wall time**, **peak RSS** (sampled from
  ``/proc/self/status`` every 10 ms during the run);
- for planner runs, **sparse-region detection** scored against the fixture's truth (see
  :func:`score_regions` for the exact metric).

``--latency-ms`` routes the strategies' connections through :class:`sparsesync.bench.proxy.LatencyProxy`
(fixture creation and query counting stay direct).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sparsesync.errors import SparsesyncError, UsageError
from sparsesync.source import create_engine, is_mysql, redact

from . import fixtures as fxm
from . import strategies as st

DEFAULT_FIXTURES = ("dense", "prealert", "outliers")
DEFAULT_STRATEGIES = st.STRATEGIES


# ---- detection scoring -----------------------------------------------------------------------------
def _merge(intervals) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted((int(a), int(b)) for a, b in intervals if b > a):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def _clip(intervals, lo: int, hi: int) -> list[tuple[int, int]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


def _length(intervals) -> int:
    return sum(b - a for a, b in intervals)


def _intersect(x, y) -> list[tuple[int, int]]:
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if hi > lo:
            out.append((lo, hi))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


@dataclass(frozen=True)
class RegionScore:
    """Key-space agreement between predicted and true low-density regions over ``[min_key, max_key]``.

    ``accuracy`` = keys labelled correctly (sparse as sparse, dense as dense) / keys in the span;
    ``false_positive_rate`` = truly-dense keys labelled sparse / truly-dense keys (0 when none);
    ``recall`` = truly-sparse keys labelled sparse / truly-sparse keys (1 when none). Lengths are counted
    in keys (integers of the key domain), so a gap of 4·10^18 weighs 4·10^18.
    """

    accuracy: float
    false_positive_rate: float
    recall: float


def score_regions(truth, predicted, lo: int, hi: int) -> RegionScore:
    """Score predicted sparse intervals against the truth over ``[lo, hi)`` (half-open intervals)."""
    span = hi - lo
    t = _clip(_merge(truth), lo, hi)
    p = _clip(_merge(predicted), lo, hi)
    tp = _length(_intersect(t, p))
    t_len, p_len = _length(t), _length(p)
    fp = p_len - tp
    fn = t_len - tp
    dense = span - t_len
    return RegionScore(
        accuracy=(span - fp - fn) / span if span else 1.0,
        false_positive_rate=fp / dense if dense else 0.0,
        recall=tp / t_len if t_len else 1.0,
    )


def planner_low_density(plan) -> list[tuple[int, int]]:
    """What the plan declares below the density threshold: ``sparse_regions`` plus empty ``gaps``.

    The planner lists stretches of sparse (non-empty) buckets in ``sparse_regions`` and long empty
    stretches between buckets in ``gaps``; both are "density < threshold" claims.
    """
    h = plan.histogram
    return _merge([(r.lo, r.hi) for r in h.sparse_regions] + [(r.lo, r.hi) for r in h.gaps])


# ---- measurement helpers ---------------------------------------------------------------------------
def _rss_kb() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak resident memory of this process while the ``with`` block runs (sampled every 10 ms)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak_kb = 0
        self.start_kb = 0
        self._stop = threading.Event()

    def __enter__(self) -> "RssSampler":
        self.start_kb = self.peak_kb = _rss_kb()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, _rss_kb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak_kb = max(self.peak_kb, _rss_kb())


class _SqliteCounter:
    """Counts SELECTs mentioning a table on any engine of this process (SQLite has no server log)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __enter__(self) -> "_SqliteCounter":
        sa.event.listen(Engine, "before_cursor_execute", self._on)
        return self

    def _on(self, conn, cursor, statement, params, context, executemany) -> None:
        self.statements.append(statement)

    def mark(self) -> None:
        self.statements.clear()

    def count(self, table: str) -> int:
        return sum(1 for s in self.statements if table in s and s.lstrip().lower().startswith(("select", "with")))

    def __exit__(self, *exc) -> None:
        sa.event.remove(Engine, "before_cursor_execute", self._on)


def read_back_keys(sink, files: list[str], key: str = "id") -> np.ndarray:
    """All keys in the output files, read with DuckDB (local files in place, others via a temp copy)."""
    if not files:
        return np.zeros(0, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="sparsesync-verify-") as tmp:
        paths = []
        for i, rel in enumerate(files):
            root = getattr(sink, "root", None)
            if root is not None:
                paths.append(str(Path(root) / rel))
            else:
                p = Path(tmp) / f"{i}.parquet"
                p.write_bytes(sink.get_bytes(rel) or b"")
                paths.append(str(p))
        con = duckdb.connect()
        try:
            col = con.execute(f'SELECT "{key}"::HUGEINT::VARCHAR FROM read_parquet(?)', [paths]).fetchall()
        finally:
            con.close()
    return np.array([int(v[0]) for v in col], dtype=object)


def compare_keys(expected: np.ndarray, got: np.ndarray) -> tuple[int, int, int]:
    """(rows exported, rows missing, rows duplicated) of ``got`` against the exact ``expected`` keys."""
    exp = set(int(k) for k in expected.tolist())
    got_list = [int(k) for k in got.tolist()]
    got_set = set(got_list)
    return len(got_list), len(exp - got_set), len(got_list) - len(got_set)


# ---- results -------------------------------------------------------------------------------------
@dataclass
class Measurement:
    """One strategy on one fixture (median over repetitions for times; counts from the first run)."""

    fixture: str
    rows: int
    strategy: str
    finished: bool
    note: str
    progress: float | None
    queries: int
    files: int
    file_min: int
    file_median: float
    file_max: int
    exported: int
    missing: int
    duplicated: int
    stopped_at: int | None
    wall_s: float
    wall_runs: list[float]
    peak_rss_mb: float
    rss_delta_mb: float
    detection: RegionScore | None = None
    plan_summary: str = ""
    failed: bool = False


@dataclass
class BenchConfig:
    """What to run: source, fixtures, strategies, sizes, latency, destination, time cap, repetitions."""

    source: str
    fixtures: tuple[str, ...] = DEFAULT_FIXTURES
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    sizes: tuple[int, ...] = (50_000,)
    seed: int = 0
    latency_ms: float = 0.0
    dest: str | None = None
    time_cap_s: float = 30.0
    repeat: int = 1
    keep_tables: bool = False
    keep_output: bool = False
    chunk: int = st.FIXED_CHUNK
    roadmap: st.RoadmapSettings = field(default_factory=st.RoadmapSettings)
    rows_per_query: int = 100_000
    reader_kind: str | None = None


@dataclass
class BenchResult:
    config: BenchConfig
    measurements: list[Measurement] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    started: str = ""
    elapsed_s: float = 0.0


def machine_info() -> dict:
    """nproc, memory, Python and server versions: written next to every figure."""
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "platform": platform.platform()}


@contextmanager
def _strategy_engine(cfg: BenchConfig, direct: Engine):
    """The engine strategies use: direct, or through the latency proxy when ``latency_ms`` > 0."""
    if cfg.latency_ms and is_mysql(direct):
        from .proxy import LatencyProxy

        url = direct.url
        with LatencyProxy(url.host or "127.0.0.1", url.port or 3306, latency_ms=cfg.latency_ms,
                          max_seconds=24 * 3600) as proxy:
            eng = sa.create_engine(proxy.rewrite(url), pool_pre_ping=False)
            try:
                yield eng
            finally:
                eng.dispose()
    else:
        yield direct


def _open_dest(cfg: BenchConfig, tmp: str):
    from sparsesync.executor.dest import open_sink

    return open_sink(cfg.dest or tmp)


def _remove(sink, prefix: str) -> None:
    remove_tree = getattr(sink, "remove_tree", None)
    if callable(remove_tree):
        remove_tree(prefix)
        return
    for rel in sink.list(prefix):
        sink.delete(rel)


def run_bench(cfg: BenchConfig, progress=None) -> BenchResult:
    """Run every strategy on every fixture and size; returns all measurements (nothing printed).

    ``progress(text)`` is called before each run when given.
    """
    for f in cfg.fixtures:
        if f not in fxm.SHAPES:
            raise UsageError(f"unknown fixture {f!r}", hint=f"choose from: {', '.join(fxm.SHAPES)}")
    for s in cfg.strategies:
        if s not in st.STRATEGIES:
            raise UsageError(f"unknown strategy {s!r}", hint=f"choose from: {', '.join(st.STRATEGIES)}")
    if cfg.repeat < 1:
        raise UsageError(f"--repeat must be ≥ 1, got {cfg.repeat}")
    t_start = time.monotonic()
    result = BenchResult(cfg, machine=machine_info(), started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    direct = create_engine(cfg.source)
    mysql = is_mysql(direct)
    if mysql:
        with direct.connect() as conn:
            result.machine["server"] = conn.exec_driver_sql("SELECT VERSION()").scalar()
    result.machine["source"] = redact(cfg.source)
    tmp = tempfile.mkdtemp(prefix="sparsesync-bench-")
    sink = _open_dest(cfg, tmp)
    try:
        counter_cm = _server_counter(direct) if mysql else _SqliteCounter()
        with counter_cm as counter, _strategy_engine(cfg, direct) as eng:
            for rows in cfg.sizes:
                for shape in cfg.fixtures:
                    table = fxm.default_table_name(shape, rows, cfg.seed)
                    if progress:
                        progress(f"creating fixture {shape} ({rows:,} rows) as {table}")
                    fx = fxm.create_fixture(direct, shape, rows, seed=cfg.seed, table=table)
                    try:
                        for strat in cfg.strategies:
                            result.measurements.append(
                                _measure(cfg, eng, sink, counter, fx, strat, progress)
                            )
                    finally:
                        if not cfg.keep_tables:
                            fxm.drop_fixture(direct, table)
    finally:
        direct.dispose()
        if not cfg.keep_output and not cfg.dest:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    result.elapsed_s = time.monotonic() - t_start
    return result


class _GuardedLog:
    """QueryLog plus a guard: another process's QueryLog may switch the GLOBAL general log off when it
    finishes (the switch is server-wide). While a run is measured, a thread checks the setting every
    10 ms and switches it back on; ``interrupted`` tells the harness the count may be short, so the
    measurement is repeated."""

    def __init__(self, log, engine: Engine) -> None:
        self.log = log
        self.engine = engine
        self.interrupted = False
        self._stop = threading.Event()
        self._t: threading.Thread | None = None

    def _guard(self) -> None:
        with self.engine.connect() as conn:
            # The guard's own checks stay out of the log (it is a CSV table every count scans); the
            # session setting is undone before the connection goes back to the pool.
            conn.exec_driver_sql("SET SESSION sql_log_off = 1")
            try:
                while not self._stop.wait(0.02):
                    if not conn.exec_driver_sql("SELECT @@global.general_log").scalar():
                        self.interrupted = True
                        conn.exec_driver_sql("SET GLOBAL general_log = 'ON'")
            finally:
                conn.exec_driver_sql("SET SESSION sql_log_off = 0")

    def mark(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SET GLOBAL general_log = 'ON'")
        self.log.mark()
        self.interrupted = False
        self._stop.clear()
        self._t = threading.Thread(target=self._guard, daemon=True)
        self._t.start()

    def count(self, table: str) -> int:
        self._stop.set()
        if self._t is not None:
            self._t.join()
        return self.log.count(table)


@contextmanager
def _server_counter(engine: Engine):
    from .counters import QueryLog

    with QueryLog(engine) as log:
        yield _GuardedLog(log, engine)


def _measure(cfg: BenchConfig, eng: Engine, sink, counter, fx: fxm.Fixture, strat: str, progress) -> Measurement:
    walls: list[float] = []
    first = None
    first_queries = 0
    first_rss = None
    for rep in range(cfg.repeat):
        if progress:
            progress(f"  {strat} on {fx.shape} ({fx.rows:,} rows), run {rep + 1}/{cfg.repeat}")
        prefix = f"bench/{fx.table}/{strat}-r{rep}"
        _remove(sink, prefix)
        ctx = st.RunContext(engine=eng, table=fx.table, sink=sink, prefix=prefix,
                            deadline=time.monotonic() + cfg.time_cap_s, chunk=cfg.chunk,
                            rows_per_query=cfg.rows_per_query, reader_kind=cfg.reader_kind, roadmap=cfg.roadmap)
        for attempt in range(3 if first is None else 1):
            ctx.deadline = time.monotonic() + cfg.time_cap_s
            counter.mark()
            t0 = time.perf_counter()
            with RssSampler() as rss:
                try:
                    run = st.run_strategy(strat, ctx)
                except SparsesyncError as exc:
                    # One strategy failing must not lose the other measurements: record it, visibly.
                    run = st.StrategyRun(strat, finished=False, note=f"FAILED: {exc.one_line()}")
                    run.failed = True
            wall = time.perf_counter() - t0
            queries = counter.count(fx.table)
            if not getattr(counter, "interrupted", False):
                break
            if attempt == 2:
                run.note = (run.note + "; " if run.note else "") + "query count may be low (general log interrupted)"
                break
            if progress:
                progress("    the general log was switched off by another client during the run: measuring again")
            _remove(sink, prefix)
            if run.output_prefix:
                _remove(sink, run.output_prefix)
        walls.append(wall)
        if first is None:
            first, first_rss = run, rss
            first_queries = queries
            got = read_back_keys(sink, [rel for rel, _ in run.files])
            exported, missing, dup = compare_keys(fx.keys, got)
        if not cfg.keep_output:
            _remove(sink, prefix)
            if run.output_prefix:
                _remove(sink, run.output_prefix)
        if not run.finished:
            break  # a run that hit the time cap is not repeated
    sizes = sorted(size for _, size in first.files) or [0]
    detection = None
    summary = ""
    if first.plan is not None:
        detection = score_regions(fx.sparse_truth, planner_low_density(first.plan), fx.min_key, fx.max_key + 1)
        p = first.plan
        summary = (f"{len(p.ranges)} ranges ({sum(r.label == 'sparse' for r in p.ranges)} sparse), "
                   f"{len(p.files)} file(s), pre-scan {p.strategy.prescan_queries} queries "
                   f"({p.histogram.buckets:,} buckets), planning {first.plan_s:.2f} s")
    return Measurement(
        fixture=fx.shape, rows=fx.rows, strategy=strat, finished=first.finished, note=first.note,
        progress=first.progress, queries=first_queries, files=len(first.files), file_min=sizes[0],
        file_median=float(statistics.median(sizes)), file_max=sizes[-1], exported=exported, missing=missing,
        duplicated=dup, stopped_at=first.stopped_at, wall_s=float(statistics.median(walls)), wall_runs=walls,
        peak_rss_mb=first_rss.peak_kb / 1024, rss_delta_mb=(first_rss.peak_kb - first_rss.start_kb) / 1024,
        detection=detection, plan_summary=summary, failed=first.failed,
    )


# ---- rendering -----------------------------------------------------------------------------------
def _kb(n: float) -> str:
    return f"{n / 1024:,.0f}" if n >= 1024 else f"{n / 1024:.1f}"


def status_text(m: Measurement) -> str:
    """``yes`` or ``NOT finished (x % of key span in N s)``."""
    if m.failed:
        return f"**FAILED**: {m.note}"
    if m.finished:
        return "yes"
    pct = "?" if m.progress is None else (f"{m.progress:.2e}" if m.progress < 1e-3 else f"{m.progress:.1%}")
    return f"**NOT finished** ({pct} of key span in {m.wall_s:.0f} s)"


def markdown_table(measurements: list[Measurement]) -> str:
    """One row per (fixture, rows, strategy)."""
    head = ("| fixture | rows | strategy | finished | queries (server) | files | file KiB min/med/max "
            "| rows exported | missing | duplicated | wall s (median) | peak RSS MiB |")
    lines = [head, "|" + "---|" * 12]
    for m in measurements:
        miss = f"**{m.missing:,}**" if m.missing else "0"
        lines.append(
            f"| {m.fixture} | {m.rows:,} | {m.strategy} | {status_text(m)} | {m.queries:,} | {m.files:,} "
            f"| {_kb(m.file_min)}/{_kb(m.file_median)}/{_kb(m.file_max)} | {m.exported:,} | {miss} | {m.duplicated:,} "
            f"| {m.wall_s:.2f} | {m.peak_rss_mb:.0f} |"
        )
    return "\n".join(lines)


def detection_table(measurements: list[Measurement]) -> str:
    """Sparse-region detection of planner runs against the fixture truth."""
    lines = ["| fixture | rows | strategy | accuracy | false positive rate | recall | plan |", "|---|---|---|---|---|---|---|"]
    for m in measurements:
        if m.detection is None:
            continue
        d = m.detection
        lines.append(f"| {m.fixture} | {m.rows:,} | {m.strategy} | {d.accuracy:.4%} | {d.false_positive_rate:.4%} "
                     f"| {d.recall:.4%} | {m.plan_summary} |")
    return "\n".join(lines)


def _fewer(ours: int, theirs: int, what: str) -> str:
    if theirs and ours <= theirs:
        saved = 1 - ours / theirs
        # 1 file instead of 2,016 is 99.95 %, not "100.0 %".
        return f"uses {saved:.2%} fewer {what} ({ours:,} vs {theirs:,})" if saved > 0.999 else \
            f"uses {saved:.1%} fewer {what} ({ours:,} vs {theirs:,})"
    return f"uses more {what} ({ours:,} vs {theirs:,})"


def gains(measurements: list[Measurement], baseline: str = "fixed", target: str = "planner_exact") -> list[str]:
    """Per fixture: the target's queries, files and time as ratios of the baseline's."""
    out = []
    by = {(m.fixture, m.rows, m.strategy): m for m in measurements}
    for (fx, rows, strat), b in by.items():
        if strat != baseline or (fx, rows, target) not in by:
            continue
        t = by[(fx, rows, target)]
        speed = b.wall_s / t.wall_s if t.wall_s else float("inf")
        fin = "" if b.finished else f" ({baseline} did not finish)"
        out.append(f"- {fx} ({rows:,} rows): {target} {_fewer(t.queries, b.queries, 'queries')}, "
                   f"{_fewer(t.files, b.files, 'files')}; {baseline} takes {speed:.2f}× the time of {target} "
                   f"({t.wall_s:.2f} s vs {b.wall_s:.2f} s){fin}.")
    return out


def render_markdown(result: BenchResult, command: str = "", chart: str | None = None) -> str:
    """The full results section for one bench run."""
    c = result.config
    mi = result.machine
    lines = [
        f"### Run of {result.started}",
        "",
        f"- command: `{command}`" if command else "",
        f"- machine: {mi.get('nproc')} CPUs, {mi.get('memory')} RAM, Python {mi.get('python')}, "
        f"{mi.get('platform')}; source {mi.get('source')} ({mi.get('server', 'embedded')})",
        f"- fixtures {', '.join(c.fixtures)}; sizes {', '.join(f'{n:,}' for n in c.sizes)}; seed {c.seed}; "
        f"latency {c.latency_ms:g} ms per round trip; time cap {c.time_cap_s:g} s; repetitions {c.repeat}; "
        f"dest {c.dest or 'local temp dir'}; total {result.elapsed_s:.0f} s",
        "",
        markdown_table(result.measurements),
        "",
    ]
    notes = [f"- {m.fixture}/{m.strategy}: {m.note}" for m in result.measurements if m.note and not m.failed]
    if notes:
        lines += ["Notes reported by the strategies:", ""] + notes + [""]
    g = gains(result.measurements)
    if g:
        lines += ["Planner (exact) vs fixed stride:", ""] + g + [""]
    det = detection_table(result.measurements)
    if det.count("\n") > 1:
        lines += ["Sparse-region detection (key-space weighted, see metric definition):", "", det, ""]
    if chart:
        lines += [f"![chart]({chart})", ""]
    return "\n".join(x for x in lines if x is not None)


def write_outputs(result: BenchResult, out_dir: str | os.PathLike, command: str = "") -> tuple[Path, Path | None]:
    """``results.md`` and ``chart.png`` into ``out_dir``; returns both paths (chart None if it failed)."""
    from .chart import render_chart

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "chart.png"
    try:
        render_chart(result.measurements, png, title=f"latency {result.config.latency_ms:g} ms")
    except Exception:  # noqa: BLE001 - a chart must never lose the measured table
        png = None
    md = out / "results.md"
    md.write_text(render_markdown(result, command, png.name if png else None), encoding="utf-8")
    return md, png
