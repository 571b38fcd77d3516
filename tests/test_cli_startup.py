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
HEAVY = ("duckdb", "pyarrow", "matplotlib", "boto3", "botocore", "numpy", "sqlalchemy", "pandas", "connectorx")
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
