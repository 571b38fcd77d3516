"""Wide rows: peak RSS and time of ``sparsesync execute`` on LONGBLOB + LONGTEXT rows, both readers.

For each reader and repetition, three child processes run back to back (order rotated per repetition), each
measured by ``os.wait4`` (wall time, peak RSS of that process alone):

* ``reference`` — the bare driver streams the whole table and drops it: connectorx ``arrow_stream`` with 64-row
  batches, or a pymysql ``SSCursor`` ``fetchmany(64)``; nothing converted or written;
* ``export`` — ``sparsesync execute`` with the default ``--memory-limit 512``;
* ``loose`` — the same with ``--memory-limit 16384``: batches of up to 256 MB and row groups of up to 2 GB,
  close to the row-bounded behaviour before issue 7 (a whole 1,000-row range per batch).

Run:  .venv/bin/python -m benchmarks.bench_wide_rows [--rows 3000] [--kb 100] [--repeat 3] [--out FILE]
The table ``bench_wide_*`` is created (random, incompressible values) and dropped afterwards.
"""

from __future__ import annotations

import argparse
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

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

REFERENCE = {
    "connectorx": (
        "import connectorx as cx, sys\n"
        "s = cx.read_sql(sys.argv[1], sys.argv[2], return_type='arrow_stream', batch_size=64)\n"
        "n = 0\n"
        "while True:\n"
        "    try:\n"
        "        n += s.read_next_batch().num_rows\n"
        "    except StopIteration:\n"
        "        break\n"
        "print(n)\n"
    ),
    "pymysql": (
        "import pymysql, pymysql.cursors, sys\n"
        "c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database='test')\n"
        "cur = c.cursor(pymysql.cursors.SSCursor)\n"
        "cur.execute(sys.argv[2])\n"
        "n = 0\n"
        "while rows := cur.fetchmany(64):\n"
        "    n += len(rows)\n"
        "print(n)\n"
    ),
}


def make_table(engine, name: str, rows: int, kb: int) -> None:
    """``rows`` rows of a LONGBLOB and a LONGTEXT of ``kb``/2 KB each, random (incompressible)."""
    half = kb * 1024 // 2
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, b LONGBLOB, t LONGTEXT) ENGINE=InnoDB")
    with engine.begin() as conn:
        for lo in range(0, rows, 50):
            batch = [{"id": i + 1, "b": os.urandom(half), "t": os.urandom(half // 2).hex()}
                     for i in range(lo, min(rows, lo + 50))]
            conn.execute(sa.text(f"INSERT INTO {name} VALUES (:id, :b, :t)"), batch)


def measure(argv: list[str], env: dict) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one child process, by ``os.wait4``."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    took = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({p.returncode}): {err[-500:]}")
    return took, usage.ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--kb", type=int, default=100)
    ap.add_argument("--file-size-mb", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here too")
    args = ap.parse_args()

    from sparsesync.planner.api import make_plan

    engine = sa.create_engine(args.url)
    name = f"bench_wide_{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    results: dict[tuple[str, str], list[tuple[float, int]]] = {}
    try:
        make_table(engine, name, args.rows, args.kb)
        with tempfile.TemporaryDirectory(prefix="bench-wide-") as tmp:
            plan = make_plan(engine, name, rows_per_query=1000, file_size=args.file_size_mb * 1024 * 1024,
                             use_cache=False)
            plan_path = plan.save(Path(tmp) / "plan.json")
            cx_url = sa.engine.make_url(args.url).set(drivername="mysql").render_as_string(hide_password=False)
            query = f"SELECT id, b, t FROM {name} ORDER BY id"
            for rep in range(args.repeat):
                for reader in ("pymysql", "connectorx"):
                    runs = {
                        "reference": [sys.executable, "-c", REFERENCE[reader], cx_url, query],
                        "export": [sys.executable, "-m", "sparsesync", "execute", str(plan_path), "--dest",
                                   f"{tmp}/out", "--source", args.url, "--reader", reader, "--overwrite"],
                        "loose": [sys.executable, "-m", "sparsesync", "execute", str(plan_path), "--dest",
                                  f"{tmp}/out", "--source", args.url, "--reader", reader, "--overwrite",
                                  "--memory-limit", "16384"],
                    }
                    order = list(runs)
                    order = order[rep % 3:] + order[: rep % 3]  # rotate so no variant always runs first
                    for kind in order:
                        results.setdefault((reader, kind), []).append(measure(runs[kind], env))
                        print(reader, kind, results[(reader, kind)][-1], flush=True)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        engine.dispose()

    lines = [
        f"{args.rows:,} rows × {args.kb} KB (LONGBLOB + LONGTEXT, random), --file-size {args.file_size_mb} MB, "
        f"{args.repeat} repetitions; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "",
        "| reader | run | time s (median) | time ratio vs reference (median of paired) | peak RSS MB (max) |",
        "|---|---|---|---|---|",
    ]
    for reader in ("pymysql", "connectorx"):
        ref = results[(reader, "reference")]
        for kind in ("reference", "export", "loose"):
            got = results[(reader, kind)]
            ratio = statistics.median(g[0] / r[0] for g, r in zip(got, ref))
            lines.append(f"| {reader} | {kind} | {statistics.median(g[0] for g in got):.2f} | {ratio:.2f} | "
                         f"{max(g[1] for g in got)} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
