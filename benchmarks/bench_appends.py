"""A tidy image after many small appends (issue 16, finding 6 and acceptance 4).

A 1M-row MariaDB table is synced once, then gets ``--runs`` append runs of ``--append`` rows each (0.1 %),
one ``sync`` after each. Recorded: the image's keyed part count and sizes after the runs against the target
``≤ 1.5 × ⌈image bytes / --file-size⌉``, what the tidy step cost per run (bytes read and rewritten, seconds),
and the total wall — for this checkout (``tidy``) and with the tidy step switched off in-process
(``baseline``: :func:`sparsesync.sync.tidy.split_rolled` and ``merge_small`` replaced by the identity, which is
what the code before the tidy step did: one part per file group, parts never merged).

Run:  .venv/bin/python -m benchmarks.bench_appends [--rows 1000000] [--runs 100] [--append 1000]
      [--file-size-mb 4] [--variants tidy,baseline] [--detect none|checksum] [--out benchmarks/results/tidy.md]
With ``--detect checksum`` each split or merged part's checksum is computed from its content with DuckDB (part of
the tidy seconds); with ``none`` (the default, so 100 runs at 1M rows finish in minutes) no checksum is kept.
The table ``bench_appends_*`` is created with MariaDB's sequence engine and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from sparsesync.bench.harness import machine_info
from sparsesync.sync import table as table_mod
from sparsesync.sync import tidy
from sparsesync.sync.table import SyncOptions, sync_table

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

DDL = """CREATE TABLE {name} (
  id BIGINT NOT NULL PRIMARY KEY, a INT NOT NULL, c VARCHAR(32), d DECIMAL(12,2), f DATETIME, i VARCHAR(64)
) ENGINE=InnoDB"""
FILL = """INSERT INTO {name} (id, a, c, d, f, i)
SELECT seq, MOD(seq, 100000), CONCAT('name-', MOD(seq, 9973)), MOD(seq, 1000000) / 100,
       '2024-01-01' + INTERVAL MOD(seq, 86400) SECOND, MD5(seq)
FROM seq_{lo}_to_{hi}"""


def _identity_split(sink, folder, plan, parts, stats=None):
    return parts


def _identity_merge(sink, folder, run_id, plan, parts, **kw):
    return parts


def run_variant(url: str, variant: str, rows: int, runs: int, append: int, file_size_mb: float, detect: str) -> dict:
    engine = sa.create_engine(url)
    name = f"bench_appends_{uuid.uuid4().hex[:8]}"
    saved = (tidy.split_rolled, tidy.merge_small)
    if variant == "baseline":
        table_mod.tidy.split_rolled, table_mod.tidy.merge_small = _identity_split, _identity_merge
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(DDL.format(name=name))
            conn.exec_driver_sql(FILL.format(name=name, lo=1, hi=rows))
        opts = SyncOptions(file_size_mb=file_size_mb, reader="pymysql", detect=detect)
        with tempfile.TemporaryDirectory(prefix="bench-appends-") as dest:
            t0 = time.perf_counter()
            first = sync_table(url, name, dest, opts, raise_errors=True)
            first_s = time.perf_counter() - t0
            per_run = []
            top = rows
            wall0 = time.perf_counter()
            for _ in range(runs):
                with engine.begin() as conn:
                    conn.exec_driver_sql(FILL.format(name=name, lo=top + 1, hi=top + append))
                top += append
                t = time.perf_counter()
                r = sync_table(url, name, dest, opts, raise_errors=True)
                per_run.append({"wall": time.perf_counter() - t, "rows_read": r.rows_read, **(r.tidy or {})})
            wall = time.perf_counter() - wall0
            state = json.loads((Path(dest) / name / "_state.json").read_text())
        parts = [p for p in state["parts"] if not p["nulls"]]
        files = [f for p in state["parts"] for f in [p, *p.get("more", ())] if f.get("path")]
        sizes = [p["bytes"] for p in parts]
        image_bytes = sum(sizes)
        f = int(file_size_mb * 1024 * 1024)
        target = 1.5 * -(-image_bytes // f)
        return {
            "variant": variant, "detect": detect, "rows": rows, "runs": runs, "append": append, "file_size_mb": file_size_mb,
            "first_seconds": first_s, "first_tidy": first.tidy, "rows_in_image": sum(p["rows"] for p in parts),
            "parts": len(parts), "files": len(files), "image_bytes": image_bytes, "target": target,
            "max_parts_allowed": tidy.part_cap(image_bytes, f),
            "sizes_min": min(sizes), "sizes_median": statistics.median(sizes), "sizes_max": max(sizes),
            "rows_per_part_max": max(p["rows"] for p in parts),
            "wall": wall, "wall_per_run_mean": wall / runs,
            "written_mean": statistics.mean(r.get("bytes_written", 0) for r in per_run),
            "written_max": max(r.get("bytes_written", 0) for r in per_run),
            "read_mean": statistics.mean(r.get("bytes_read", 0) for r in per_run),
            "tidy_s_mean": statistics.mean(r.get("seconds", 0) for r in per_run),
            "tidy_s_max": max(r.get("seconds", 0) for r in per_run),
            "runs_with_merges": sum(1 for r in per_run if r.get("parts_merged")),
        }
    finally:
        table_mod.tidy.split_rolled, table_mod.tidy.merge_small = saved
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        engine.dispose()


def report(results: list[dict], command: str) -> str:
    m = machine_info()
    lines = [
        "# A tidy image after 100 small appends (issue 16, finding 6)", "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {m.get('nproc', '?')} vCPU, {m.get('memory', '?')}, "
        f"Python {m.get('python', '?')}, {m.get('platform', '?')}, MariaDB on the same host; "
        "a machine shared with other jobs running tests at the same time (walls are noisy: compare the "
        "variants' part counts and bytes, and their walls only roughly).", "",
        f"Command: `{command}`", "",
        "`tidy` is this checkout; `baseline` the same code with the tidy step switched off in-process "
        "(one part per file group, never merged: the code before it).", "",
        "| variant | parts after | target: files ≤ 1.5 × ⌈bytes / F⌉ | files | image bytes | part bytes min / median / max | "
        "max rows in a part | first run s (tidy s) | runs with merges | rewritten B per run mean / max | read B per run mean | "
        "tidy s per run mean / max | wall of the runs s (per run) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ft = r["first_tidy"] or {}
        lines.append(
            f"| {r['variant']} | {r['parts']} | {r['target']:g} ({'met' if r['files'] <= r['target'] else 'missed'}) | "
            f"{r['files']} | {r['image_bytes']:,} | {r['sizes_min']:,} / {int(r['sizes_median']):,} / {r['sizes_max']:,} | "
            f"{r['rows_per_part_max']:,} | {r['first_seconds']:.1f} ({ft.get('seconds', 0):.2f}) | {r['runs_with_merges']} | "
            f"{r['written_mean']:,.0f} / {r['written_max']:,} | {r['read_mean']:,.0f} | "
            f"{r['tidy_s_mean']:.3f} / {r['tidy_s_max']:.3f} | {r['wall']:.1f} ({r['wall_per_run_mean']:.2f}) |")
    lines += ["", f"Table: {results[0]['rows']:,} rows + {results[0]['runs']} runs × {results[0]['append']:,} rows; "
              f"`--file-size {results[0]['file_size_mb']:g}`, `--detect {results[0]['detect']}`.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--append", type=int, default=1000)
    ap.add_argument("--file-size-mb", type=float, default=4.0)
    ap.add_argument("--variants", default="tidy,baseline")
    ap.add_argument("--detect", default="none",
                    help="none (default: appends only; a checksum run reads the whole table on the server each time, "
                         "minutes per run at 1M rows on a loaded 2-vCPU machine) or checksum")
    ap.add_argument("--out", default="benchmarks/results/tidy.md")
    a = ap.parse_args()
    results = []
    for v in a.variants.split(","):
        res = run_variant(a.url, v, a.rows, a.runs, a.append, a.file_size_mb, a.detect)
        print(json.dumps(res, default=str), flush=True)
        results.append(res)
    cmd = (f"python -m benchmarks.bench_appends --rows {a.rows} --runs {a.runs} --append {a.append} "
           f"--file-size-mb {a.file_size_mb:g} --variants {a.variants} --detect {a.detect}")
    text = report(results, cmd)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
