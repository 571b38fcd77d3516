"""Executor throughput and memory: our readers + PartWriter against bare reference reads, in one process.

(a) connectorx reader + PartWriter over every planned range  vs  connectorx reading the whole table into
    one Parquet file (``pq.write_table``)                            → ratio, target ≤ 1.25
(b) pymysql reader + PartWriter                               vs  a bare pymysql SSCursor fetch of the
    whole table (no conversion, nothing written)                     → ratio, target ≤ 1.6
(c) peak RSS (VmHWM) of a child process exporting a 5M-row table through reader + writer → < 512 MB

Run:  .venv/bin/python -m benchmarks.bench_executor [--rows 1000000] [--big-rows 5000000] [--repeat 2]
Tables ``bench_exec_*`` are created with MariaDB's sequence engine and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

DDL = """CREATE TABLE {name} (
  id BIGINT NOT NULL PRIMARY KEY, a INT NOT NULL, b BIGINT, c VARCHAR(32), d DECIMAL(12,2), e DOUBLE,
  f DATETIME, g DATE, h TINYINT, i VARCHAR(64)
) ENGINE=InnoDB"""

# Sparse-ish keys (every 3rd id plus a far block) so the planner has real work; deterministic values.
FILL = """INSERT INTO {name}
SELECT seq * 3 + IF(seq > {n} * 0.9, 1000000000000, 0), MOD(seq, 100000), seq * 7919,
       CONCAT('name-', MOD(seq, 9973)), MOD(seq, 1000000) / 100, seq / 7,
       '2024-01-01' + INTERVAL MOD(seq, 86400) SECOND, '2020-01-01' + INTERVAL MOD(seq, 3650) DAY,
       MOD(seq, 100), MD5(seq)
FROM seq_1_to_{n}"""


def make_table(engine, name: str, n: int) -> None:
    """Create and fill ``name`` with ``n`` rows (sequence engine, one statement)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.exec_driver_sql(DDL.format(name=name))
        conn.exec_driver_sql(FILL.format(name=name, n=n))
        conn.exec_driver_sql(f"ANALYZE TABLE {name}")


def drop_table(engine, name: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def export(engine, plan, kind: str, out: Path) -> int:
    """Our path: every range through the reader, every group through PartWriter to a local directory."""
    from sparsesync.executor.readers import make_reader
    from sparsesync.executor.sink import LocalSink
    from sparsesync.executor.writer import PartWriter

    reader = make_reader(engine, plan, kind=kind)
    sink = LocalSink(out)
    rows = 0
    with reader.session() as s:
        for g in plan.files:
            w = PartWriter(sink, f"{plan.source.table}/{plan.plan_id}/{g.name}", plan.arrow_schema())
            for r in plan.ranges_of(g):
                for b in s.read_range(r):
                    w.write(b)
            rows += sum(p.rows for p in w.close())
    return rows


def cx_whole_table(engine, table: str, out: Path) -> int:
    """Reference (a): connectorx reads the whole table in one query; pyarrow writes one file."""
    import connectorx as cx
    import pyarrow.parquet as pq

    url = engine.url.set(drivername="mysql").render_as_string(hide_password=False)
    t = cx.read_sql(url, f"SELECT * FROM {table}", return_type="arrow")
    pq.write_table(t, out / "whole.parquet", compression="zstd")
    return t.num_rows


def pymysql_bare(engine, table: str) -> int:
    """Reference (b): a bare SSCursor fetch of the whole table, rows discarded."""
    import pymysql.cursors

    args, kwargs = engine.dialect.create_connect_args(engine.url)
    conn = pymysql.connect(*args, **kwargs)
    n = 0
    try:
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(f"SELECT * FROM {table}")
            while True:
                rows = cur.fetchmany(65536)
                if not rows:
                    break
                n += len(rows)
    finally:
        conn.close()
    return n


def timed(fn, *args) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t0, n


def child_export(url: str, plan_path: str, kind: str) -> None:
    """Child process for (c): export through reader + writer, print rows and VmHWM (peak RSS) as JSON."""
    from sparsesync.planner.plan import load_plan

    engine = sa.create_engine(url)
    plan = load_plan(plan_path)
    with tempfile.TemporaryDirectory() as d:
        t, rows = timed(export, engine, plan, kind, Path(d))
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"rows": rows, "seconds": t, "vmhwm_kb": hwm}))


def machine() -> str:
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    return f"nproc={os.cpu_count()}, python {platform.python_version()}, {platform.platform()}\n\n```\n{mem}\n```"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/executor.md")
    ap.add_argument("--child-kinds", default="connectorx,pymysql", help="readers measured for peak RSS (c)")
    ap.add_argument("--child", nargs=2, metavar=("PLAN", "KIND"), help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:
        child_export(ns.url, ns.child[0], ns.child[1])
        return

    from sparsesync.planner.api import make_plan

    engine = sa.create_engine(ns.url)
    name, big = f"bench_exec_{os.getpid()}", f"bench_exec_big_{os.getpid()}"
    lines: list[str] = []
    try:
        t0 = time.perf_counter()
        make_table(engine, name, ns.rows)
        print(f"filled {name}: {ns.rows} rows in {time.perf_counter() - t0:.1f}s", flush=True)
        plan = make_plan(engine, name, use_cache=False)
        print(f"plan: {len(plan.ranges)} ranges, {len(plan.files)} files", flush=True)
        best: dict[str, float] = {}
        for rep in range(ns.repeat):
            for label, fn, args in (
                ("cx_ours", export, (engine, plan, "connectorx")),
                ("cx_whole", cx_whole_table, (engine, name)),
                ("py_ours", export, (engine, plan, "pymysql")),
                ("py_bare", pymysql_bare, (engine, name)),
            ):
                with tempfile.TemporaryDirectory() as d:
                    full = args + ((Path(d),) if label != "py_bare" else ())
                    t, n = timed(fn, *full)
                assert n == ns.rows, (label, n)
                best[label] = min(best.get(label, t), t)
                print(f"  rep {rep}: {label:9s} {t:6.2f}s  ({n / t:,.0f} rows/s)", flush=True)
        ra = best["cx_ours"] / best["cx_whole"]
        rb = best["py_ours"] / best["py_bare"]

        t0 = time.perf_counter()
        make_table(engine, big, ns.big_rows)
        print(f"filled {big}: {ns.big_rows} rows in {time.perf_counter() - t0:.1f}s", flush=True)
        big_plan = make_plan(engine, big, use_cache=False)
        mem = {}
        with tempfile.TemporaryDirectory() as d:
            plan_path = big_plan.save(Path(d) / "plan.json")
            for kind in ns.child_kinds.split(","):
                res = subprocess.run([sys.executable, "-m", "benchmarks.bench_executor", "--url", ns.url,
                                      "--child", str(plan_path), kind], capture_output=True, text=True, check=True)
                mem[kind] = json.loads(res.stdout.strip().splitlines()[-1])
                assert mem[kind]["rows"] == ns.big_rows, mem[kind]
                print(f"  child {kind}: {mem[kind]}", flush=True)

        ok = lambda c: "met" if c else "MISSED"  # noqa: E731
        lines = [
            "# Executor benchmark (readers + PartWriter)", "",
            f"Command: `.venv/bin/python -m benchmarks.bench_executor --rows {ns.rows} --big-rows {ns.big_rows} "
            f"--repeat {ns.repeat} --child-kinds {ns.child_kinds}` (best of {ns.repeat}, same process, local MariaDB over loopback, zstd)", "",
            f"Machine: {machine()}", "",
            f"Table: {ns.rows:,} rows × 10 columns (BIGINT key every 3rd id + a far block; INT, BIGINT, VARCHAR, "
            f"DECIMAL, DOUBLE, DATETIME, DATE, TINYINT, VARCHAR(64)); plan: {len(plan.ranges)} ranges, "
            f"{len(plan.files)} file(s).", "",
            "| measure | ours | reference | ratio | target |", "|---|---|---|---|---|",
            f"| (a) connectorx reader + PartWriter vs connectorx whole table + pq.write_table | {best['cx_ours']:.2f}s "
            f"| {best['cx_whole']:.2f}s | {ra:.2f} | ≤ 1.25 ({ok(ra <= 1.25)}) |",
            f"| (b) pymysql reader + PartWriter vs bare pymysql SSCursor fetch | {best['py_ours']:.2f}s "
            f"| {best['py_bare']:.2f}s | {rb:.2f} | ≤ 1.6 ({ok(rb <= 1.6)}) |",
            "", f"(c) peak RSS (VmHWM) of a child exporting {ns.big_rows:,} rows "
            f"({len(big_plan.ranges)} ranges, {len(big_plan.files)} files):", "",
            "| reader | rows | seconds | VmHWM | target |", "|---|---|---|---|---|",
        ]
        for kind, m in mem.items():
            lines.append(f"| {kind} | {m['rows']:,} | {m['seconds']:.1f} | {m['vmhwm_kb'] / 1024:.0f} MB "
                         f"| < 512 MB ({ok(m['vmhwm_kb'] < 512 * 1024)}) |")
    finally:
        drop_table(engine, name)
        drop_table(engine, big)
        engine.dispose()
    if lines:
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
