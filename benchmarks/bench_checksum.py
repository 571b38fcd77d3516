"""Cost of the independent checks (executor.checksum) against a full export of the same table.

In one invocation, on one table (default 1M rows, the executor benchmark's 10 mixed columns), each repeat
measures, in alternating order so drift in machine load hits both sides alike:

(ref)  a full export: ``execute_plan`` (default reader, verify off) into a fresh local directory;
(a)    server-side ``COUNT(*)`` per range (the end-of-run check);
(b)    server-side key checksum per range (``verify``);
(c)    server-side all-column checksum per range (``verify --all-columns``);
(d)    DuckDB's all-column twin over the exported Parquet parts.

Reported: the median of each and its ratio to the export of the same repeat.

Run:  .venv/bin/python -m benchmarks.bench_checksum [--rows 1000000] [--repeat 3]
The table ``bench_cksum_*`` is created with MariaDB's sequence engine and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bench_executor import drop_table, make_table

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()} {os.cpu_count()} CPU, Python {platform.python_version()}, load avg {load:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/checksum.md")
    args = ap.parse_args()

    import duckdb

    from sparsesync.executor.checksum import parquet_span_checksums, span_checksums, spans_of_plan
    from sparsesync.executor.run import execute_plan, output_folder
    from sparsesync.planner.api import make_plan

    engine = sa.create_engine(args.url)
    name = f"bench_cksum_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="sparsesync-bench-cksum-"))
    times: dict[str, list[float]] = {k: [] for k in ("export", "counts", "keys", "all", "duckdb_all")}
    try:
        print(f"creating {name} with {args.rows:,} rows …", flush=True)
        make_table(engine, name, args.rows)
        plan = make_plan(engine, name, use_cache=False)
        spans = spans_of_plan(plan)
        print(f"plan: {len(plan.ranges)} ranges, {len(plan.files)} file(s)", flush=True)
        checks = {
            "counts": lambda: span_checksums(engine, plan, spans, counts_only=True),
            "keys": lambda: span_checksums(engine, plan, spans, columns=[plan.source.key]),
            "all": lambda: span_checksums(engine, plan, spans),
        }
        for rep in range(args.repeat):
            dest = tmp / f"out-{rep}"

            def export():
                return execute_plan(plan, str(dest), engine=engine, verify=False).rows

            order = ["export", "counts", "keys", "all"] if rep % 2 == 0 else ["all", "keys", "counts", "export"]
            results = {}
            for what in order:
                t, results[what] = _timed(export if what == "export" else checks[what])
                times[what].append(t)
            parts = sorted(str(p) for p in (dest / output_folder(plan)).glob("*.parquet"))
            con = duckdb.connect()
            listing = "[" + ", ".join(f"'{p}'" for p in parts) + "]"
            t, (out, stray) = _timed(lambda: parquet_span_checksums(con, f"read_parquet({listing})", plan, spans))
            con.close()
            times["duckdb_all"].append(t)
            src = results["all"]
            assert results["export"] == args.rows == sum(c.rows for c in src)
            assert stray == 0 and [(c.rows, c.checksum) for c in src] == [(c.rows, c.checksum) for c in out]
            print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
            shutil.rmtree(dest, ignore_errors=True)
    finally:
        drop_table(engine, name)
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: statistics.median([a / b for a, b in zip(v, times["export"])]) for k, v in times.items()}
    labels = {
        "export": "full export (reference): execute_plan, default reader, local dir",
        "counts": "(a) server COUNT(*) per range (end-of-run check)",
        "keys": "(b) server key checksum per range (verify)",
        "all": "(c) server all-column checksum per range (verify --all-columns)",
        "duckdb_all": "(d) DuckDB all-column twin over the Parquet parts",
    }
    lines = [
        "# Independent checks: cost against a full export",
        "",
        f"Command: `python -m benchmarks.bench_checksum --rows {args.rows} --repeat {args.repeat}`  ",
        f"Machine: {_machine()}; MariaDB on 127.0.0.1. The machine is shared with other engineers' test runs: "
        "times are noisy, ratios are taken per repeat (same invocation, alternating order) and the median is shown.",
        "",
        f"Table: {args.rows:,} rows, 10 columns (BIGINT key, INT, BIGINT, 2× VARCHAR, DECIMAL, DOUBLE, DATETIME, "
        f"DATE, TINYINT); plan of {len(plan.ranges)} ranges. Every repeat checked that (c) and (d) agree on every range.",
        "",
        "| what | median s | ratio to the export (median of per-repeat ratios) |",
        "|---|---|---|",
    ]
    for k in times:
        lines.append(f"| {labels[k]} | {med[k]:.2f} | {ratio[k]:.2f} |")
    lines += ["", "Per repeat (s): " + "; ".join(
        f"{k}: " + ", ".join(f"{x:.2f}" for x in v) for k, v in times.items())]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
