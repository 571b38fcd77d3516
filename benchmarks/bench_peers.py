"""Side by side with peers (issue 11): whole processes on the same MariaDB table, paired and repeated.

Contenders, each a whole child process timed for wall, CPU and peak RSS (:mod:`benchmarks.procs`):
the wire floor (``mariadb --quick -e 'select * …'`` to /dev/null: C client, no Parquet), bare ConnectorX
with 1 and 2 partitions into one zstd Parquet file, dlt ``sql_table`` with its connectorx and pyarrow
backends writing Parquet to a local filesystem destination (``pip install -e '.[bench]'``; skipped with
one line when dlt is missing), and ``sparsesync execute`` (default reader, ``--workers 2``,
``--reader pymysql`` = the one-snapshot path, and ``--consistency snapshot`` where this checkout has it).
The table is the benchmark fixture made 9 columns wide like the issue's: BIGINT, INT, DECIMAL,
DATETIME(6), ENUM, JSON, VARCHAR, TINYINT(1), TIMESTAMP. The same contenders then run on the prealert and
outliers fixtures (same 9 columns), the peers with their documented partitioning: ConnectorX
``partition_on``/``partition_num`` splits [min, max] of the key evenly; dlt ``sql_table`` reads one
query per table (no partitioning by default). A contender that fails on a table is reported as failed.
The goal ratios of issue 11 are printed (and written) from the same invocation.

    python -m benchmarks.bench_peers --rows 1000000 --repeat 5 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks.procs import Series, machine_state, measure_rotated, ratio_table

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
CX1, CX2, WIRE = "bare ConnectorX, 1 partition", "bare ConnectorX, 2 partitions", "wire floor (mariadb --quick)"

# Children run as `python -c CODE ARGS` so each imports only what that contender needs.
CONNECTORX_CODE = """\
import sys, connectorx as cx, pyarrow.parquet as pq
url, query, out, parts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
extra = {"partition_on": "id", "partition_num": parts} if parts > 1 else {}
table = cx.read_sql(url, query, return_type="arrow", **extra)
pq.write_table(table, out, compression="zstd")
"""
DLT_CODE = """\
import sys, dlt
from dlt.sources.sql_database import sql_table
backend, url, table, out = sys.argv[1:5]
source = sql_table(credentials=url, table=table, backend=backend)
pipe = dlt.pipeline(pipeline_name="bench_" + backend, destination=dlt.destinations.filesystem(bucket_url=out),
                    dataset_name="bench", pipelines_dir=out + "_pipelines", progress=None)
pipe.run(source, loader_file_format="parquet")
"""


def make_table(url: str, table: str, rows: int, seed: int, shape: str = "dense") -> None:
    """The ``shape`` fixture (``dense`` by default), widened to the issue's 9 column types (deterministic for ``seed``)."""
    from sparsesync.bench.fixtures import create_fixture

    create_fixture(url, shape, rows, seed=seed, table=table)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"ALTER TABLE `{table}` MODIFY created_at DATETIME(6) NULL, MODIFY note VARCHAR(400) NULL, "
                "ADD COLUMN flag TINYINT(1) NOT NULL DEFAULT 0, ADD COLUMN seen_at TIMESTAMP NULL"
            )
            conn.exec_driver_sql(f"UPDATE `{table}` SET flag = MOD(id, 2), seen_at = created_at")
            conn.exec_driver_sql(f"ANALYZE TABLE `{table}`")
    finally:
        engine.dispose()


def dlt_version() -> str | None:
    try:
        import dlt  # noqa: F401  (present and importable, not just metadata)
    except ImportError:
        return None
    return importlib.metadata.version("dlt")


def versions(engine) -> str:
    parts = []
    for dist in ("connectorx", "pyarrow", "duckdb", "dlt"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    with engine.connect() as conn:
        parts.append(f"server {conn.exec_driver_sql('SELECT VERSION()').scalar()}")
    client = shutil.which("mariadb") or shutil.which("mysql")
    return ", ".join(parts) + f", client {client}"


SS1, SS2, SS_PYMYSQL, SS_SNAPSHOT = ("sparsesync execute", "sparsesync execute --workers 2",
                                     "sparsesync execute --reader pymysql", "sparsesync execute --consistency snapshot")
SS_NOVERIFY = "sparsesync execute --no-verify"  # the same run without the after-run COUNT(*) check: its cost
# The same run with the source reached through SQLAlchemy (the path before sparsesync.direct): its start-up cost
SS_VIA_SA = "sparsesync execute, source via SQLAlchemy"
SS_BASE = "sparsesync execute, base checkout"  # --base DIR: a paired before/after in one invocation


def has_consistency_option() -> bool:
    """Whether this checkout's ``execute`` has ``--consistency`` (issue 11 goal 3, built on another branch)."""
    import subprocess

    from benchmarks.procs import child_env

    out = subprocess.run([sys.executable, "-m", "sparsesync", "execute", "--help"], env=child_env(),
                         capture_output=True, text=True).stdout
    return "--consistency" in out


def contenders(args, url: sa.engine.URL, table: str, plan_path: str, tmp: str) -> dict[str, list[str]]:
    py = sys.executable
    cx_url = url.set(drivername="mysql").render_as_string(hide_password=False)
    query = f"SELECT * FROM `{table}`"
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise SystemExit("bench_peers: the mariadb (or mysql) command-line client is needed for the wire floor")
    out = {
        WIRE: [client, "--quick", "-h", url.host or "127.0.0.1", "-P", str(url.port or 3306),
               "-u", url.username or "root", url.database or "test", "-e", query],
        CX1: [py, "-c", CONNECTORX_CODE, cx_url, query, f"{tmp}/cx1.parquet", "1"],
        CX2: [py, "-c", CONNECTORX_CODE, cx_url, query, f"{tmp}/cx2.parquet", "2"],
    }
    if args.dlt:
        sa_url = url.render_as_string(hide_password=False)
        for backend in ("connectorx", "pyarrow"):
            out[f"dlt sql_table, {backend} backend"] = [py, "-c", DLT_CODE, backend, sa_url, table, f"{tmp}/dlt_{backend}"]
    src = url.render_as_string(hide_password=False)
    execute = [py, "-m", "sparsesync", "execute", plan_path, "--source", src, "--overwrite"]
    out[SS1] = [*execute, "--dest", f"{tmp}/ss_default"]
    out[SS_NOVERIFY] = [*execute, "--dest", f"{tmp}/ss_noverify", "--no-verify"]
    env = shutil.which("env") or "/usr/bin/env"
    out[SS_VIA_SA] = [env, "SPARSESYNC_SOURCE_VIA=sqlalchemy", *execute, "--dest", f"{tmp}/ss_via_sa"]
    if args.base:  # the same default execute from another checkout (e.g. `git archive REV | tar -x -C DIR`);
        # PYTHONSAFEPATH: `-m` would otherwise put the working directory (this checkout) before PYTHONPATH
        out[SS_BASE] = [env, f"PYTHONPATH={args.base}", "PYTHONSAFEPATH=1", *execute, "--dest", f"{tmp}/ss_base"]
    out[SS2] = [*execute, "--dest", f"{tmp}/ss_w2", "--workers", "2"]
    out[SS_PYMYSQL] = [*execute, "--dest", f"{tmp}/ss_pymysql", "--reader", "pymysql"]
    if args.snapshot:
        out[SS_SNAPSHOT] = [*execute, "--dest", f"{tmp}/ss_snapshot", "--consistency", "snapshot"]
    if args.only:
        wanted = [w.strip() for w in args.only.split(";") if w.strip()]  # names hold commas
        out = {name: argv for name, argv in out.items() if name in wanted}
        missing = set(wanted) - set(out)
        if missing:
            raise SystemExit(f"bench_peers: --only names no contender {sorted(missing)}; known: {sorted(contender_names())}")
    return out


def contender_names() -> list[str]:
    """Every contender's name (for ``--only``)."""
    return [WIRE, CX1, CX2, "dlt sql_table, connectorx backend", "dlt sql_table, pyarrow backend",
            SS1, SS_NOVERIFY, SS_VIA_SA, SS_BASE, SS2, SS_PYMYSQL, SS_SNAPSHOT]


def rows_written(tmp: str) -> int:
    """Rows in the Parquet output of the last contender (dlt's own working copies not counted)."""
    import pyarrow.parquet as pq

    files = [p for p in Path(tmp).rglob("*.parquet") if not any(part.endswith("_pipelines") for part in p.parts)]
    return sum(pq.ParquetFile(p).metadata.num_rows for p in files)


def check_and_clean(tmp: str, name: str, rows: int, failed: bool = False) -> None:
    """Fail unless a Parquet-writing contender wrote every row; then remove its output (untimed)."""
    if not failed and name != WIRE and (got := rows_written(tmp)) != rows:
        raise SystemExit(f"bench_peers: {name} wrote {got:,} rows, the table has {rows:,}")
    for entry in Path(tmp).iterdir():
        if entry.name == "plan.json":
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def render_chart(series: dict[str, Series], path: Path, title: str) -> Path:
    """Horizontal bars: median wall and CPU per contender, peak RSS written beside each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(series)[::-1]
    wall = [series[n].median("wall_s") for n in names]
    cpu = [series[n].median("cpu_s") for n in names]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(names) + 1.6))
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], wall, 0.4, label="wall (median)", color="C0")
    ax.barh([y - 0.2 for y in ys], cpu, 0.4, label="CPU user+sys (median)", color="C1")
    for y, n, w in zip(ys, names, wall):
        ax.text(w, y + 0.2, f" {w:.2f} s, {series[n].median('rss_mb'):.0f} MB peak", va="center", fontsize=8)
    ax.set_yticks(list(ys), names)
    ax.set_xlabel("seconds (whole process, start to exit)")
    ax.set_xlim(0, max(wall + cpu) * 1.35)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


GOALS = (  # issue 11: (what, numerator, denominator, limit)
    ("goal 1: execute (1 worker) / bare ConnectorX 1 partition", SS1, CX1, 1.10),
    ("goal 2: execute --workers 2 / bare ConnectorX 2 partitions", SS2, CX2, 1.00),
    ("goal 3: execute --consistency snapshot / wire floor", SS_SNAPSHOT, WIRE, 3.00),
    ("(goal 1 without the after-run COUNT(*) check: execute --no-verify / bare ConnectorX 1 partition)",
     SS_NOVERIFY, CX1, 1.10),
    ("(goal 1 with the source reached through SQLAlchemy, as before sparsesync.direct)", SS_VIA_SA, CX1, 1.10),
)


def goal_lines(series: dict[str, Series]) -> list[str]:
    """The issue's goal ratios (medians of wall) and the peak RSS goal, met or missed, from one invocation."""
    lines = ["| goal | ratio (median wall) | limit | met? |", "|---|---|---|---|"]
    for what, num, den, limit in GOALS:
        if num in series and den in series and series[num].runs and series[den].runs:
            r = series[num].median("wall_s") / series[den].median("wall_s")
            lines.append(f"| {what} | {r:.2f}× | ≤ {limit:.2f}× | {'yes' if r <= limit else 'NO'} |")
        else:
            lines.append(f"| {what} | not measured ({num} not in this run) | ≤ {limit:.2f}× | – |")
    ours = [s for n, s in series.items() if n.startswith("sparsesync") and s.runs]
    if ours:
        worst = max(ours, key=lambda s: max(r.rss_mb for r in s.runs))
        peak = max(r.rss_mb for r in worst.runs)
        lines.append(f"| goal 4: peak RSS of any sparsesync run (max over repeats: {worst.name}) | {peak:.0f} MB | "
                     f"< 512 MB | {'yes' if peak < 512 else 'NO'} |")
    return lines


def measure_table(args, engine, url, table: str, rows: int, file_size_mb: int | None):
    """Plan ``table`` and measure every contender on it; returns (series, about-text, before, after)."""
    from sparsesync.planner.api import make_plan

    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        plan = make_plan(engine, table, use_cache=False,
                         **({"file_size": file_size_mb * 1024 * 1024} if file_size_mb else {}))
        total = sum(f.est_bytes for f in plan.files)
        if file_size_mb is None and len(plan.files) < 4 and total > 4 << 20:
            # --workers 2 shares file groups, and a file is written by one worker: with 1 file it has nothing
            # to share, with 3 one worker reads two thirds. A quarter of the table per file (≥ 1 MB) gives
            # both workers equal shares, as a user sizing --file-size for two workers would.
            plan = make_plan(engine, table, file_size=max(1 << 20, total // 4 + 1), use_cache=False)
        elif file_size_mb is None and len(plan.files) < 2:
            plan = make_plan(engine, table, file_size=max(1 << 20, total // 2 + 1), use_cache=False)
        plan_path = str(plan.save(Path(tmp) / "plan.json"))
        runs = contenders(args, url, table, plan_path, tmp)
        before = machine_state()
        print(f"machine: {before}", flush=True)
        series = measure_rotated(runs, args.repeat, tolerate=True,
                                 after=lambda name, failed=False: check_and_clean(tmp, name, rows, failed))
        after = machine_state()
    about = (f"{rows:,} rows × 9 columns, plan: {len(plan.ranges)} ranges in {len(plan.files)} files; every Parquet "
             f"output checked for all rows; {args.repeat} rotated repeats, medians")
    return series, about, before, after


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--file-size-mb", type=int, default=None,
                    help="plan file size (default: a quarter of the table, so --workers 2 has equal shares)")
    ap.add_argument("--table", default=None, help="reuse this table (made by an earlier --keep run)")
    ap.add_argument("--keep", action="store_true", help="keep the table for another run")
    ap.add_argument("--base", default=None,
                    help="also run the default execute from this checkout directory (a before/after pair)")
    ap.add_argument("--fixtures", default="prealert,outliers",
                    help="fixture shapes measured after the main table, comma-separated, or 'none'")
    ap.add_argument("--fixture-rows", type=int, default=None, help="rows per fixture (default: --rows, at most 200,000)")
    ap.add_argument("--fixture-repeat", type=int, default=None, help="repeats on the fixtures (default: --repeat)")
    ap.add_argument("--out", type=Path, default=None, help="write peers-<rows>.md and .png here")
    ap.add_argument("--only", default=None, help="measure only these contenders (exact names, ';'-separated)")
    args = ap.parse_args(argv)

    url = sa.engine.make_url(args.url)
    if url.password:
        os.environ["MYSQL_PWD"] = url.password  # the mariadb client reads it from the environment, not argv
    args.dlt = dlt_version() is not None
    if not args.dlt:
        print("bench_peers: dlt is not installed, skipping the dlt contenders (pip install -e '.[bench]')")
    args.snapshot = has_consistency_option()
    if not args.snapshot:
        print("bench_peers: this checkout's execute has no --consistency; that row is reported as not measured")
    # Byte-compile this checkout once, as an installed package is: with PYTHONDONTWRITEBYTECODE set every
    # child would otherwise compile sparsesync's sources again, a start-up cost no installed user pays.
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "sparsesync"), quiet=1)
    if args.base:
        compileall.compile_dir(str(Path(args.base) / "sparsesync"), quiet=1)
    shapes = [] if args.fixtures.strip() == "none" else [f.strip() for f in args.fixtures.split(",") if f.strip()]
    fixture_rows = args.fixture_rows or min(args.rows, 200_000)
    engine = sa.create_engine(args.url)
    sections = []  # (title, rows, series, about, before, after)
    made: list[str] = []
    try:
        tables = [("dense", args.table or f"bench_peers_{args.rows}_{uuid.uuid4().hex[:6]}", args.rows, args.repeat)]
        tables += [(shape, f"bench_peers_{shape}_{fixture_rows}_{uuid.uuid4().hex[:6]}", fixture_rows,
                    args.fixture_repeat or args.repeat) for shape in shapes]
        for shape, table, rows, repeat in tables:
            if not (shape == "dense" and args.table):
                print(f"creating {table} ({shape}, {rows:,} rows)…", flush=True)
                made.append(table)
                make_table(args.url, table, rows, args.seed, shape=shape)
            args.repeat, saved = repeat, args.repeat
            try:
                series, about, before, after = measure_table(args, engine, url, table, rows,
                                                             args.file_size_mb if shape == "dense" else None)
            finally:
                args.repeat = saved
            sections.append((shape, rows, series, about, before, after))
            if table in made and not (args.keep and shape == "dense"):  # only tables this run made
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
                made.remove(table)
        vers = versions(engine)
    finally:
        with engine.begin() as conn:  # a failed run leaves none of its tables behind (a kept one stays)
            for table in made:
                if not (args.keep and table == tables[0][1]):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
        engine.dispose()
    measured = {n for _, _, series, *_ in sections for n in series}
    refs = [r for r in (CX1, CX2, WIRE) if r in measured]  # --only may leave some out
    command = "python -m benchmarks.bench_peers " + " ".join(argv if argv is not None else sys.argv[1:])
    parts = [f"command: `{command}`\n\nversions: {vers}\n"]
    for shape, rows, series, about, before, after in sections:
        title = "issue table (dense fixture, 9 columns)" if shape == "dense" else f"{shape} fixture (9 columns)"
        parts.append(f"## {title}, {rows:,} rows\n\n{ratio_table(series, refs)}\n\n{about}\n\n"
                     f"machine before: {before}\n\nmachine after: {after}\n")
        if shape == "dense":
            parts.append("### Issue 11 goals (this table, this invocation)\n\n" + "\n".join(goal_lines(series)) + "\n")
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        md = args.out / f"peers-{args.rows}.md"
        md.write_text(text, encoding="utf-8")
        written = [md]
        for shape, rows, series, *_ in sections:
            name = f"peers-{args.rows}.png" if shape == "dense" else f"peers-{shape}-{rows}.png"
            label = f"{rows:,} rows × 9 cols" if shape == "dense" else f"{shape} fixture, {rows:,} rows × 9 cols"
            written.append(render_chart({n: s for n, s in series.items() if s.runs}, args.out / name,
                                        f"sparsesync vs peers, {label}, medians of {args.repeat} (shared 2-core machine)"))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
