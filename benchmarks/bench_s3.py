"""S3 destination vs local directory, measured in one process on the same data.

Two levels:

* ``sink`` (always available): write N Parquet parts of realistic size with pyarrow into the sink's
  staging path and commit them — local directory (fsync + rename) vs S3 on moto (upload_file,
  multipart) synchronously, and vs S3 with ``commit_async`` (part N uploads while part N+1 is written,
  as the orchestrator can overlap them).
* ``plan``: the same plan (a SQLite fixture table) executed with ``execute_plan`` into a local
  directory and into ``s3://bucket/prefix``; only runs when the executor's readers and writer exist.

moto runs as a separate process on 127.0.0.1 (like a real S3 endpoint, it does not share our GIL).
Each configuration runs ``--repeat`` times, interleaved; the median is reported and the ratio is
S3 / local. Usage::

    .venv/bin/python -m benchmarks.bench_s3 --parts 6 --part-mb 32 --repeat 3 --plan-rows 1000000 --plan-file-mb 8
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparsesync.executor.s3 import MiB, S3Sink
from sparsesync.executor.sink import LocalSink
from tests.s3server import MotoServer


def _aws_env(endpoint: str) -> None:
    """Standard AWS settings pointing at the loopback server (never real AWS)."""
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    })
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(var, None)


def _batch(rows: int, seed: int) -> pa.Table:
    """A table shaped like an export: keys, ints, decimals-as-float, timestamps, short text."""
    rng = np.random.default_rng(seed)
    ids = np.cumsum(rng.integers(1, 50, rows)).astype(np.int64)
    words = np.array([f"customer-{i:05d}" for i in range(5000)], dtype=object)
    return pa.table({
        "id": ids,
        "qty": rng.integers(0, 1000, rows).astype(np.int32),
        "amount": rng.normal(100, 30, rows).round(2),
        "created": pa.array((1_700_000_000_000_000 + ids * 1000).astype("datetime64[us]")),
        "name": pa.array(words[rng.integers(0, len(words), rows)], pa.string()),
        "note": pa.array([None if i % 7 == 0 else f"note {i % 997} " + "x" * (i % 40) for i in range(rows)]),
    })


def _write_part(path: Path, table: pa.Table, target_bytes: int) -> int:
    """Write ``table`` repeatedly into one Parquet file until it reaches ``target_bytes``; return its size."""
    with pq.ParquetWriter(path, table.schema, compression="zstd") as w:
        written = 0
        while True:
            w.write_table(table)
            written += 1
            # the file is flushed per row group; stop once the on-disk size reaches the target
            if path.stat().st_size >= target_bytes:
                break
    return path.stat().st_size


def run_sink_level(sinks: dict, table: pa.Table, parts: int, part_bytes: int, mode: str) -> tuple[float, float, int]:
    """Write+commit ``parts`` parts into one sink; returns (seconds, seconds spent in/waiting for commit, bytes)."""
    sink = sinks[mode]
    folder = f"bench/{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    total = 0
    in_commit = 0.0
    futures = []
    for i in range(parts):
        rel = f"{folder}/part-{i:05d}.parquet"
        staging = sink.staging_path(rel)
        _write_part(staging, table, part_bytes)
        c0 = time.perf_counter()
        if mode == "s3-async":
            futures.append(sink.commit_async(staging, rel))
        else:
            total += sink.commit(staging, rel).size
        in_commit += time.perf_counter() - c0
    c0 = time.perf_counter()
    total += sum(f.result().size for f in futures)
    in_commit += time.perf_counter() - c0
    elapsed = time.perf_counter() - t0
    for rel in sink.list(folder):  # keep memory/disk flat between repetitions
        sink.delete(rel)
    return elapsed, in_commit, total


class CallMeter:
    """Counts a boto3 client's API calls and the wall time spent inside them (botocore events)."""

    def __init__(self, client) -> None:
        self.count, self.seconds, self.by_op = 0, 0.0, {}
        self._lock = threading.Lock()
        self._local = threading.local()
        client.meta.events.register("before-call.s3", self._before)
        client.meta.events.register("after-call.s3", self._after)

    def _before(self, model, **_):
        self._local.t0 = time.perf_counter()

    def _after(self, model, **_):
        dt = time.perf_counter() - getattr(self._local, "t0", time.perf_counter())
        with self._lock:
            self.count += 1
            self.seconds += dt
            self.by_op[model.name] = self.by_op.get(model.name, 0) + 1


def _plan_level_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("sparsesync.executor.readers", "sparsesync.executor.writer"))


def run_plan_level(rows: int, repeat: int, bucket: str, workdir: Path, file_mb: int) -> dict | None:
    """execute_plan of one SQLite table into a directory vs into S3; None if the executor is incomplete."""
    if not _plan_level_available():
        return None
    from sparsesync.executor.run import execute_plan
    from sparsesync.planner.api import make_plan

    db = workdir / "bench.db"
    url = f"sqlite:///{db}"
    rng = np.random.default_rng(5)
    ids = np.cumsum(rng.integers(1, 40, rows))  # sparse-ish keys, ~1 in 20
    # sqlite3 directly: the fixture is not what is measured, and tuples load ~5x faster than ORM dicts
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, qty INTEGER, amount REAL, name TEXT, note TEXT)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            ((int(k), int(k % 1000), float(k) / 7, f"customer-{k % 5000:05d}", None if k % 7 == 0 else f"note {k % 997}")
             for k in ids),
        )
    conn.close()
    plan = make_plan(url, "t", rows_per_query=100_000, file_size=file_mb * MiB, use_cache=False)
    times: dict = {"local": [], "s3": []}  # seconds per run; plus "files" and "mib" figures
    for rep in range(repeat):
        for mode in ("local", "s3"):
            if mode == "local":
                dest = str(workdir / f"out-{rep}")
            else:
                # a Sink object goes through execute_plan as is; built here so its requests can be counted
                dest = S3Sink(bucket, f"plan-{rep}", staging_dir=workdir)
                calls = CallMeter(dest.client)
            t0 = time.perf_counter()
            report = execute_plan(plan, dest, source_url=url, verify=False)
            times[mode].append(time.perf_counter() - t0)
            if mode == "s3":
                times.setdefault("s3_requests", []).append(calls.count)
                times.setdefault("s3_call_s", []).append(calls.seconds)
                times["s3_ops"] = dict(calls.by_op)
            assert report.rows == rows, (report.rows, rows)
            times["mib"] = report.bytes / MiB
        shutil.rmtree(workdir / f"out-{rep}", ignore_errors=True)
    times["files"] = [len(plan.files)]
    return times


def machine() -> str:
    """nproc, memory and python version, as the results file wants them."""
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.rstrip()
    return f"nproc={os.cpu_count()}, python {platform.python_version()}, {platform.platform()}\n\n```\n{mem}\n```"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown report (also written with ``--out``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=6)
    ap.add_argument("--part-mb", type=float, default=32.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plan-rows", type=int, default=1_000_000, help="rows of the plan-level fixture (0 = skip)")
    ap.add_argument("--plan-file-mb", type=int, default=8, help="file_size of the plan-level plan, in MiB")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = ap.parse_args(argv)

    part_bytes = int(args.part_mb * MiB)
    workdir = Path(tempfile.mkdtemp(prefix="sparsesync-bench-s3-"))
    lines = [f"command: `{' '.join([Path(sys.executable).name, '-m', 'benchmarks.bench_s3', *(argv or sys.argv[1:])])}`",
             "", machine(), ""]
    try:
        with MotoServer() as server:
            _aws_env(server.url)
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            s3 = S3Sink(bucket, "sink", staging_dir=workdir)
            s3.client.create_bucket(Bucket=bucket)
            sinks = {"local": LocalSink(workdir / "local"), "s3": s3, "s3-async": s3}
            table = _batch(200_000, seed=1)
            _write_part(workdir / "warm.parquet", table, part_bytes)  # warm caches/imports before timing
            times: dict[str, list[float]] = {m: [] for m in sinks}
            commit_times: dict[str, list[float]] = {m: [] for m in sinks}
            total = 0
            for _ in range(args.repeat):
                for mode in sinks:  # interleaved so machine noise hits every mode alike
                    t, c, total = run_sink_level(sinks, table, args.parts, part_bytes, mode)
                    times[mode].append(t)
                    commit_times[mode].append(c)
            med = {m: statistics.median(v) for m, v in times.items()}
            cmed = {m: statistics.median(v) for m, v in commit_times.items()}
            lines += [
                f"## Sink level: {args.parts} Parquet parts, {total / args.parts / MiB:.1f} MiB each "
                f"({total / MiB:.0f} MiB), write + commit, median of {args.repeat}",
                "",
                "| destination | seconds (median) | all runs | MiB/s | ratio vs local (median) | ratio (best run) "
                "| of which in commit / waiting (median) |",
                "|---|---|---|---|---|---|---|",
            ]
            best = {m: min(v) for m, v in times.items()}
            for m in sinks:
                runs = ", ".join(f"{t:.2f}" for t in times[m])
                lines.append(f"| {m} | {med[m]:.2f} | {runs} | {total / MiB / med[m]:.0f} | "
                             f"{med[m] / med['local']:.2f} | {best[m] / best['local']:.2f} | {cmed[m]:.2f} |")
            lines.append("")
            if args.plan_rows > 0:
                plan_times = run_plan_level(args.plan_rows, args.repeat, bucket, workdir, args.plan_file_mb)
                if plan_times is None:
                    lines.append("## Plan level: not measured — executor.readers / executor.writer are not in the "
                                 "repository yet, so execute_plan cannot run.")
                else:
                    pm = {m: statistics.median(plan_times[m]) for m in ("local", "s3")}
                    lines += [
                        f"## Plan level: execute_plan, SQLite table of {args.plan_rows} rows, "
                        f"{plan_times['files'][0]} files of ≈{args.plan_file_mb} MiB planned, {plan_times['mib']:.0f} MiB "
                        f"written, median of {args.repeat}",
                        "",
                        "| destination | seconds (median) | all runs | ratio vs local (median) | ratio (best run) |",
                        "|---|---|---|---|---|",
                    ]
                    pb = {m: min(plan_times[m]) for m in ("local", "s3")}
                    for m in ("local", "s3"):
                        runs = ", ".join(f"{t:.2f}" for t in plan_times[m])
                        lines.append(f"| {m} | {pm[m]:.2f} | {runs} | {pm[m] / pm['local']:.2f} | "
                                     f"{pb[m] / pb['local']:.2f} |")
                    ops = ", ".join(f"{k} {v}" for k, v in sorted(plan_times["s3_ops"].items()))
                    lines += ["", f"S3 requests per run: {statistics.median(plan_times['s3_requests']):.0f} ({ops}); "
                                  f"wall time inside S3 calls (median): {statistics.median(plan_times['s3_call_s']):.2f} s "
                                  "(calls from upload threads overlap, so this can exceed the added time)."]
                lines.append("")
            s3.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
