"""Start-up cost of a whole ``sparsesync execute`` on an empty table (issue 11, goal 5: < 0.8 s).

One invocation, paired and repeated: ``python -c pass`` (the interpreter floor), the bare C client
``mariadb -e 'select * from t'`` (the connection floor), the imports of bare ConnectorX → Parquet (issue
11's reference) and ``import sqlalchemy`` alone, ``sparsesync --help``, ``sparsesync show PLAN`` and
``sparsesync execute PLAN`` on an empty table into a local directory, each a whole child process.

    python -m benchmarks.bench_startup --repeat 7
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks.procs import machine_state, measure_rotated, ratio_table

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def mariadb_argv(url: sa.engine.URL, sql: str) -> list[str]:
    """The C client's command line for ``url`` (password through the environment, never argv)."""
    argv = ["mariadb", "--quick", "-h", url.host or "127.0.0.1", "-P", str(url.port or 3306),
            "-u", url.username or "root", url.database or "test", "-e", sql]
    return argv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--base", default=None, help="also time execute from this checkout directory (before/after)")
    args = ap.parse_args(argv)

    from sparsesync.planner.api import make_plan

    # Byte-compile this checkout once, as an installed package is: with PYTHONDONTWRITEBYTECODE set every
    # child would otherwise compile sparsesync's sources again, a start-up cost no installed user pays.
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "sparsesync"), quiet=1)
    url = sa.engine.make_url(args.url)
    if url.password:
        os.environ["MYSQL_PWD"] = url.password  # for the mariadb client only
    engine = sa.create_engine(args.url)
    name = f"bench_start_{uuid.uuid4().hex[:8]}"
    py = sys.executable
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(32)) ENGINE=InnoDB")
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
            plan = make_plan(engine, name, use_cache=False)
            plan_path = str(plan.save(Path(tmp) / "plan.json"))
            contenders = {
                "python -c pass": [py, "-c", "pass"],
                "mariadb -e select": mariadb_argv(url, f"select * from `{name}`"),
                # What bare ConnectorX → Parquet imports (issue 11's reference), and SQLAlchemy alone: the
                # floor under any run that writes Parquet, and the share of the executor's own source layer.
                "python: import connectorx, pyarrow.parquet": [py, "-c", "import connectorx, pyarrow.parquet"],
                "python: import sqlalchemy": [py, "-c", "import sqlalchemy"],
                "sparsesync --help": [py, "-m", "sparsesync", "--help"],
                "sparsesync show PLAN": [py, "-m", "sparsesync", "show", plan_path],
                "sparsesync execute (empty table)": [py, "-m", "sparsesync", "execute", plan_path, "--dest",
                                                     f"{tmp}/out", "--source", args.url, "--overwrite"],
            }
            execute = contenders["sparsesync execute (empty table)"]
            env = shutil.which("env") or "/usr/bin/env"
            # The same run with the source reached through SQLAlchemy (the path before sparsesync.direct)
            contenders["execute (empty table), source via SQLAlchemy"] = [
                env, "SPARSESYNC_SOURCE_VIA=sqlalchemy", *execute[:-4], f"{tmp}/out_sa", *execute[-3:]]
            if args.base:  # PYTHONSAFEPATH: `-m` would put the working directory (this checkout) first
                compileall.compile_dir(str(Path(args.base) / "sparsesync"), quiet=1)
                contenders["execute (empty table), base checkout"] = [
                    env, f"PYTHONPATH={args.base}", "PYTHONSAFEPATH=1", *execute[:-4], f"{tmp}/out_base", *execute[-3:]]
            print(f"machine: {machine_state()}", flush=True)
            series = measure_rotated(contenders, args.repeat)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{name}`")
        engine.dispose()
    table = ratio_table(series, ["python -c pass", "mariadb -e select"])
    print(table)
    print(f"machine after: {machine_state()}")
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
