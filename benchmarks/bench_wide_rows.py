"""Wide rows: peak RSS and time of ``sparsesync execute`` on LONGBLOB + LONGTEXT rows, both readers.

For each reader and repetition, three child processes run back to back (order rotated per repetition), each
measured by GNU ``time`` (wall time, peak RSS of that process alone):

* ``reference`` — the bare driver streams the whole table and drops it: connectorx ``arrow_stream`` with 64-row
  batches, or a pymysql ``SSCursor`` ``fetchmany(64)``; nothing converted or written;
* ``export`` — ``sparsesync execute`` with the default ``--memory-limit 512``;
* ``loose`` — the same with ``--memory-limit 16384``: batches of up to 256 MB and row groups of up to 2 GB,
  close to the row-bounded behaviour before issue 7 (a whole 1,000-row range per batch).

Further runs on request (``--runs``):

* ``export-glibc`` — ``export`` with glibc's own heap behaviour (:func:`sparsesync.executor.heap.bound_heap`
  made a no-op before the CLI starts), to see what the fixed mmap threshold does;
* ``export-base`` — ``export`` run from another checkout (``--baseline DIR``), for old-vs-new pairs.

``--dest s3`` writes to moto's S3 server on 127.0.0.1 (started here, as the tests do) instead of a local
directory. ``--load N`` keeps N busy-looping processes running while measuring (a loaded CI machine); they
are stopped at the end. Peak RSS is taken by GNU ``time`` (:mod:`benchmarks.procs`): ``os.wait4`` on a child of
this process counted this process's own RSS too (the child's high-water mark survives ``exec``).

Run:  .venv/bin/python -m benchmarks.bench_wide_rows [--rows 3000] [--kb 100] [--repeat 3] [--out FILE]
      [--dest local|s3] [--readers pymysql,connectorx] [--runs reference,export,loose] [--load N]
The table ``bench_wide_*`` is created (random, incompressible values) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks import procs

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

REFERENCE = {
    "connectorx": (
        "import connectorx as cx, sys\n"
        "s = cx.read_sql(sys.argv[1], sys.argv[2], return_type='arrow_stream', batch_size=64)\n"
        "n = 0\n"
        "while True:\n"
        "    try:\n"
        "        n += s.read_next_batch().num_rows\n"
        "    except StopIteration:\n"
        "        break\n"
        "print(n)\n"
    ),
    "pymysql": (
        "import pymysql, pymysql.cursors, sys\n"
        "c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database='test')\n"
        "cur = c.cursor(pymysql.cursors.SSCursor)\n"
        "cur.execute(sys.argv[2])\n"
        "n = 0\n"
        "while rows := cur.fetchmany(64):\n"
        "    n += len(rows)\n"
        "print(n)\n"
    ),
}


def make_table(engine, name: str, rows: int, kb: int) -> None:
    """``rows`` rows of a LONGBLOB and a LONGTEXT of ``kb``/2 KB each, random (incompressible)."""
    half = kb * 1024 // 2
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, b LONGBLOB, t LONGTEXT) ENGINE=InnoDB")
    with engine.begin() as conn:
        for lo in range(0, rows, 50):
            batch = [{"id": i + 1, "b": os.urandom(half), "t": os.urandom(half // 2).hex()}
                     for i in range(lo, min(rows, lo + 50))]
            conn.execute(sa.text(f"INSERT INTO {name} VALUES (:id, :b, :t)"), batch)


# Leaves glibc's heap as it is: bound_heap() then finds its once-per-process work already done.
GLIBC_HEAP = ("import sys\nfrom sparsesync.executor import heap\nheap._state['done'] = False\n"
              "from sparsesync.cli import main\nsys.argv[0] = 'sparsesync'\nmain()\n")
BURN = "while True:\n    pass\n"


def measure(argv: list[str], env: dict) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one child process, by GNU time."""
    run = procs.measure(argv, env)
    return run.wall_s, round(run.rss_mb)


@contextlib.contextmanager
def load(n: int):
    """``n`` busy-looping processes for the duration (each stopped by its own pid afterwards)."""
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]
    try:
        yield
    finally:
        for b in burners:
            b.kill()
            b.wait()


@contextlib.contextmanager
def destination(kind: str, tmp: str, env: dict):
    """A ``--dest`` prefix: a local directory, or a fresh bucket on a moto server started here."""
    if kind == "local":
        yield f"{tmp}/out"
        return
    import boto3

    from tests.s3server import MotoServer

    with MotoServer() as server:
        env.update({"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": f"{tmp}/no-aws-config",
                    "AWS_SHARED_CREDENTIALS_FILE": f"{tmp}/no-aws-credentials"})
        for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            env.pop(var, None)
        bucket = f"bench-wide-{uuid.uuid4().hex[:8]}"
        boto3.session.Session().client("s3", endpoint_url=server.url, aws_access_key_id="testing",
                                       aws_secret_access_key="testing", region_name="us-east-1",
                                       ).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--kb", type=int, default=100)
    ap.add_argument("--file-size-mb", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here too")
    ap.add_argument("--dest", choices=("local", "s3"), default="local")
    ap.add_argument("--readers", default="pymysql,connectorx")
    ap.add_argument("--runs", default="reference,export,loose",
                    help="of reference, export, loose, export-glibc, export-base")
    ap.add_argument("--baseline", type=Path, default=None, help="checkout that export-base runs from")
    ap.add_argument("--memory-limit", type=int, default=512, help="for export, export-glibc and export-base")
    ap.add_argument("--load", type=int, default=0, help="busy-looping processes kept running meanwhile")
    ap.add_argument("--analyze", action="store_true",
                    help="ANALYZE TABLE before planning: without it the plan has 1 or 3 file groups, depending on "
                         "whether InnoDB refreshed its statistics of the new table yet")
    args = ap.parse_args()
    readers = [r for r in args.readers.split(",") if r]
    kinds = [k for k in args.runs.split(",") if k]
    if "export-base" in kinds and args.baseline is None:
        ap.error("export-base needs --baseline DIR")

    from sparsesync.planner.api import make_plan

    engine = sa.create_engine(args.url)
    name = f"bench_wide_{uuid.uuid4().hex[:8]}"
    # PYTHONSAFEPATH: `-m`/`-c` would put the working directory (this checkout) ahead of PYTHONPATH, and
    # export-base would quietly run this checkout's code too.
    env = dict(procs.child_env(), PYTHONSAFEPATH="1")
    results: dict[tuple[str, str], list[tuple[float, int]]] = {}
    state = procs.machine_state()
    shape = "?"
    try:
        make_table(engine, name, args.rows, args.kb)
        if args.analyze:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()
        with tempfile.TemporaryDirectory(prefix="bench-wide-") as tmp, destination(args.dest, tmp, env) as dest, \
                load(args.load):
            state = procs.machine_state()
            plan = make_plan(engine, name, rows_per_query=1000, file_size=args.file_size_mb * 1024 * 1024,
                             use_cache=False)
            plan_path = plan.save(Path(tmp) / "plan.json")
            shape = f"{len(plan.files)} file group(s) of {len(plan.ranges)} ranges"
            print(shape, flush=True)
            cx_url = sa.engine.make_url(args.url).set(drivername="mysql").render_as_string(hide_password=False)
            query = f"SELECT id, b, t FROM {name} ORDER BY id"
            base_env = dict(env, PYTHONPATH=os.pathsep.join(
                [str(args.baseline.resolve()) if args.baseline else "", env.get("PYTHONPATH", "")]))
            for rep in range(args.repeat):
                for reader in readers:
                    execute = ["execute", str(plan_path), "--dest", dest, "--source", args.url, "--reader", reader,
                               "--overwrite"]
                    limit = ["--memory-limit", str(args.memory_limit)]
                    runs = {
                        "reference": ([sys.executable, "-c", REFERENCE[reader], cx_url, query], env),
                        "export": ([sys.executable, "-m", "sparsesync", *execute, *limit], env),
                        "loose": ([sys.executable, "-m", "sparsesync", *execute, "--memory-limit", "16384"], env),
                        "export-glibc": ([sys.executable, "-c", GLIBC_HEAP, *execute, *limit], env),
                        "export-base": ([sys.executable, "-m", "sparsesync", *execute, *limit], base_env),
                    }
                    order = kinds[rep % len(kinds):] + kinds[: rep % len(kinds)]  # no variant always runs first
                    for kind in order:
                        argv, run_env = runs[kind]
                        results.setdefault((reader, kind), []).append(measure(argv, run_env))
                        print(reader, kind, results[(reader, kind)][-1], flush=True)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        engine.dispose()

    lines = [
        f"{args.rows:,} rows × {args.kb} KB (LONGBLOB + LONGTEXT, random), --file-size {args.file_size_mb} MB, "
        f"--dest {args.dest}, --memory-limit {args.memory_limit}, plan: {shape}, "
        f"{args.load} busy-looping processes beside, "
        f"{args.repeat} repetitions; {state}",
        "",
        "| reader | run | time s (median) | time ratio vs first run (median of paired) | peak RSS MB (max) "
        "| peak RSS MB (each) |",
        "|---|---|---|---|---|---|",
    ]
    for reader in readers:
        ref = results[(reader, kinds[0])]
        for kind in kinds:
            got = results[(reader, kind)]
            ratio = statistics.median(g[0] / r[0] for g, r in zip(got, ref))
            lines.append(f"| {reader} | {kind} | {statistics.median(g[0] for g in got):.2f} | {ratio:.2f} | "
                         f"{max(g[1] for g in got)} | {', '.join(str(g[1]) for g in got)} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
