"""The demo runs end to end on SQLite (no MySQL) and its comparison is measured, not asserted by itself."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sparsesync.bench.demo import run_demo
from sparsesync.cli import _register, app
from sparsesync.errors import UsageError


def test_demo_library(tmp_path):
    res = run_demo(tmp_path / "demo", rows=3000, seed=5)
    assert res.planner.rows == 3000 and res.planner.missing == 0 and res.planner.duplicated == 0
    assert res.fixed.rows == 3000 and res.fixed.missing == 0
    assert "matches the source" in res.verify_line
    # 3000 rows with a tail of one key in ~500 span ~300k keys: 7 chunks of 50k keys, 1 planned file.
    assert res.planner.files == 1 and res.fixed.files > res.planner.files
    assert res.planner.queries < res.fixed.queries
    assert res.plan_path.is_file()
    assert any(p.suffix == ".parquet" for p in (tmp_path / "demo" / "export").rglob("*"))
    assert any("fewer queries" in line for line in res.comparison_lines())


def test_demo_refuses_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not a previous demo"):
        run_demo(tmp_path, rows=3000)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_demo_cli(tmp_path):
    _register()
    out = tmp_path / "d"
    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--rows", "2000"])
    assert r.exit_code == 0, r.output
    assert "fixed stride" in r.output and "matches the source" in r.output
    # The execute step's line tells what happened to the output: verified by the step after it (issue 17, 7).
    assert "verified: skipped" not in r.output and "verified: yes, by the verify step below" in r.output
    assert "--no-verify" not in r.output and "output not compared with the source" not in r.output
    # Running again over a previous demo output is allowed.
    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--rows", "2000"])
    assert r.exit_code == 0, r.output
    bad = CliRunner().invoke(app, ["demo", "--out", str(out), "--rows", "5"])
    assert bad.exit_code != 0 and "at least 1000" in bad.output


def test_make_demo_installs_without_the_test_extras(tmp_path):
    """`make demo` from a fresh clone installs the package alone (issue 17, 7); `make test` keeps the extras."""
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    root = Path(__file__).resolve().parents[1]

    def dry(target: str) -> str:
        res = subprocess.run(["make", "-n", "-C", str(root), target, f"VENV={tmp_path / 'venv'}"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    demo, test = dry("demo"), dry("test")
    assert "pip install --quiet -e ." in demo and "[test]" not in demo and "sparsesync demo" in demo
    assert "pip install --quiet -e '.[test]'" in test and "pytest" in test
