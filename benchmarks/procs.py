"""Whole-process measurements: what a user waits for, start to exit (issue 11).

Each contender runs as its own child process under GNU ``/usr/bin/time``, which reports its CPU (user +
system, waited-for children included) and peak RSS. Not ``os.wait4`` on our own child: a child forked
from this (50+ MB) process keeps that RSS as its high-water mark after ``exec``, so every contender
would show at least the parent's size. Contenders are run in a
rotated order per repeat so none always runs first on a shared, noisy machine; figures are medians.
"""

from __future__ import annotations

import os
import platform
import statistics
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    rss_mb: float


@dataclass
class Series:
    """Repeated runs of one contender."""

    name: str
    runs: list[Run] = field(default_factory=list)
    failed: str | None = None  # why the contender has no figure (only with ``measure_rotated(tolerate=True)``)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


def child_env() -> dict[str, str]:
    """The environment for children: this checkout first on the path, no ambient source URL."""
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


def measure(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` to completion (stdout discarded) and return its wall time, CPU and peak RSS.

    Raises SystemExit naming the command when it fails: a failed contender has no figure.
    """
    if GNU_TIME is None:
        raise SystemExit("benchmarks need GNU time (/usr/bin/time) for peak RSS: apt-get install time")
    with tempfile.NamedTemporaryFile("r", prefix="bench-time-", suffix=".txt") as stats:
        t0 = time.perf_counter()
        p = subprocess.run([GNU_TIME, "-q", "-o", stats.name, "-f", "%U %S %M", *argv], env=env or child_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace").strip()
            raise SystemExit(f"{' '.join(map(str, argv[:6]))} failed (exit {p.returncode}): {err[-600:]}")
        user, system, rss_kb = stats.read().split()[-3:]
    return Run(wall, float(user) + float(system), int(rss_kb) / 1024)


def measure_rotated(contenders: dict[str, list[str]], repeat: int, *, progress=print,
                    after=None, tolerate: bool = False) -> dict[str, Series]:
    """Run every contender ``repeat`` times, rotating the order each repeat (paired runs).

    ``after(name)``, if given, runs after each run, untimed (e.g. to delete what it wrote). With
    ``tolerate``, a contender that fails (a peer that cannot handle a table) is recorded in its series'
    ``failed`` and not run again, instead of ending the whole measurement.
    """
    out = {name: Series(name) for name in contenders}
    names = list(contenders)
    env = child_env()
    for rep in range(repeat):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            if out[name].failed:
                continue
            try:
                run = measure(contenders[name], env)
            except SystemExit as exc:
                if not tolerate:
                    raise
                out[name].failed = str(exc)[-300:]
                progress(f"  [{rep + 1}/{repeat}] {name}: FAILED {out[name].failed}")
                if after is not None:
                    after(name, failed=True)
                continue
            if after is not None:
                try:
                    after(name)  # e.g. a check of the output: a wrong output is a failure, not a figure
                except SystemExit as exc:
                    if not tolerate:
                        raise
                    out[name].failed = str(exc)[-300:]
                    progress(f"  [{rep + 1}/{repeat}] {name}: FAILED {out[name].failed}")
                    after(name, failed=True)
                    continue
            out[name].runs.append(run)
            progress(f"  [{rep + 1}/{repeat}] {name}: {run.wall_s:.2f} s wall, {run.cpu_s:.2f} s CPU, "
                     f"{run.rss_mb:.0f} MB")
    return out


def machine_state() -> str:
    """CPU count, load average, memory and Python: printed next to every figure."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.splitlines()
    mem_line = mem[1] if len(mem) > 1 else ""
    return (f"{os.cpu_count()} CPUs, load average {load}, {platform.platform()}, Python "
            f"{platform.python_version()}; free -m: {' '.join(mem_line.split())}")


def ratio_table(series: dict[str, Series], refs: list[str]) -> str:
    """Markdown: median wall, CPU, peak RSS per contender and wall ratios against each reference."""
    head = "| contender | wall (median) | CPU (median) | peak RSS | " + " | ".join(f"vs {r}" for r in refs) + " |"
    lines = [head, "|" + "---|" * (4 + len(refs))]
    for s in series.values():
        if not s.runs:
            why = " ".join((s.failed or "not run").split())[:160].replace("|", "/")
            lines.append("| " + " | ".join([s.name, f"failed: {why}"] + ["–"] * (2 + len(refs))) + " |")
            continue
        cells = [s.name, f"{s.median('wall_s'):.2f} s", f"{s.median('cpu_s'):.2f} s", f"{s.median('rss_mb'):.0f} MB"]
        cells += [f"{s.median('wall_s') / series[r].median('wall_s'):.2f}×" if series[r].runs else "–" for r in refs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
