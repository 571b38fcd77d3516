"""``--consistency snapshot`` against the wire floor (issue 11, goal 3): whole processes, paired and repeated.

Contenders on one MariaDB table (the 9-column fixture of :mod:`benchmarks.bench_peers`), each a whole child
process timed for wall, CPU and peak RSS (:mod:`benchmarks.procs`), in rotated order per repeat:

* the wire floor: ``mariadb --quick -e 'select * …'`` to /dev/null (C client, one connection, no Parquet);
* ``sparsesync execute --reader pymysql`` (the one-transaction route: one connection, one snapshot);
* ``sparsesync execute --consistency snapshot`` with 1 and 2 workers (connectorx reader: one statement per
  worker, views opened under ``LOCK TABLES READ``);
* ``sparsesync execute`` (default, per-range) for reference.

Every Parquet-writing run is checked for all rows; its ``_report.json`` must say ``consistency: snapshot``
for the snapshot contenders.

    python -m benchmarks.bench_snapshot --rows 1000000 --repeat 5 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bench_peers import DEFAULT_URL, make_table, rows_written, versions
from benchmarks.procs import machine_state, measure_rotated, ratio_table

WIRE = "wire floor (mariadb --quick)"
PYMYSQL = "execute --reader pymysql (1 connection, one transaction)"
SNAP1 = "execute --consistency snapshot"
SNAP2 = "execute --consistency snapshot --workers 2"
DEFAULT = "execute (default: per-range)"
SNAPSHOT_RUNS = (PYMYSQL, SNAP1, SNAP2)


def contenders(url: sa.engine.URL, table: str, plan_path: str, tmp: str) -> dict[str, list[str]]:
    """The command lines, keyed by contender name."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise SystemExit("bench_snapshot: the mariadb (or mysql) command-line client is needed for the wire floor")
    src = url.render_as_string(hide_password=False)
    execute = [sys.executable, "-m", "sparsesync", "execute", plan_path, "--source", src, "--overwrite"]
    return {
        WIRE: [client, "--quick", "-h", url.host or "127.0.0.1", "-P", str(url.port or 3306),
               "-u", url.username or "root", url.database or "test", "-e", f"SELECT * FROM `{table}`"],
        PYMYSQL: [*execute, "--dest", f"{tmp}/pymysql", "--reader", "pymysql"],
        SNAP1: [*execute, "--dest", f"{tmp}/snap1", "--consistency", "snapshot"],
        SNAP2: [*execute, "--dest", f"{tmp}/snap2", "--consistency", "snapshot", "--workers", "2"],
        DEFAULT: [*execute, "--dest", f"{tmp}/default"],
    }


def check_and_clean(tmp: str, name: str, rows: int) -> None:
    """Fail unless the run wrote every row (and, for snapshot runs, reported one snapshot); then clean up."""
    if name != WIRE:
        if (got := rows_written(tmp)) != rows:
            raise SystemExit(f"bench_snapshot: {name} wrote {got:,} rows, the table has {rows:,}")
        reports = [json.loads(p.read_text()) for p in Path(tmp).rglob("_report.json")]
        want = "snapshot" if name in SNAPSHOT_RUNS else "per-range"
        if len(reports) != 1 or reports[0]["consistency"] != want:
            raise SystemExit(f"bench_snapshot: {name} did not report consistency {want}: "
                             f"{[r['consistency'] for r in reports]}")
    for entry in Path(tmp).iterdir():
        if entry.name != "plan.json":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", default=None, help="reuse this table (made by an earlier --keep run)")
    ap.add_argument("--keep", action="store_true", help="keep the table for another run")
    ap.add_argument("--out", type=Path, default=None, help="write snapshot.md here")
    args = ap.parse_args(argv)

    from sparsesync.planner.api import make_plan

    url = sa.engine.make_url(args.url)
    if url.password:
        os.environ["MYSQL_PWD"] = url.password  # the mariadb client reads it from the environment, not argv
    table = args.table or f"bench_snapshot_{args.rows}_{uuid.uuid4().hex[:6]}"
    engine = sa.create_engine(args.url)
    try:
        if args.table is None:
            print(f"creating {table} ({args.rows:,} rows)…", flush=True)
            make_table(args.url, table, args.rows, args.seed)
        with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp:
            plan = make_plan(engine, table, use_cache=False)
            if len(plan.files) < 2:  # --workers 2 needs two file groups to share
                half = max(1 << 20, sum(f.est_bytes for f in plan.files) // 2 + 1)
                plan = make_plan(engine, table, file_size=half, use_cache=False)
            plan_path = str(plan.save(Path(tmp) / "plan.json"))
            before = machine_state()
            print(f"machine: {before}", flush=True)
            series = measure_rotated(contenders(url, table, plan_path, tmp), args.repeat,
                                     after=lambda name: check_and_clean(tmp, name, args.rows))
            after = machine_state()
        about = (f"{args.rows:,} rows × 9 columns (BIGINT, INT, DECIMAL, DATETIME(6), ENUM, JSON, VARCHAR, TINYINT(1), "
                 f"TIMESTAMP), plan: {len(plan.ranges)} ranges in {len(plan.files)} files; every Parquet output "
                 f"checked for all rows and its reported consistency; {args.repeat} rotated repeats, medians; "
                 f"{versions(engine)}")
    finally:
        if args.table is None and not args.keep:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
        engine.dispose()
    body = ratio_table(series, [WIRE, PYMYSQL])
    command = "python -m benchmarks.bench_snapshot " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"{body}\n\n{about}\n\ncommand: `{command}`\n\nmachine before: {before}\n\nmachine after: {after}\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        md = args.out / f"snapshot-{args.rows}.md"
        md.write_text(text, encoding="utf-8")
        print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
