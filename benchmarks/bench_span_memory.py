"""Memory of a span statement: peak RSS of ``sparsesync execute`` per range vs ``--consistency snapshot``.

ConnectorX reads a statement ahead of its consumer without a bound; a span statement (one per worker, the
whole chunk of the table) bounds it by draining into a queue of a few batches and spilling the rest to local
disk (``sparsesync.executor.spill``). This measures it on wide rows, the worst case (benchmarks/results/
snapshot.md, "Memory of a span statement"):

* ``rand`` — ``pad`` = two ``TO_BASE64(RANDOM_BYTES(1000))`` (2.7 KB, incompressible: the writer is slowest);
* ``repeat`` — ``pad`` = ``REPEAT('x', 4000)`` (compressible).

Each table is planned with ``--rows-per-query 5000`` (and, with ``--file-size MB``, a second plan in several
file groups, so that ``--workers 2`` really sends two statements); contenders, all with ConnectorX and a local
destination: the default per-range read, ``--consistency snapshot``, ``--consistency snapshot --workers 2``.
Each runs as its own process under GNU time (peak RSS ``%M``; ``benchmarks.procs``); what was spilled comes
from the run's ``_report.json``.

Run:  .venv/bin/python -m benchmarks.bench_span_memory [--rows 60000] [--repeat 1] [--file-size 32]
      [--tables rand,repeat]
from the checkout to measure (its code runs: ``benchmarks.procs.child_env``); for the code before a change,
copy this file into that checkout and run it there.
Needs MariaDB 10.10+ (``RANDOM_BYTES``, the Sequence engine); the tables ``bench_spanmem_*`` are dropped after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks import procs

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
PADS = {
    "rand": "CONCAT(TO_BASE64(RANDOM_BYTES(1000)), TO_BASE64(RANDOM_BYTES(1000)))",
    "repeat": "REPEAT('x', 4000)",
}


def make_table(engine, name: str, rows: int, pad: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, pad VARCHAR(4000) NOT NULL) ENGINE=InnoDB")
        for lo in range(0, rows, 20_000):
            conn.exec_driver_sql(f"INSERT INTO {name} SELECT seq, {pad} FROM seq_{lo + 1}_to_{min(rows, lo + 20_000)}")
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()  # real row sizes: --file-size gives several groups


def plan(url: str, table: str, out: Path, file_size: int | None) -> Path:
    argv = [sys.executable, "-m", "sparsesync", "plan", url, table, "--rows-per-query", "5000", "--no-cache",
            "-o", str(out)] + (["--file-size", str(file_size)] if file_size else [])
    subprocess.run(argv, env=procs.child_env(), check=True, stdout=subprocess.DEVNULL)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--file-size", type=int, default=None, help="MB: a second plan in several file groups")
    ap.add_argument("--tables", default="rand,repeat")
    args = ap.parse_args(argv)
    engine = sa.create_engine(args.url)
    work = Path(tempfile.mkdtemp(prefix="bench-spanmem-"))
    made: list[str] = []
    print(f"machine before: {procs.machine_state()}")
    try:
        lines = ["| table | plan | default (per-range) | `--consistency snapshot` | "
                 "`--consistency snapshot --workers 2` |", "|---|---|---|---|---|"]
        for kind in args.tables.split(","):
            name = f"bench_spanmem_{kind}_{uuid.uuid4().hex[:6]}"
            make_table(engine, name, args.rows, PADS[kind])
            made.append(name)
            plans = [("one group", plan(args.url, name, work / f"{name}.json", None))]
            if args.file_size:
                plans.append((f"--file-size {args.file_size}",
                              plan(args.url, name, work / f"{name}-fs.json", args.file_size)))
            for label, plan_path in plans:
                groups = len(json.loads(plan_path.read_text())["files"])
                base = [sys.executable, "-m", "sparsesync", "execute", str(plan_path), "--source", args.url,
                        "--reader", "connectorx", "--overwrite"]
                contenders = {
                    "per-range": base + ["--dest", str(work / "o-range")],
                    "snapshot": base + ["--dest", str(work / "o-snap1"), "--consistency", "snapshot"],
                    "snapshot-2": base + ["--dest", str(work / "o-snap2"), "--consistency", "snapshot",
                                          "--workers", "2"],
                }
                spilled: dict[str, list[float]] = {k: [] for k in contenders}

                def after(which: str, failed: bool = False) -> None:
                    dest = work / {"per-range": "o-range", "snapshot": "o-snap1", "snapshot-2": "o-snap2"}[which]
                    for rep in dest.rglob("_report.json"):
                        spill = json.loads(rep.read_text()).get("spill") or {}
                        spilled[which].append(spill.get("bytes", 0) / 1e6)
                    shutil.rmtree(dest, ignore_errors=True)

                series = procs.measure_rotated(contenders, args.repeat, after=after)

                def cell(k: str) -> str:
                    s = series[k]
                    sp = f", spilled {max(spilled[k]):.0f} MB" if spilled[k] and max(spilled[k]) else ""
                    return f"{s.median('rss_mb'):.0f} MB ({s.median('wall_s'):.1f} s{sp})"

                lines.append(f"| {kind} | {label} ({groups} group{'s' if groups != 1 else ''}) | "
                             + " | ".join(cell(k) for k in contenders) + " |")
        print("\n".join(lines))
        print(f"\nmachine after: {procs.machine_state()}")
    finally:
        with engine.begin() as conn:
            for name in made:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
