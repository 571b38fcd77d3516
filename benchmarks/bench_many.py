"""Many tables under a connection budget: what the budget costs, and what parallel tables gain.

Reference: every table exported one after the other (plan + execute, pymysql reader, a plain pooled engine
per table). Against it, in the same process and the same repetition (paired, order rotated):
``sync_many`` doing the same plan + execute per table through budgeted engines (NullPool: every connect and
close counted) with ``--connections`` 1, 2 and 4. Ratios are medians of per-repetition ratios.

Run:  .venv/bin/python -m benchmarks.bench_many [--tables 6] [--rows 100000] [--repeat 3]
Tables live in a database ``sparsesync_bench_<random>`` that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from benchmarks.bench_executor import DDL, FILL
from sparsesync.executor.run import execute_plan
from sparsesync.planner.api import make_plan
from sparsesync.sync.many import sync_many

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


@dataclass(frozen=True)
class Opts:
    workers: int = 1
    reader: str = "pymysql"


def export_one(url_or_engine, table: str, dest: str) -> int:
    """Plan + execute one table (what a first sync run does); returns rows written."""
    plan = make_plan(url_or_engine, table, rows_per_query=20000, use_cache=False)
    engine = url_or_engine if isinstance(url_or_engine, sa.Engine) else None
    return execute_plan(plan, dest, source_url=None if engine else url_or_engine, engine=engine,
                        reader="pymysql", verify=False).rows


def sequential(url: str, tables: list[str], dest: str) -> float:
    t0 = time.perf_counter()
    for t in tables:
        engine = sa.create_engine(url)
        try:
            export_one(engine, t, dest)
        finally:
            engine.dispose()
    return time.perf_counter() - t0


def budgeted(url: str, tables: list[str], dest: str, connections: int) -> tuple[float, int]:
    def fn(source_url, table, dest, options, *, engine, events):
        rows = export_one(engine, table, dest)
        return {"table": table, "status": "ok", "rows_read": rows}

    t0 = time.perf_counter()
    summary = sync_many(url, tables, dest, Opts(), connections=connections, sync_fn=fn)
    assert not summary.failed, summary.failed
    return time.perf_counter() - t0, summary.peak_connections


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--tables", type=int, default=6)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    db = f"sparsesync_bench_{uuid.uuid4().hex[:8]}"
    root = sa.create_engine(args.url)
    with root.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{db}`")
    url = make_url(args.url).set(database=db).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    tables = [f"t{i}" for i in range(args.tables)]
    try:
        with engine.begin() as conn:
            for i, t in enumerate(tables):
                n = args.rows // (i + 1)  # different sizes: largest-first ordering matters
                conn.exec_driver_sql(DDL.format(name=t))
                conn.exec_driver_sql(FILL.format(name=t, n=n))
                conn.exec_driver_sql(f"ANALYZE TABLE {t}")
        variants = ["sequential", "budget c=1", "budget c=2", "budget c=4"]
        times: dict[str, list[float]] = {v: [] for v in variants}
        peaks: dict[str, int] = {}
        for rep in range(args.repeat):
            order = variants[rep % len(variants):] + variants[: rep % len(variants)]
            for v in order:
                with tempfile.TemporaryDirectory() as dest:
                    if v == "sequential":
                        times[v].append(sequential(url, tables, dest))
                    else:
                        c = int(v.split("=")[1])
                        s, peaks[v] = budgeted(url, tables, dest, c)
                        times[v].append(s)
        print(f"machine: {platform.node()} {os.cpu_count()} CPU, load average {os.getloadavg()}")
        print(f"{args.tables} tables, {sum(args.rows // (i + 1) for i in range(args.tables)):,} rows, {args.repeat} repetitions")
        print("| variant | median s | median ratio vs sequential | per-rep ratios | peak connections |")
        print("|---|---|---|---|---|")
        for v in variants:
            ratios = [a / b for a, b in zip(times[v], times["sequential"])]
            print(f"| {v} | {statistics.median(times[v]):.2f} | {statistics.median(ratios):.2f} | "
                  f"{', '.join(f'{r:.2f}' for r in ratios)} | {peaks.get(v, 1)} |")
    finally:
        engine.dispose()
        with root.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{db}`")
        root.dispose()


if __name__ == "__main__":
    main()
