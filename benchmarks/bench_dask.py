"""The Dask engine: overhead against the local engine, and a simulated 1-billion-row plan on 4/16/64 workers.

(a) overhead, measured: the same plan of one MariaDB table exported by the whole command
    ``sparsesync execute PLAN --dest DIR --workers 2`` (local engine, 2 threads)  vs
    ``sparsesync execute PLAN --dest DIR --engine dask --workers 2`` (starts a 2-process LocalCluster)  and vs
    ``… --engine dask --scheduler ADDR --shared-fs`` on a 2-process LocalCluster this script started before
    (what a standing cluster costs per run). Paired, repeated, order alternated; ratio = dask / local.
(b) scaling, simulated: NO database and NO Parquet. A 1e9-row plan is modelled as file groups of
    ``ranges_per_group`` range queries; a task sleeps ``latency`` per range plus its bytes over a bandwidth
    of ``min(per_connection, server_total / connections_now)``. The tasks run on a real Dask LocalCluster
    (threads, one per worker) through the engine's own submit-with-cap loop (``run_capped``), so the cap
    and the scheduling are real; the source is not. Times are scaled down by ``--time-scale`` so the
    simulation takes seconds; the report multiplies them back. Max concurrent "source connections" is
    counted inside the tasks.

Run:  .venv/bin/python -m benchmarks.bench_dask [--rows 1000000] [--repeat 3] [--sections overhead,sim]
The table ``bench_dask_*`` is created with MariaDB's sequence engine and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bench_executor import DEFAULT_URL, drop_table, make_table

ROOT = Path(__file__).resolve().parent.parent


# ---- (a) overhead against the local engine ------------------------------------------------------------------
def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return dt


def overhead(url: str, rows: int, repeat: int, file_size_mb: int) -> dict:
    from distributed import LocalCluster

    from sparsesync.planner.api import make_plan

    engine = sa.create_engine(url)
    name = f"bench_dask_{os.getpid()}"
    make_table(engine, name, rows)
    cluster = None
    try:
        plan = make_plan(url, name, rows_per_query=100_000, file_size=file_size_mb * 1024 * 1024, use_cache=False)
        work = Path(tempfile.mkdtemp(prefix="bench-dask-"))
        plan_file = plan.save(work / plan.default_filename())
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        base = [sys.executable, "-m", "sparsesync", "execute", str(plan_file), "--source", url, "--workers", "2"]
        variants = {
            "local": base,
            "dask-localcluster": base + ["--engine", "dask"],
            "dask-standing": base + ["--engine", "dask", "--scheduler", cluster.scheduler_address, "--shared-fs"],
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(repeat):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for k in order:
                times[k].append(_timed(variants[k] + ["--dest", str(work / f"{k}-{i}")]))
        ratios = {k: [d / l for d, l in zip(times[k], times["local"])] for k in variants if k != "local"}
        return {"rows": rows, "groups": len(plan.files), "ranges": len(plan.ranges), "times": times,
                "ratios": ratios, "median_ratio": {k: statistics.median(v) for k, v in ratios.items()}}
    finally:
        if cluster is not None:
            cluster.close()
        drop_table(engine, name)
        engine.dispose()


# ---- (b) simulated 1e9-row plan ------------------------------------------------------------------------------
class _Source:
    """The simulated source server: counts open "connections" and shares its bandwidth between them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.peak = 0

    def enter(self) -> int:
        with self.lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
            return self.open

    def leave(self) -> None:
        with self.lock:
            self.open -= 1


SOURCE = _Source()  # module state: the LocalCluster runs threads in this process (processes=False)


def _sim_group(model: dict) -> float:
    """One file group: per range a query latency, then its bytes at the connection's share of bandwidth."""
    now = SOURCE.enter()
    try:
        bw = min(model["conn_bw"], model["server_bw"] / now)
        seconds = model["ranges"] * model["latency"] + model["bytes"] / bw
        time.sleep(seconds * model["scale"])
        return seconds
    finally:
        SOURCE.leave()


def simulate(workers: int, connections: int, *, rows: float, bytes_per_row: int, rows_per_range: int,
             ranges_per_group: int, latency: float, conn_bw: float, server_bw: float, scale: float) -> dict:
    from distributed import Client, LocalCluster

    from benchmarks import bench_dask as this  # by module name, not __main__: tasks pickle by reference
    from sparsesync.executor.engine_dask import run_capped

    groups = int(rows // (rows_per_range * ranges_per_group))
    model = {"ranges": ranges_per_group, "latency": latency, "bytes": rows_per_range * ranges_per_group * bytes_per_row,
             "conn_bw": conn_bw, "server_bw": server_bw, "scale": scale}
    this.SOURCE.peak = 0
    # One in-process worker with `workers` threads: 64 separate in-process workers would mostly measure their
    # heartbeats on this 2-core machine, not the plan.
    with LocalCluster(n_workers=1, threads_per_worker=workers, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        done = []
        t0 = time.perf_counter()
        run_capped(client, range(groups), lambda i: client.submit(this._sim_group, model, pure=False),
                   lambda i, fut: done.append(fut.result()), connections)
        wall = time.perf_counter() - t0
    one_connection = groups * (ranges_per_group * latency + model["bytes"] / min(conn_bw, server_bw))
    return {"workers": workers, "connections": connections, "groups": groups, "wall_scaled_s": wall,
            "wall_model_s": wall / scale, "one_connection_model_s": one_connection, "peak_connections": this.SOURCE.peak}


def event_model(workers: int, connections: int, *, rows: float, bytes_per_row: int, rows_per_range: int,
                ranges_per_group: int, latency: float, conn_bw: float, server_bw: float, **_) -> dict:
    """The same model without Dask or sleeping: a discrete-event run of ``min(workers, connections)`` slots.

    Deterministic (no machine noise, no scheduler overhead): the ideal the measured run is compared with.
    """
    import heapq

    slots = min(workers, connections)
    groups = int(rows // (rows_per_range * ranges_per_group))
    nbytes = rows_per_range * ranges_per_group * bytes_per_row
    ends: list[float] = []
    now, peak = 0.0, 0
    for _ in range(groups):
        if len(ends) >= slots:
            now = heapq.heappop(ends)
        active = len(ends) + 1
        peak = max(peak, active)
        bw = min(conn_bw, server_bw / active)
        heapq.heappush(ends, now + ranges_per_group * latency + nbytes / bw)
    return {"groups": groups, "wall_model_s": max(ends) if ends else 0.0, "peak_connections": peak,
            "one_connection_model_s": groups * (ranges_per_group * latency + nbytes / min(conn_bw, server_bw))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--file-size-mb", type=int, default=16, help="plan's file size: several groups to share out")
    ap.add_argument("--sections", default="overhead,sim")
    ap.add_argument("--time-scale", type=float, default=1e-2, help="simulated seconds × this = real sleep")
    args = ap.parse_args(argv)
    print(f"nproc {os.cpu_count()}; load {os.getloadavg()}")
    if "overhead" in args.sections:
        r = overhead(args.url, args.rows, args.repeat, args.file_size_mb)
        print(f"\n(a) {r['rows']:,} rows, {r['groups']} file groups, {r['ranges']} ranges; whole command, seconds:")
        for k, v in r["times"].items():
            print(f"  {k:18s} " + "  ".join(f"{x:6.2f}" for x in v) + f"   median {statistics.median(v):6.2f}")
        for k, v in r["ratios"].items():
            print(f"  ratio {k}/local: " + "  ".join(f"{x:.2f}" for x in v) + f"   median {r['median_ratio'][k]:.2f}")
        print(f"load after (a): {os.getloadavg()}")
    if "sim" in args.sections:
        model = dict(rows=1e9, bytes_per_row=100, rows_per_range=100_000, ranges_per_group=25, latency=0.02,
                     conn_bw=50e6, server_bw=1e9, scale=args.time_scale)
        print(f"\n(b) simulated plan: {model} (seconds below are model seconds = real / scale)")
        print(f"  {'workers':>7} {'conns':>5} {'groups':>6} | {'ideal wall':>10} {'vs 1 conn':>9} | "
              f"{'Dask wall':>9} {'vs 1 conn':>9} {'peak conns':>10}   (model seconds)")
        for workers, conns in ((4, 4), (16, 16), (64, 64), (64, 16)):
            ideal = event_model(workers, conns, **model)
            r = simulate(workers, conns, **model)
            one = r["one_connection_model_s"]
            print(f"  {workers:>7} {conns:>5} {r['groups']:>6} | {ideal['wall_model_s']:>10,.0f} "
                  f"{one / ideal['wall_model_s']:>9.1f} | {r['wall_model_s']:>9,.0f} {one / r['wall_model_s']:>9.1f} "
                  f"{r['peak_connections']:>10}")
            assert r["peak_connections"] <= conns, "connection budget exceeded"
        print(f"load after (b): {os.getloadavg()}")


if __name__ == "__main__":
    main()
