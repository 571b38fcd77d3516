"""``sparsesync bench``, ``sparsesync fixtures create|drop`` and ``sparsesync demo``."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from sparsesync.errors import SparsesyncError

from . import app, fail

fixtures_app = typer.Typer(help="Create or drop deterministic benchmark tables.", no_args_is_help=True)
app.add_typer(fixtures_app, name="fixtures")


def _split(values: Optional[List[str]]) -> list[str]:
    """Accept both repeated options and comma lists: ``--fixtures a,b --fixtures c``."""
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


@fixtures_app.command("create")
def fixtures_create(
    source_url: str = typer.Argument(..., metavar="SOURCE_URL", help="SQLAlchemy URL (MySQL/MariaDB or sqlite:///file)."),
    shape: str = typer.Option(..., "--shape", help="dense, uniform_sparse, prealert, bursty, purged, outliers or snowflake."),
    rows: int = typer.Option(50_000, "--rows", help="Rows to generate."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same keys and values."),
    table: Optional[str] = typer.Option(None, "--table", help="Table name (default fx_<shape>_<rows>_s<seed>); replaced if it exists."),
) -> None:
    """Create a deterministic fixture table and print its true sparse regions.

    Example: sparsesync fixtures create sqlite:///bench.db --shape prealert --rows 50000
    """
    from sparsesync.bench.fixtures import create_fixture

    try:
        fx = create_fixture(source_url, shape, rows, seed=seed, table=table)
    except SparsesyncError as exc:
        raise fail(exc)
    typer.echo(f"{fx.table}: {fx.rows:,} rows, keys {fx.min_key}…{fx.max_key}, shape {fx.shape}, seed {fx.seed}")
    for lo, hi in fx.sparse_truth[:10]:
        typer.echo(f"  sparse [{lo}, {hi})")
    if len(fx.sparse_truth) > 10:
        typer.echo(f"  … {len(fx.sparse_truth) - 10} more sparse regions")


@fixtures_app.command("drop")
def fixtures_drop(
    source_url: str = typer.Argument(..., metavar="SOURCE_URL"),
    table: str = typer.Argument(..., metavar="TABLE"),
) -> None:
    """Drop a fixture table.

    Example: sparsesync fixtures drop sqlite:///bench.db fx_prealert_50000_s0
    """
    from sparsesync.bench.fixtures import drop_fixture

    try:
        drop_fixture(source_url, table)
    except SparsesyncError as exc:
        raise fail(exc)
    typer.echo(f"dropped {table}")


@app.command("bench")
def bench_command(
    fixtures: Optional[List[str]] = typer.Option(None, "--fixtures", help="Fixture shapes (comma list or repeated); default dense,prealert,outliers."),
    strategies: Optional[List[str]] = typer.Option(None, "--strategies", help="fixed, quickfix, adaptive, accumulate, keyset, planner_exact, planner_sampled (default all)."),
    rows: Optional[List[int]] = typer.Option(None, "--rows", help="Table sizes (repeat for several); default 50000."),
    source: Optional[str] = typer.Option(None, "--source", help="Where fixtures are created (default: SPARSESYNC_SOURCE_URL, else a temporary SQLite file)."),
    latency_ms: Optional[float] = typer.Option(None, "--latency-ms", help="Delay per round trip through a loopback proxy (MySQL sources) [default: 0, or bench.latency_ms of --config]."),
    dest: Optional[str] = typer.Option(None, "--dest", help="Output DIR or s3://bucket/prefix (default: a temp dir, removed)."),
    time_cap: Optional[float] = typer.Option(None, "--time-cap", help="Seconds before a strategy is stopped and reported as not finished [default: bench.time_cap_s of --config, 120]."),
    repeat: int = typer.Option(1, "--repeat", help="Runs per strategy and fixture; the median time is reported."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("bench-out"), "--out", help="Directory for results.md and chart.png."),
) -> None:
    """Compare export strategies on deterministic fixtures: server-counted queries, files, rows, time.

    Example: sparsesync bench --source mysql+pymysql://root@127.0.0.1:3306/test --fixtures prealert --latency-ms 20
    """
    from sparsesync.bench.harness import DEFAULT_FIXTURES, DEFAULT_STRATEGIES, BenchConfig, markdown_table, run_bench, write_outputs

    tmp = None
    url = source or os.environ.get("SPARSESYNC_SOURCE_URL")
    if not url:
        tmp = tempfile.mkdtemp(prefix="sparsesync-bench-src-")
        url = f"sqlite:///{tmp}/bench.db"
        Path(tmp, "bench.db").touch()  # a new empty database; a missing file would be refused as a typo
    from sparsesync.bench.strategies import RoadmapSettings
    from sparsesync.config import merge

    from . import current_config

    try:
        conf = current_config()
        bench = merge(conf, "bench", time_cap_s=time_cap, latency_ms=latency_ms)
    except SparsesyncError as exc:
        raise fail(exc)
    chosen = tuple(_split(strategies))
    if not chosen:  # a switched-off roadmap phase is left out unless named explicitly
        chosen = tuple(
            s for s in DEFAULT_STRATEGIES
            if not (s in ("adaptive", "accumulate") and not conf.adaptive_scaling.enabled)
            and not (s == "accumulate" and not conf.accumulation.enabled)
        )
    roadmap = RoadmapSettings(
        efficiency_threshold=conf.detection.efficiency_threshold,
        min_chunk_size_check=conf.detection.min_chunk_size_check,
        max_scale_factor=conf.adaptive_scaling.max_scale_factor,
        max_chunk_size=conf.adaptive_scaling.max_chunk_size,
        acc_max_rows=conf.accumulation.max_batch_size,
    )
    cfg = BenchConfig(
        source=url, fixtures=tuple(_split(fixtures)) or DEFAULT_FIXTURES,
        strategies=chosen, sizes=tuple(rows or [50_000]), seed=seed,
        latency_ms=bench.latency_ms, dest=dest, time_cap_s=bench.time_cap_s, repeat=repeat, roadmap=roadmap,
    )
    command = "sparsesync " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        result = run_bench(cfg, progress=lambda msg: typer.echo(msg, err=True))
        md, png = write_outputs(result, out, command=command)
    except SparsesyncError as exc:
        raise fail(exc)
    finally:
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    typer.echo(markdown_table(result.measurements))
    typer.echo(f"results: {md}" + (f", chart: {png}" if png else ""))


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("./demo-out"), "--out", help="Output directory (recreated if it holds a previous demo)."),
    rows: int = typer.Option(50_000, "--rows", help="Rows in the demo table."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Plan, export and verify a sparse SQLite table, and compare with fixed-stride chunking (no MySQL needed).

    Example: sparsesync demo --out ./demo-out --rows 20000
    """
    from sparsesync.bench.demo import run_demo

    try:
        res = run_demo(out, rows=rows, seed=seed, progress=lambda m: typer.echo(f"· {m}"))
    except SparsesyncError as exc:
        raise fail(exc)
    typer.echo("")
    typer.echo("plan:")
    for line in res.plan_lines:
        typer.echo(f"  {line}")
    typer.echo(f"  written to {res.plan_path}")
    typer.echo("execute:")
    for line in res.run_lines:
        typer.echo(f"  {line}")
    typer.echo(f"verify: {res.verify_line}")
    typer.echo("")
    for line in res.comparison_lines() + res.notes:
        typer.echo(line)
    typer.echo(f"\noutput in {res.out_dir}/export, fixed-stride files in {res.out_dir}/fixed-stride")
