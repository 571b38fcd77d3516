"""Transient faults on a 1M-row export: connections killed three times, the run finishes by itself, exactly.

For each reader, paired and repeated: a reference export with no fault, then the same plan exported while
another connection runs ``KILL CONNECTION`` on the export's connection three times (at 20 %, 40 % and 60 %
of the rows: pymysql's streaming connection; connectorx's next range query, caught waiting on a brief
``LOCK TABLES … WRITE``). Each fault export must finish on its own with every row exactly once (COUNT,
COUNT DISTINCT and SUM of the keys read back with DuckDB equal the table's) and three retries in its
report. The cost of a fault is the redone file group: the ratio fault/reference says what three cost.

Run:  .venv/bin/python -m benchmarks.bench_faults [--rows 1000000] [--repeat 2] [--readers connectorx,pymysql]
The export connects as a MariaDB user made for the run (so its connections can be found and killed);
the table ``bench_faults_*`` (sequence engine) and the user are dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import duckdb
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from benchmarks.bench_executor import DEFAULT_URL, drop_table, machine, make_table
from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.planner.api import make_plan


def user_connections(conn, user: str, busy_only: bool = False) -> list[int]:
    """Ids of ``user``'s connections (only those running a statement with ``busy_only``), not ``conn``'s own."""
    busy = " AND COMMAND <> 'Sleep'" if busy_only else ""
    rows = conn.exec_driver_sql(
        f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> CONNECTION_ID(){busy} ORDER BY ID",
        (user,),
    ).all()
    return [int(r[0]) for r in rows]


def kill_one_busy(engine, user: str) -> bool:
    """``KILL CONNECTION`` one connection of ``user`` that is running a statement; False if none is."""
    with engine.begin() as conn:
        for pid in user_connections(conn, user, busy_only=True)[:1]:
            try:
                conn.exec_driver_sql(f"KILL CONNECTION {pid}")
                return True
            except sa.exc.OperationalError:
                return False  # it ended by itself meanwhile
    return False


_KILL_NEXT = """
import sys, time
import sqlalchemy as sa
from benchmarks.bench_faults import kill_one_busy
engine = sa.create_engine(sys.argv[1])
with engine.connect() as conn:
    conn.exec_driver_sql("LOCK TABLES " + sys.argv[3] + " WRITE")
    print("locked", flush=True)
    deadline = time.monotonic() + float(sys.argv[4])
    try:
        while time.monotonic() < deadline and not kill_one_busy(engine, sys.argv[2]):
            time.sleep(0.005)
    finally:
        conn.exec_driver_sql("UNLOCK TABLES")
"""


class _Waiter:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def join(self) -> None:
        self.proc.wait(120)


def kill_next_query(engine, user: str, table: str, timeout_s: float = 30.0) -> _Waiter:
    """Hold ``LOCK TABLES table WRITE`` until a query of ``user`` waits on it, kill that one, unlock.

    For readers that open a connection per query (connectorx) and may have received a whole range before
    the caller sees its first batch: the *next* range query is caught waiting, so the kill lands mid-query.
    It runs in a child process: connectorx keeps the GIL while it waits for its server.
    """
    url = engine.url.render_as_string(hide_password=False)
    quoted = engine.dialect.identifier_preparer.quote(table)
    proc = subprocess.Popen([sys.executable, "-c", _KILL_NEXT, url, user, quoted, str(timeout_s)],
                            stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parent.parent))
    proc.stdout.readline()  # "locked": the next range query will wait for it
    return _Waiter(proc)


def killer(engine, user: str, marks: list[int], table: str | None = None):
    """A progress callback killing the export's connection once per row mark; the kill log.

    Without ``table``: one connection of ``user`` streaming rows right now (tried again at the next batch
    until one is). With ``table``: when a range has ended past the mark, the next query of ``user`` on it
    (see :func:`kill_next_query`; at a range's end connectorx holds no lock on the table).
    """
    left, log, mutex, threads = list(marks), [], threading.Lock(), []
    kind = "batch" if table is None else "range"

    def progress(ev) -> None:
        with mutex:
            if ev.kind != kind or not left or ev.rows_done < left[0]:
                return
            for t in threads:
                t.join()  # one kill at a time
            if table is not None:
                threads.append(kill_next_query(engine, user, table))
            elif not kill_one_busy(engine, user):
                return  # none streaming: try at the next batch
            log.append((left.pop(0), time.monotonic()))

    progress.threads = threads
    return progress, log


def read_back(dest: Path, plan) -> tuple[int, int, int]:
    manifest = json.loads((dest / output_folder(plan) / "manifest.json").read_text())
    listing = "[" + ", ".join(f"'{e['url']}'" for e in manifest["entries"]) + "]"
    return duckdb.sql(f"SELECT COUNT(*), COUNT(DISTINCT id), SUM(id) FROM read_parquet({listing})").fetchall()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--readers", default="connectorx,pymysql")
    ap.add_argument("--file-size-mb", type=int, default=32, help="smaller groups: a fault redoes less")
    ap.add_argument("--out", default="benchmarks/results/faults.md")
    args = ap.parse_args()

    admin = sa.create_engine(args.url)
    table = f"bench_faults_{uuid.uuid4().hex[:8]}"
    user, password = f"sps_bf_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:12]
    db = make_url(args.url).database
    url = make_url(args.url).set(username=user, password=password).render_as_string(hide_password=False)
    results: list[dict] = []
    try:
        make_table(admin, table, args.rows)
        with admin.begin() as conn:
            for host in ("%%", "localhost"):
                conn.exec_driver_sql(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
                conn.exec_driver_sql(f"GRANT SELECT ON `{db}`.* TO '{user}'@'{host}'")
            truth = tuple(int(v) for v in conn.exec_driver_sql(
                f"SELECT COUNT(*), COUNT(DISTINCT id), SUM(id) FROM {table}").one())
        plan = make_plan(url, table, file_size=args.file_size_mb * 1024 * 1024, use_cache=False)
        marks = [args.rows // 5, 2 * args.rows // 5, 3 * args.rows // 5]
        for rep in range(args.repeat):
            for reader in args.readers.split(","):
                for mode in ("reference", "faults"):
                    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
                        # connectorx may hold a whole range before we see its first batch: catch its next query
                        how = table if reader == "connectorx" else None
                        progress, kills = killer(admin, user, marks, how) if mode == "faults" else (None, [])
                        t0 = time.monotonic()
                        report = execute_plan(plan, tmp, source_url=url, reader=reader, progress=progress,
                                              retry_base_s=0.5)
                        seconds = time.monotonic() - t0
                        got = tuple(int(v) for v in read_back(Path(tmp), plan))
                    exact = got == truth
                    assert exact, (reader, mode, got, truth)
                    for t in getattr(progress, "threads", []):
                        t.join()
                    assert mode == "reference" or (len(kills) == 3 and report.retries == 3), (kills, report.retries)
                    results.append({"rep": rep + 1, "reader": reader, "mode": mode, "seconds": seconds,
                                    "retries": report.retries, "kills": len(kills), "rows": report.rows,
                                    "exact": exact, "consistency": report.consistency,
                                    "retried_ranges": report.retried_ranges})
                    print(json.dumps(results[-1]), flush=True)
    finally:
        drop_table(admin, table)
        with admin.begin() as conn:
            for host in ("%%", "localhost"):
                conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")
        admin.dispose()

    lines = [
        "# Transient faults: three killed connections during a 1M-row export",
        "",
        f"Command: `.venv/bin/python -m benchmarks.bench_faults --rows {args.rows} --repeat {args.repeat} "
        f"--readers {args.readers} --file-size-mb {args.file_size_mb}`",
        "",
        f"Machine: {machine()}",
        "",
        "The machine is shared with five other engineers' test runs: timings are noisy; each fault run is",
        "paired with a reference run of the same reader in the same repetition.",
        "",
        f"Table: {args.rows:,} rows × 10 columns (benchmarks.bench_executor's table); plan: {len(plan.ranges)} ranges, "
        f"{len(plan.files)} file group(s) of ≤ {args.file_size_mb} MB; kills at rows {', '.join(f'{m:,}' for m in marks)} "
        "(`KILL CONNECTION` from another connection: pymysql's streaming connection; connectorx's next range query, "
        "held by a brief `LOCK TABLES … WRITE` so the kill lands mid-query).",
        "",
        "| rep | reader | run | seconds | kills | retries | rows | every row once | consistency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['rep']} | {r['reader']} | {r['mode']} | {r['seconds']:.1f} | {r['kills']} | {r['retries']} | "
                     f"{r['rows']:,} | {'yes' if r['exact'] else 'NO'} | {r['consistency']} |")
    lines += ["", "| reader | median fault / reference time | runs |", "|---|---|---|"]
    for reader in args.readers.split(","):
        pairs = [(f["seconds"], ref["seconds"]) for f, ref in zip(
            [r for r in results if r["reader"] == reader and r["mode"] == "faults"],
            [r for r in results if r["reader"] == reader and r["mode"] == "reference"])]
        ratio = statistics.median(f / r for f, r in pairs)
        lines.append(f"| {reader} | {ratio:.2f}× | {len(pairs)} |")
    lines += ["", "Every row exactly once: COUNT(*), COUNT(DISTINCT id) and SUM(id) of the Parquet read back with "
              "DuckDB equal the table's in every run (asserted by the script)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
