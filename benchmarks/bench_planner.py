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

Times are wall-clock seconds in this process, median of ``--repeat`` runs; only ratios within one run
mean anything on a shared machine.
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

from benchmarks.counters import QueryLog
from planner.api import make_plan

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/planner.md")
    args = ap.parse_args(argv)
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
