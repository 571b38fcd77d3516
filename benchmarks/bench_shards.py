"""Array jobs (issue 10): 3 shards as 3 concurrent processes + ``finalize`` against one process with
``--workers 3`` and ``--workers 1``, on the same MariaDB table, whole commands as a user times them.

Contenders, each timed from start to exit (:mod:`benchmarks.procs`; rotated order per repeat, medians):

* ``execute --workers 1`` (the reference) and ``execute --workers 3`` (one process, file groups in threads);
* ``3 shards + finalize``: ``sh -c 'execute --shard 1/3 & execute --shard 2/3 & execute --shard 3/3 &
  wait …; finalize'`` — what an orchestrator's array does on one machine, without its scheduling delay.

Every output is read back: its manifest's parts must hold every row. CPU is summed over the processes
(GNU time counts waited-for children); peak RSS is the largest single process.

    python -m benchmarks.bench_shards --rows 200000 --repeat 5 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks.procs import machine_state, measure_rotated, ratio_table

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
W1, W3, SH3 = "execute --workers 1", "execute --workers 3", "3 shards (processes) + finalize"


def contenders(plan_path: str, src: str, tmp: str) -> dict[str, list[str]]:
    py = sys.executable
    execute = [py, "-m", "sparsesync", "execute", plan_path, "--source", src]
    shards = "\n".join(f"{shlex.join([*execute, '--dest', f'{tmp}/sh3', '--shard', f'{i}/3'])} > /dev/null & p{i}=$!"
                       for i in (1, 2, 3))
    finalize = shlex.join([py, "-m", "sparsesync", "finalize", plan_path, "--dest", f"{tmp}/sh3", "--source", src])
    script = f"{shards}\nwait $p1 && wait $p2 && wait $p3 && {finalize}"
    return {
        W1: [*execute, "--dest", f"{tmp}/w1", "--workers", "1"],
        W3: [*execute, "--dest", f"{tmp}/w3", "--workers", "3"],
        SH3: ["sh", "-c", script],
    }


def check_and_clean(tmp: str, rows: int) -> None:
    """Fail unless the run's manifest lists parts holding every row; then remove its output (untimed)."""
    import pyarrow.parquet as pq

    for out in [p for p in Path(tmp).iterdir() if p.is_dir()]:
        manifest = next(out.rglob("manifest.json"))
        got = sum(pq.ParquetFile(e["url"]).metadata.num_rows for e in json.loads(manifest.read_text())["entries"])
        if got != rows:
            raise SystemExit(f"bench_shards: {out.name} wrote {got:,} rows, the table has {rows:,}")
        shutil.rmtree(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--files", type=int, default=12, help="file groups to split the table into (default 12)")
    ap.add_argument("--out", type=Path, default=None, help="write shards.md here")
    args = ap.parse_args(argv)

    from sparsesync.bench.fixtures import create_fixture
    from sparsesync.planner.api import make_plan

    table = f"bench_shards_{args.rows}_{uuid.uuid4().hex[:6]}"
    engine = sa.create_engine(args.url)
    try:
        print(f"creating {table} ({args.rows:,} rows)…", flush=True)
        create_fixture(args.url, "dense", args.rows, seed=0, table=table)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE TABLE `{table}`").all()
        with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
            # Ranges small enough that the table splits into about --files groups of two ranges each.
            per_query = max(1000, args.rows // (2 * args.files))
            probe = make_plan(engine, table, rows_per_query=per_query, use_cache=False)
            size = max(16 * 1024, sum(f.est_bytes for f in probe.files) // args.files + 1)
            plan = make_plan(engine, table, rows_per_query=per_query, file_size=size, use_cache=False)
            plan_path = str(plan.save(Path(tmp) / "plan.json"))
            src = sa.engine.make_url(args.url).render_as_string(hide_password=False)
            before = machine_state()
            print(f"machine: {before}", flush=True)
            series = measure_rotated(contenders(plan_path, src, tmp), args.repeat,
                                     after=lambda name: check_and_clean(tmp, args.rows))
            after = machine_state()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
        engine.dispose()
    about = (f"{args.rows:,} rows (`dense` fixture), plan: {len(plan.ranges)} ranges in {len(plan.files)} file groups, "
             f"default reader; {args.repeat} rotated repeats, medians; every output read back (all rows)")
    command = "python -m benchmarks.bench_shards " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"{ratio_table(series, [W1, W3])}\n\n{about}\n\ncommand: `{command}`\n\n"
            f"machine before: {before}\n\nmachine after: {after}\n")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "shards.md").write_text(text, encoding="utf-8")
        print(f"wrote {args.out / 'shards.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
