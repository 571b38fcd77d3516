"""Issue 11, goal 5: help and ``show PLAN`` import nothing heavy (start-up cost a user pays on every call).

Each case runs a fresh interpreter with ``-X importtime`` and reads the modules it imported from stderr,
so a module-level ``import pyarrow`` anywhere on the path of these commands fails the test.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# pydantic: typer 0.29 imports it (and builds an adapter per parameter) on every call; pyproject keeps typer < 0.29
HEAVY = ("duckdb", "pyarrow", "matplotlib", "boto3", "botocore", "numpy", "sqlalchemy", "pandas", "connectorx",
         "pydantic")
COMMANDS = ["plan", "show", "execute", "verify", "run", "bench", "demo", "sync", "load", "gc", "fixtures"]


def imports_of(*python_args: str) -> set[str]:
    """Every module name a fresh ``python -X importtime PYTHON_ARGS`` process imported."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *python_args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Lines look like "import time:   self |  cumulative |   package.module".
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def imported_modules(*args: str) -> set[str]:
    """Top-level names of every module a ``python -m sparsesync ARGS`` process imported."""
    names = imports_of("-m", "sparsesync", *args)
    assert "sparsesync.cli" in names  # the parse works: an empty set must not pass vacuously
    return {n.split(".")[0] for n in names}


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(set(HEAVY) & modules)


def test_root_help_is_light():
    assert heavy_in(imported_modules("--help")) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_is_light(command):
    assert heavy_in(imported_modules(command, "--help")) == []


@pytest.mark.parametrize("extra", [[], ["--json"]], ids=["text", "json"])
def test_show_plan_is_light(extra):
    assert heavy_in(imported_modules("show", "plans/example-prealert.json", *extra)) == []


def test_the_check_sees_a_heavy_import():
    # Guards the guard: the same parse does report pyarrow when the code really needs it.
    names = imports_of("-c", "import sparsesync.planner.plan as p; p.arrow_type_from_string('int64')")
    assert "pyarrow" in {n.split(".")[0] for n in names}


# ---- execute on an empty table (goal 5: < 0.8 s): what it must not import ------------------------------------
# pyarrow (the empty part is still a Parquet file) and PyMySQL are needed; these are not: SQLAlchemy (the
# default MySQL path talks to PyMySQL directly, sparsesync.direct; ~0.2-0.4 s to import), DuckDB (verify only),
# matplotlib (charts), boto3/botocore (S3 destinations only), pyarrow.compute (casts of rows an empty table does
# not have; ~40 ms to import), pydantic (typer 0.29's per-parameter adapters).
NOT_FOR_EMPTY_EXECUTE = ("sqlalchemy", "duckdb", "matplotlib", "boto3", "botocore", "pyarrow.compute",
                         "pyarrow._compute", "dlt", "pydantic")


@pytest.mark.mysql
def test_execute_on_an_empty_table_imports_nothing_it_does_not_use(mysql_engine, mysql_url, mysql_table, tmp_path):
    from sparsesync.planner.api import make_plan

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(32)) ENGINE=InnoDB", prefix="s11empty")
    plan = make_plan(mysql_engine, name, use_cache=False)
    plan_path = plan.save(tmp_path / "plan.json")
    out = tmp_path / "out"
    names = imports_of("-m", "sparsesync", "execute", str(plan_path), "--dest", str(out), "--source", mysql_url)
    assert (out / name / plan.plan_id / "manifest.json").exists()  # the run really happened
    assert "pyarrow.parquet" in names  # and the parse sees what it did import
    assert sorted(m for m in NOT_FOR_EMPTY_EXECUTE if m in names) == []


@pytest.mark.mysql
@pytest.mark.parametrize("workers", [1, 2])
def test_default_execute_runs_without_sqlalchemy(mysql_engine, mysql_url, mysql_table, tmp_path, workers):
    """The default path (connectorx when installed, else pymysql) on rows, nullable key, counts checked:
    SQLAlchemy is never imported, and every row arrives once."""
    import sqlalchemy as sa

    from sparsesync.planner.api import make_plan

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT NULL, v VARCHAR(32), KEY (id)) ENGINE=InnoDB",
                       prefix="s11rows")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` VALUES (:i, :v)"),
                     [{"i": None if i % 97 == 0 else i * 7, "v": f"v{i}"} for i in range(3000)])
    plan = make_plan(mysql_engine, name, key="id", rows_per_query=500, use_cache=False)
    plan_path = plan.save(tmp_path / "plan.json")
    out = tmp_path / "out"
    names = imports_of("-m", "sparsesync", "execute", str(plan_path), "--dest", str(out), "--source", mysql_url,
                       "--workers", str(workers))
    assert (out / name / plan.plan_id / "manifest.json").exists()
    assert "pymysql" in names and "sqlalchemy" not in names
    import duckdb

    n, distinct, nulls = duckdb.sql(f"SELECT count(*), count(DISTINCT id), count(*) - count(id) "
                                    f"FROM read_parquet('{out / name / plan.plan_id}/*.parquet')").fetchall()[0]
    assert (n, distinct, nulls) == (3000, 3000 - 31, 31)


@pytest.mark.mysql
def test_other_paths_still_get_sqlalchemy(mysql_engine, mysql_url, mysql_table, tmp_path):
    """--reader pymysql compiles its statement with SQLAlchemy: the direct source hands over a real Engine."""
    from sparsesync.planner.api import make_plan

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(32)) ENGINE=InnoDB", prefix="s11pm")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{name}` VALUES (1, 'a'), (5, 'b'), (900, 'c')")
    plan = make_plan(mysql_engine, name, use_cache=False)
    plan_path = plan.save(tmp_path / "plan.json")
    out = tmp_path / "out"
    names = imports_of("-m", "sparsesync", "execute", str(plan_path), "--dest", str(out), "--source", mysql_url,
                       "--reader", "pymysql")
    assert (out / name / plan.plan_id / "manifest.json").exists() and "sqlalchemy" in names


LAZY_IN_THREADS = """
import sys, threading
from sparsesync.lazy import lazy_module
pc = lazy_module('pyarrow.compute')
assert 'pyarrow._compute' not in sys.modules  # nothing imported yet
import pyarrow as pa
start, errors = threading.Barrier(8), []
def use():
    start.wait()  # eight threads touch the module for the first time at once (as --workers does)
    try:
        assert pc.cast(pa.array([1, 2]), pa.int32()).to_pylist() == [1, 2]
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=use) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
assert errors == [], errors
assert pc.sum(pa.array([1, 2])).as_py() == 3 and lazy_module('pyarrow.compute') is sys.modules['pyarrow.compute']
print('ok')
"""


def test_lazy_module_loads_on_first_use_and_from_many_threads_at_once():
    # A fresh interpreter, so the first use really is the import.
    code = LAZY_IN_THREADS
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
