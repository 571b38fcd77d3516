"""What the next ``sync`` costs after a schema change, per kind of change (issue 16, acceptance 4).

On one ~200k-row MariaDB table and its image (local directory), per ``--detect`` mode: a first sync, a
plain sync with no change (reference), then one ALTER per kind of change, each followed by one plain
``sync`` that carries it over (sparsesync.sync.evolve), and last a ``--full`` re-sync (reference). For each
sync: rows read on the server (``information_schema.TABLE_STATISTICS.ROWS_READ`` of this table only, with
``userstat``: other clients' traffic does not count; the ALTER's own reads are taken before the sync),
rows the sync exported, parts and bytes rewritten at the destination, rows re-exported because of the
change, and wall time.

Run:  .venv/bin/python -m benchmarks.bench_schema_change [--rows 200000] [--detect checksum,none]
      [--file-size-mb 1] [--out benchmarks/results/schema-change.md]
The table ``bench_evolve_*`` is created with MariaDB's sequence engine and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from sparsesync.bench.harness import machine_info
from sparsesync.sync.table import SyncOptions, sync_table

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

DDL = """CREATE TABLE {name} (
  id BIGINT NOT NULL PRIMARY KEY, a INT NULL, f FLOAT NULL, d DECIMAL(10,2) NULL, v VARCHAR(40) NULL,
  c VARCHAR(32) NULL, i VARCHAR(64) NULL
) ENGINE=InnoDB"""
FILL = """INSERT INTO {name} (id, a, f, d, v, c, i)
SELECT seq * 3, MOD(seq, 100000), seq / 8, MOD(seq, 1000000) / 100, CONCAT('v-', seq), CONCAT('name-', MOD(seq, 9973)),
       MD5(seq) FROM seq_1_to_{n}"""

# (label, ALTER) in order: each change is applied to the table as the previous ones left it
CHANGES = [
    ("ADD nullable, no default", "ALTER TABLE {t} ADD COLUMN x INT NULL"),
    ("ADD NOT NULL DEFAULT 7", "ALTER TABLE {t} ADD COLUMN y INT NOT NULL DEFAULT 7"),
    ("DROP COLUMN", "ALTER TABLE {t} DROP COLUMN y"),
    ("RENAME COLUMN", "ALTER TABLE {t} RENAME COLUMN c TO c2"),
    ("INT -> BIGINT", "ALTER TABLE {t} MODIFY a BIGINT NULL"),
    ("FLOAT -> DOUBLE", "ALTER TABLE {t} MODIFY f DOUBLE NULL"),
    ("DECIMAL(10,2) -> DECIMAL(14,2)", "ALTER TABLE {t} MODIFY d DECIMAL(14,2) NULL"),
    ("VARCHAR(40) -> VARCHAR(80)", "ALTER TABLE {t} MODIFY v VARCHAR(80) NULL"),
]


def rows_read(engine, table: str) -> int:
    with engine.connect() as conn:
        got = conn.exec_driver_sql("SELECT ROWS_READ FROM information_schema.TABLE_STATISTICS "
                                   "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,)).scalar()
    return int(got or 0)


def one_sync(url, engine, table, dest, opts) -> dict:
    before = rows_read(engine, table)
    t0 = time.perf_counter()
    r = sync_table(url, table, dest, opts, raise_errors=True)
    wall = time.perf_counter() - t0
    sc = r.schema_change or {}
    return {"wall_s": round(wall, 2), "server_rows_read": rows_read(engine, table) - before,
            "rows_exported": r.rows_read, "bytes_exported": r.bytes_written, "kind": r.kind,
            "spans_reexported": r.spans_reexported, "parts_rewritten": sc.get("parts_rewritten", 0),
            "bytes_rewritten": sc.get("bytes_rewritten", 0), "rows_reexported_for_change": sc.get("rows_reexported", 0),
            "changes": [c["kind"] for c in sc.get("changes", [])], "verified": sc.get("verified"),
            "schema_version": r.schema_version, "rows_in_image": r.rows_in_image}


def run_mode(url, engine, rows: int, detect: str, file_size_mb: float, rows_per_query: int) -> list[tuple[str, dict]]:
    table = f"bench_evolve_{uuid.uuid4().hex[:8]}"
    dest = tempfile.mkdtemp(prefix="bench-evolve-")
    cache = str(Path(dest) / "histograms.duckdb")  # this run's own planner cache
    opts = SyncOptions(detect=detect, file_size_mb=file_size_mb, rows_per_query=rows_per_query, cache_path=cache)
    out = []
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(DDL.format(name=table))
            conn.exec_driver_sql(FILL.format(name=table, n=rows))
        out.append(("first sync", one_sync(url, engine, table, dest, opts)))
        out.append(("no change (reference)", one_sync(url, engine, table, dest, opts)))
        for label, sql in CHANGES:
            with engine.begin() as conn:
                conn.exec_driver_sql(sql.format(t=f"`{table}`"))
            out.append((label, one_sync(url, engine, table, dest, opts)))
            print(f"  {detect:9s} {label:32s} {json.dumps(out[-1][1])}", file=sys.stderr, flush=True)
        out.append(("--full (reference)", one_sync(url, engine, table, dest, SyncOptions(
            detect=detect, file_size_mb=file_size_mb, rows_per_query=rows_per_query, cache_path=cache, full=True))))
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
        shutil.rmtree(dest, ignore_errors=True)
    return out


def markdown(args, results: dict[str, list[tuple[str, dict]]], load: tuple, started: str) -> str:
    m = machine_info()
    lines = [
        "# Cost of the next `sync` after a schema change",
        "",
        f"Command: `.venv/bin/python -m benchmarks.bench_schema_change --rows {args.rows} --detect {args.detect} "
        f"--file-size-mb {args.file_size_mb} --rows-per-query {args.rows_per_query}`",
        f"Date: {started} UTC. Machine: {m['nproc']} vCPU, {m['memory']}, Python {m['python']}, {m['platform']}; "
        f"MariaDB on the same machine, local destination. **Shared with other jobs**: load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start, so wall times are noisy; the row and byte "
        "counts are exact.",
        "",
        f"One table of {args.rows:,} rows × 7 columns, changed one ALTER at a time (each row: the `sync` right "
        "after that ALTER, on the image the previous rows left). *server rows read*: "
        "`TABLE_STATISTICS.ROWS_READ` of the table during that sync (the ALTER's own reads excluded). "
        "*rows exported*: rows the sync read into new parts. *rewritten*: parts (and bytes) rewritten at the "
        "destination from the image's own parts. *re-exported for the change*: rows of spans the change "
        "needed from the source (an ADD with a default, a failed verification).",
        "",
    ]
    for detect, rows in results.items():
        lines += [f"## `--detect {detect}`", "",
                  "| sync | server rows read | rows exported | parts rewritten | MB rewritten | rows re-exported for the change | wall s | verified |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for label, r in rows:
            lines.append(f"| {label} | {r['server_rows_read']:,} | {r['rows_exported']:,} | {r['parts_rewritten']} | "
                         f"{r['bytes_rewritten'] / 1e6:.2f} | {r['rows_reexported_for_change']:,} | {r['wall_s']:.2f} | "
                         f"{r['verified'] or ''} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--detect", default="checksum,none", help="comma-separated --detect modes (default checksum,none)")
    ap.add_argument("--file-size-mb", type=float, default=1.0)
    ap.add_argument("--rows-per-query", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown here (e.g. benchmarks/results/schema-change.md)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    engine = sa.create_engine(args.url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET GLOBAL userstat = 1")  # left on (tests/sync/test_evolve.py counts with it too)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()
    try:
        results = {d: run_mode(args.url, engine, args.rows, d, args.file_size_mb, args.rows_per_query)
                   for d in args.detect.split(",")}
    finally:
        engine.dispose()
    md = markdown(args, results, load, started)
    print(md)
    if args.out:
        args.out.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
