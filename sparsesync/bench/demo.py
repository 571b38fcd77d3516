"""The demo: on a machine with no MySQL, show the planner against fixed-stride chunking on SQLite.

Steps: create a prealert-like SQLite table (dense head + long sparse tail), plan it, execute the plan
into ``out/``, verify the output against the source, then run fixed-stride chunking (the roadmap's
current state, same reader and writer) on the same table and compare queries, files and time. Queries
are counted by an SQLAlchemy hook on every engine (SQLite has no server log).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sparsesync.errors import UsageError, VerifyError

DEMO_TABLE = "prealert_demo"


@dataclass
class DemoSide:
    """One way of exporting: queries against the table, files written, rows, wall time."""

    name: str
    queries: int
    files: int
    rows: int
    seconds: float
    missing: int = 0
    duplicated: int = 0


@dataclass
class DemoResult:
    """What the demo did, for the CLI to render."""

    out_dir: Path
    source_url: str
    rows: int
    plan_path: Path
    plan_lines: list[str]
    run_lines: list[str]
    verify_line: str
    planner: DemoSide
    fixed: DemoSide
    notes: list[str] = field(default_factory=list)

    def comparison_lines(self) -> list[str]:
        """A small table: planner vs fixed stride, and the ratios."""
        p, f = self.planner, self.fixed
        rows = [
            f"{'':24}{'queries':>9}{'files':>7}{'rows':>10}{'missing':>9}{'seconds':>9}",
            f"{'planner (plan + execute)':24}{p.queries:>9}{p.files:>7}{p.rows:>10,}{p.missing:>9}{p.seconds:>9.2f}",
            f"{'fixed stride (50k keys)':24}{f.queries:>9}{f.files:>7}{f.rows:>10,}{f.missing:>9}{f.seconds:>9.2f}",
        ]
        if f.queries and f.files:
            rows.append(
                f"planner: {1 - p.queries / f.queries:.0%} fewer queries, {1 - p.files / f.files:.0%} fewer files, "
                f"{f.seconds / p.seconds if p.seconds else float('inf'):.1f}× the speed of fixed stride"
            )
        return rows


def run_demo(out_dir: str | Path = "./demo-out", *, rows: int = 50_000, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole demo into ``out_dir`` (recreated); returns the figures. Raises SparsesyncError."""
    from sparsesync.executor.dest import open_sink
    from sparsesync.executor.run import execute_plan, output_folder
    from sparsesync.executor.verify import verify_output
    from sparsesync.planner.api import make_plan
    from sparsesync.planner.show import summarize
    from sparsesync.source import create_engine

    from . import fixtures, strategies
    from .harness import _SqliteCounter, compare_keys, read_back_keys

    if rows < 1000:
        raise UsageError(f"--rows must be at least 1000 for the demo, got {rows}")
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    if out.exists():
        # Only ever remove a previous demo's folder, never an arbitrary directory.
        if not (out / ".sparsesync-demo").exists() and any(out.iterdir()):
            raise UsageError(f"{out} exists and is not a previous demo output", hint="pass an empty or new --out directory")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".sparsesync-demo").write_text("created by `sparsesync demo`; safe to delete\n")
    db = out / "source.db"
    db.touch()  # a new, empty SQLite database (opening a missing file is refused as a typo)
    url = f"sqlite:///{db.resolve()}"
    engine = create_engine(url)
    try:
        say(f"creating a prealert-like SQLite table: {rows:,} rows (80 % dense head, tail of one key in ~500)")
        fx = fixtures.create_fixture(engine, "prealert", rows, seed=seed, table=DEMO_TABLE)
        with _SqliteCounter() as counter:
            say("planning (exact density pre-scan)")
            counter.mark()
            t0 = time.perf_counter()
            plan = make_plan(engine, DEMO_TABLE, density="exact", use_cache=False)
            t_plan = time.perf_counter() - t0
            plan_path = plan.save(out / "plans" / plan.default_filename())
            say("executing the plan")
            t0 = time.perf_counter()
            # The separate verify step below checks the output; the timed export is plan + execute only,
            # like the fixed-stride run it is compared with.
            report = execute_plan(plan, str(out / "export"), engine=engine, verify=False)
            t_exec = time.perf_counter() - t0
            q_plan = counter.count(DEMO_TABLE)
            folder = output_folder(plan)
            sink = open_sink(str(out / "export"))
            files = [rel for rel in sink.list(folder) if rel.endswith(".parquet")]
            say("verifying the output against the source")
            try:
                ver = verify_output(plan, str(out / "export"), engine=engine)
                verify_line = ver.summary()
                verified = "yes, by the verify step below" if ver.ok else "NO, see the verify step below"
            except VerifyError as exc:
                verify_line = exc.one_line()
                verified = "NO, see the verify step below"
            # execute ran without its own count check (verify=False): its lines must not say "skipped" for
            # an output the verify step checks right after.
            report.verified = verified
            report.count_check = {"skipped": "the demo's verify step below compares the output with the source"}
            exported, missing, dup = compare_keys(fx.keys, read_back_keys(sink, files))
            planner_side = DemoSide("planner", q_plan, len(files), exported, t_plan + t_exec, missing, dup)

            say("running fixed-stride chunking (the roadmap's current state) for comparison")
            fixed_sink = open_sink(str(out / "fixed-stride"))
            ctx = strategies.RunContext(engine=engine, table=DEMO_TABLE, sink=fixed_sink, prefix=DEMO_TABLE,
                                        deadline=time.monotonic() + 120)
            counter.mark()
            t0 = time.perf_counter()
            run = strategies.run_fixed(ctx)
            t_fixed = time.perf_counter() - t0
            q_fixed = counter.count(DEMO_TABLE)
            exported_f, missing_f, dup_f = compare_keys(fx.keys, read_back_keys(fixed_sink, [r for r, _ in run.files]))
            fixed_side = DemoSide("fixed", q_fixed, len(run.files), exported_f, t_fixed, missing_f, dup_f)
    finally:
        engine.dispose()
    s = summarize(plan)
    plan_lines = [s.line] + [f"  {f.kind}: {f.message}" for f in s.findings]
    return DemoResult(
        out_dir=out, source_url=url, rows=rows, plan_path=plan_path, plan_lines=plan_lines,
        run_lines=report.summary_lines(), verify_line=verify_line, planner=planner_side, fixed=fixed_side,
        notes=[f"planner time = plan {t_plan:.2f} s + execute {t_exec:.2f} s; verification not included"],
    )
