"""Planner benchmark on MariaDB: exact vs sampled pre-scan, outliers, cold vs warm histogram cache.

Run (MariaDB with the SEQUENCE engine at the URL, tables are created and dropped):

    .venv/bin/python -m benchmarks.bench_planner [--url URL] [--rows 1000000] [--scale 10] [--out benchmarks/results/planner.md]

Measures, on fixture tables generated with ``INSERT … SELECT seq FROM seq_1_to_N``:

1. ``outliers``: ``--rows`` dense ids + 3 ids near 4·10^18, default rows_per_query: ranges for exact and
   sampled vs the bound ⌈N / rows_per_query⌉ + 1.
2. ``shaped`` at ``--rows`` and ``--rows × --scale`` (60 % dense, 30 % one key in 50, 10 % in ten stride-2
   bursts), rows_per_query = rows / 40 so both plans have about the same number of ranges: for the
   sampled pre-scan, the share of ranges whose estimate is within 2× of the real count, and the number
   of statements the server logged; the exact pre-scan's time for comparison.
3. cold plan (exact scan, cache written) vs warm re-plan (cache hit: one MIN/MAX probe) on the shaped
   tables: time ratio, and the statements the warm plan sent.

4. ``prescan`` (issue 8): exact pre-scan of ~1M random keys over 5·10^7 at rows_per_query 2,000 vs
   100,000, paired and repeated: time ratio, statements, and ``Handler_read_next`` per row (SESSION
   STATUS deltas of the one connection the planner used).
5. ``shapes`` (issue 8): the sampled pre-scan on the 7 fixture shapes plus ``burst`` (one key in 10,000
   for a sixth of the rows, then dense keys) at ``--shape-rows`` (default 1M and 10M): statements
   (server general log), index reads (Handler_read_* session deltas), ranges within 2×, time; the exact
   pre-scan's reads for reference.
6. ``show`` (issue 8): ``sparsesync show`` and ``--png`` on a plan with ~10k ranges (CLI wall time,
   in-process time), the PNG kept in benchmarks/results/.

``--sections`` picks which run (default: all). Times are wall-clock seconds in this process, median of
``--repeat`` runs; only ratios within one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from sqlalchemy.pool import StaticPool

from sparsesync.bench.counters import QueryLog
from sparsesync.planner.api import make_plan

DEFAULT_URL = os.environ.get("SPARSESYNC_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def machine() -> str:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"

    mem = sh("free -h | awk '/Mem:/ {print $2}'")
    with sa.create_engine(DEFAULT_URL).connect() as conn:
        version = conn.exec_driver_sql("SELECT VERSION()").scalar()
    return f"nproc {sh('nproc')}, RAM {mem}, Python {platform.python_version()}, MariaDB {version}, {platform.platform()}"


def create(engine, kind: str, n: int) -> str:
    name = f"bench_{kind}_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
        if kind == "outliers":
            conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT seq FROM seq_1_to_{n}")
            conn.exec_driver_sql(f"INSERT INTO {name} (id) VALUES (4000000000000000000), (4000000000000000007), (4000000000000000100)")
        else:
            dense, sparse, burst = int(n * 0.6), int(n * 0.3), n // 100
            conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT seq FROM seq_1_to_{dense}")
            conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT 100000000 + seq * 50 FROM seq_1_to_{sparse}")
            for j in range(10):
                conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT {10**10 + j * 10**8} + seq * 2 FROM seq_1_to_{burst}")
        conn.exec_driver_sql(f"ANALYZE TABLE {name}")
    return name


def drop(engine, name: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def actual_counts(engine, name: str, plan) -> list[int]:
    out = []
    with engine.connect() as conn:
        for r in plan.ranges:
            hi = "" if r.hi is None else f" AND id < {r.hi}"
            out.append(int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {name} WHERE id >= {r.lo}{hi}").scalar()))
    return out


HANDLERS = ("Handler_read_first", "Handler_read_last", "Handler_read_key", "Handler_read_next", "Handler_read_prev")
COUNTERS = HANDLERS + ("Com_select",)


class Session:
    """One connection (StaticPool) for the planner and for its SESSION STATUS deltas."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, poolclass=StaticPool)

    def status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SHOW SESSION STATUS WHERE Variable_name IN :names").bindparams(
                sa.bindparam("names", expanding=True)), {"names": list(COUNTERS)}).all()
        return {k: int(v) for k, v in rows if k in COUNTERS}

    def plan(self, name: str, **kw):
        """(seconds, plan, handler deltas) of one make_plan on this session."""
        before = self.status()
        t0 = time.perf_counter()
        plan = make_plan(self.engine, name, use_cache=False, **kw)
        seconds = time.perf_counter() - t0
        after = self.status()
        return seconds, plan, {k: after[k] - before[k] for k in COUNTERS}


def load_keys(engine, keys, name: str) -> str:
    """A key-only InnoDB table holding ``keys`` (numpy int64, sorted), loaded in 100k-row INSERTs."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY)")
    for i in range(0, len(keys), 100_000):
        chunk = keys[i : i + 100_000]
        with engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {name} (id) VALUES " + ",".join(f"({int(k)})" for k in chunk.tolist()))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {name}")
    return name


def shape_keys(shape: str, rows: int):
    """Keys of a fixture shape, or of ``burst``: one key in 10,000 for a sixth of the rows, then dense."""
    import numpy as np

    from sparsesync.bench.fixtures import generate

    if shape != "burst":
        return generate(shape, rows, seed=8).keys
    sparse = rows // 6
    head = np.arange(1, sparse + 1, dtype=np.int64) * 10_000
    return np.concatenate([head, head[-1] + np.arange(1, rows - sparse + 1, dtype=np.int64)])


def within_2x(engine, name: str, plan) -> tuple[int, int, float]:
    """(ranges holding ≤ 2× their estimate, ranges, worst actual/estimate) — heavy ranges excluded."""
    actual = actual_counts(engine, name, plan)
    body = [(r.est_rows, a) for r, a in zip(plan.ranges, actual) if r.hi is not None and r.label != "heavy"]
    ok = sum(1 for e, a in body if a <= 2 * e)
    worst = max((a / e if e else float("inf")) for e, a in body) if body else 0.0
    return ok, len(body), worst


def random_table(engine, kind: str, *, seed: int, draws: int, dense_from: int = 0, dense: int = 0) -> str:
    """``draws`` random keys over 5·10^7 (duplicates dropped), then ``dense`` keys after ``dense_from``."""
    name = f"bench_{kind}_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, v INT)")
        conn.exec_driver_sql(f"INSERT IGNORE INTO {name} (id) SELECT FLOOR(RAND({seed}) * 50000000) FROM seq_1_to_{draws}")
        if dense:
            conn.exec_driver_sql(f"INSERT INTO {name} (id) SELECT {dense_from} + seq FROM seq_1_to_{dense}")
        conn.exec_driver_sql(f"ANALYZE TABLE {name}")
    return name


def section_prescan(args, engine, say, created) -> None:
    """Acceptance 3a/3b: refinement cost and one pass over the index."""
    name = random_table(engine, "random", seed=8, draws=1_050_000)
    created.append(name)
    with engine.connect() as conn:
        rows = int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {name}").scalar())
    sess = Session(args.url)
    say()
    say(f"## 4. Exact pre-scan cost: {rows:,} random keys over 5·10^7 (InnoDB, BIGINT PRIMARY KEY + INT)")
    say()
    say(f"Paired runs, rows_per_query 100,000 then 2,000 then 1,000, {args.repeat} rounds. Handler_read_* are SESSION STATUS")
    say("deltas of the planner's one connection (introspection included).")
    say()
    say("| rows_per_query | ranges | pre-scan statements | Handler_read_next | per row | Handler_read_key | time s (median) |")
    say("|---|---|---|---|---|---|---|")
    times: dict[int, list[float]] = {100_000: [], 2_000: [], 1_000: []}
    info: dict[int, tuple] = {}
    for _ in range(args.repeat):
        for rpq in times:
            t, plan, h = sess.plan(name, rows_per_query=rpq, density="exact")
            times[rpq].append(t)
            info[rpq] = (len(plan.ranges), plan.strategy.prescan_queries, h)
            assert plan.estimates.rows == rows
    for rpq in times:
        n_ranges, stmts, h = info[rpq]
        say(
            f"| {rpq:,} | {n_ranges:,} | {stmts} | {h['Handler_read_next']:,} | {h['Handler_read_next'] / rows:.3f} | "
            f"{h['Handler_read_key']:,} | {statistics.median(times[rpq]):.2f} |"
        )
    say()
    for rpq in (2_000, 1_000):
        ratios = [b / a for a, b in zip(times[100_000], times[rpq])]
        say(f"Time at {rpq:,} / time at 100,000, per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
            f"median **{statistics.median(ratios):.2f}×** (target at 2,000: ≤ 3×).  ")
    sess.engine.dispose()


def section_shapes(args, engine, say, created) -> None:
    """Acceptance 3c: sampled statements and index reads on 1M and 10M rows per shape."""
    from sparsesync.bench.fixtures import SHAPES

    sess = Session(args.url)
    say()
    say("## 5. Sampled pre-scan on the fixture shapes (rows_per_query 100,000)")
    say()
    say("Statements: the server's Com_select delta of the planner's connection minus the SELECTs of introspection")
    say("alone (measured once on the same table; the general log is shared with other engineers' runs). Index reads: sum of")
    say("Handler_read_{first,last,key,next,prev} SESSION STATUS deltas of the planner's connection. Within 2×:")
    say("ranges holding at most 2× their estimate (each range counted with COUNT(*) afterwards).")
    say()
    say("| shape | rows | ranges | within 2× | worst actual/est | sampled statements | sampled index reads | reads per row | sampled s | exact Handler_read_next / rows | exact s |")
    say("|---|---|---|---|---|---|---|---|---|---|---|")
    for rows in args.shape_rows:
        for shape in list(args.shapes or SHAPES) + ["burst"]:
            t0 = time.perf_counter()
            keys = shape_keys(shape, rows)
            name = load_keys(engine, keys, f"bench_{shape}_{uuid.uuid4().hex[:6]}")
            created.append(name)
            print(f"  loaded {name}: {len(keys):,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
            before = sess.status()
            from sparsesync.planner.introspect import introspect

            introspect(sess.engine, name)
            base_selects = sess.status()["Com_select"] - before["Com_select"]
            ts, sp, h = sess.plan(name, rows_per_query=100_000, density="sampled")
            stmts = h["Com_select"] - base_selects
            reads = sum(h[k] for k in HANDLERS)
            ok, n, worst = within_2x(engine, name, sp)
            te, ex, he = sess.plan(name, rows_per_query=100_000, density="exact")
            say(
                f"| {shape} | {len(keys):,} | {n} | {ok}/{n} | {worst:.2f} | {stmts} | {reads:,} | {reads / len(keys):.4f} | "
                f"{ts:.2f} | {he['Handler_read_next'] / len(keys):.2f} | {te:.2f} |"
            )
            drop(engine, name)
            created.remove(name)
    sess.engine.dispose()


def section_show(args, engine, say, created) -> None:
    """Acceptance 4: show and --png on a plan of ~10k ranges."""
    name = random_table(engine, "show", seed=10, draws=1_010_000, dense_from=60_000_000, dense=200_000)
    created.append(name)
    plan = make_plan(engine, name, rows_per_query=120, density="exact", use_cache=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench_show_"))
    path = plan.save(tmp / "plan.json")
    png = Path(args.out).parent / "planner-show-10k-ranges.png"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cli = [sys.executable, "-m", "sparsesync"]

    def run(*extra) -> float:
        t0 = time.perf_counter()
        subprocess.run(cli + list(extra), check=True, capture_output=True, env=env)
        return time.perf_counter() - t0

    from sparsesync.planner.chart import render_png
    from sparsesync.planner.plan import load_plan
    from sparsesync.planner.show import summarize

    base, show_t, png_t, lib_show, lib_png = [], [], [], [], []
    for _ in range(args.repeat):
        base.append(run("--help"))
        show_t.append(run("show", str(path)))
        png_t.append(run("show", str(path), "--png", str(tmp / "p.png")))
        t0 = time.perf_counter()
        p = load_plan(path)
        summarize(p)
        lib_show.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        render_png(p, png)
        lib_png.append(time.perf_counter() - t0)
    med = statistics.median
    say()
    say(f"## 6. `show` on a plan of {len(plan.ranges):,} ranges, {plan.estimates.files} files, "
        f"{plan.histogram.gaps_total:,} gaps ({len(plan.histogram.gaps)} listed), {path.stat().st_size / 1e6:.2f} MB")
    say()
    say(f"Median of {args.repeat}. CLI = `python -m sparsesync …` in a new process (interpreter start and imports")
    say("included); `sparsesync --help` in the same way is the reference for that fixed cost.")
    say()
    say("| what | CLI s | in-process s |")
    say("|---|---|---|")
    say(f"| `sparsesync --help` (reference) | {med(base):.2f} | |")
    say(f"| `show PLAN` | {med(show_t):.2f} | {med(lib_show):.2f} (load + summarize) |")
    say(f"| `show PLAN --png` | {med(png_t):.2f} | {med(lib_png):.2f} (render_png) |")
    say()
    say(f"PNG: [{png.name}]({png.name}) (looked at: density visible, boundaries as a rug of ticks).")


class _Done(Exception):
    """The sections asked for are finished."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/planner.md")
    ap.add_argument("--sections", default="outliers,shaped,prescan,shapes,show",
                    help="comma-separated: outliers, shaped (with the warm cache), prescan, shapes, show")
    ap.add_argument("--shape-rows", default="1000000,10000000", help="table sizes for the shapes section")
    ap.add_argument("--shapes", default="", help="fixture shapes for the shapes section (default: all 7)")
    args = ap.parse_args(argv)
    args.shape_rows = [int(x) for x in args.shape_rows.split(",") if x]
    args.shapes = [x for x in args.shapes.split(",") if x]
    sections = set(args.sections.split(","))
    engine = sa.create_engine(args.url)
    lines: list[str] = []
    say = lambda s="": (print(s, flush=True), lines.append(s))  # noqa: E731
    say("# Planner benchmark")
    say()
    say(f"Command: `.venv/bin/python -m benchmarks.bench_planner {' '.join(sys.argv[1:] if argv is None else argv)}`  ")
    say(f"Machine: {machine()}  ")
    say(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the machine was shared with other test runs.")
    created: list[str] = []
    tmp = tempfile.mkdtemp(prefix="bench_planner_")
    try:
        with QueryLog(engine) as log:
            if "prescan" in sections:
                section_prescan(args, engine, say, created)
            if "shapes" in sections:
                section_shapes(args, engine, say, created)
            if "show" in sections:
                section_show(args, engine, say, created)
            if "outliers" not in sections:
                raise _Done
            # 1. outliers
            n = args.rows
            name = create(engine, "outliers", n)
            created.append(name)
            say()
            say(f"## 1. {n:,} dense ids + 3 ids near 4·10^18 (rows_per_query 100,000)")
            say()
            say("| density | ranges | bound ⌈N/rpq⌉+1 | outliers found | pre-scan statements (server) | time s |")
            say("|---|---|---|---|---|---|")
            bound = math.ceil((n + 3) / 100_000) + 1
            for d in ("exact", "sampled"):
                log.mark()
                t, plan = timed(lambda: make_plan(engine, name, density=d, use_cache=False), 1)
                say(f"| {d} | {len(plan.ranges)} | {bound} | {len(plan.histogram.outliers)} | {log.count(name)} | {t:.2f} |")
            if "shaped" not in sections:
                raise _Done
            # 2. + 3. shaped tables
            say()
            say("## 2. Sampled accuracy and statement count vs table size (same number of ranges)")
            say()
            say("| rows | rows_per_query | ranges | within 2× | worst ratio est/actual | sampled statements | sampled s | exact statements | exact s |")
            say("|---|---|---|---|---|---|---|---|---|")
            shaped = {}
            for rows in (args.rows, args.rows * args.scale):
                t0 = time.perf_counter()
                name = create(engine, "shaped", rows)
                created.append(name)
                shaped[rows] = name
                print(f"  created {name} with {rows:,} rows in {time.perf_counter() - t0:.1f} s", flush=True)
                rpq = rows // 40
                log.mark()
                ts, sp = timed(lambda: make_plan(engine, name, rows_per_query=rpq, density="sampled", use_cache=False), args.repeat)
                s_stmts = log.count(name) // args.repeat
                log.mark()
                te, ex = timed(lambda: make_plan(engine, name, rows_per_query=rpq, density="exact", use_cache=False), 1)
                e_stmts = log.count(name)
                actual = actual_counts(engine, name, sp)
                body = [(r.est_rows, a) for r, a in zip(sp.ranges, actual) if r.hi is not None]
                ok = sum(1 for e, a in body if a / 2 <= e <= 2 * a)
                worst = max((max(e / a, a / e) if a and e else float("inf")) for e, a in body)
                say(f"| {rows:,} | {rpq:,} | {len(body)} | {ok}/{len(body)} ({100 * ok / len(body):.0f} %) | {worst:.2f} | {s_stmts} | {ts:.2f} | {e_stmts} | {te:.2f} |")
            say()
            say("## 3. Cold plan (exact scan, cache written) vs warm re-plan (cache hit)")
            say()
            say("| rows | cold s | warm s (median) | speed-up | warm statements against the table |")
            say("|---|---|---|---|---|")
            for rows, name in shaped.items():
                cache = str(Path(tmp) / f"{name}.duckdb")
                rpq = rows // 40
                tc, cold = timed(lambda: make_plan(engine, name, rows_per_query=rpq, density="exact", cache_path=cache), 1)
                log.mark()
                tw, warm = timed(lambda: make_plan(engine, name, rows_per_query=rpq, density="exact", cache_path=cache), args.repeat)
                w_stmts = log.count(name) // args.repeat
                assert warm.strategy.from_cache and warm.ranges == cold.ranges
                say(f"| {rows:,} | {tc:.2f} | {tw:.3f} | {tc / tw:.0f}× | {w_stmts} (MIN/MAX probe) |")
    except _Done:
        pass
    finally:
        for name in created:
            drop(engine, name)
        engine.dispose()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
