"""``sparsesync show`` through the CLI: text, --all, --json, --png, OLD NEW, refusals, --help."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from sparsesync.planner.api import make_plan
from sparsesync.errors import PlanError, UsageError


def cli():
    from sparsesync.cli import _register, app

    _register()
    return app


def run(*args):
    return CliRunner().invoke(cli(), ["show", *map(str, args)])


def db_with(path, keys, table="prealert"):
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, ref TEXT)")
    con.executemany(f"INSERT INTO {table} VALUES (?, ?)", [(k, f"r{k}") for k in keys])
    con.commit()
    con.close()
    return f"sqlite:///{path}"


KEYS = list(range(1, 3001)) + list(range(10_000, 4_000_000, 4999)) + [2**50]


@pytest.fixture
def plans(tmp_path):
    """(old plan path, new plan path) of one table that grew in between; ~30+ ranges each."""
    db = tmp_path / "src.db"
    url = db_with(db, KEYS)
    old = make_plan(url, "prealert", rows_per_query=100, file_size=32 * 1024, use_cache=False)
    old_path = old.save(tmp_path / "old.json")
    db_with(db, range(9_000_000, 9_002_000))
    new = make_plan(url, "prealert", rows_per_query=100, file_size=32 * 1024, use_cache=False)
    return old_path, new.save(tmp_path / "new.json"), old, new


def test_text_summary(plans):
    old_path, _, old, _ = plans
    r = run(old_path)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"prealert: {len(old.ranges)} ranges → {old.estimates.files} files")
    assert f"plan {old.plan_id}" in lines[0] and "density exact" in lines[0]
    assert any("log key scale" in x for x in lines)
    strip = [x for x in lines if "│" in x]
    assert len(strip) == 1 and strip[0].strip().startswith("1 │") and strip[0].rstrip().endswith(str(2**50))
    assert f"… {len(old.ranges) - 20} more" in r.stdout  # truncated by default
    assert "rows inserted after planning above max_key are read by the tail range" in r.stdout
    assert "part-00000.parquet" in r.stdout
    assert "∞" in r.stdout or len(old.ranges) > 20


def test_all_lists_every_range(plans):
    old_path, _, old, _ = plans
    r = run(old_path, "--all")
    assert r.exit_code == 0
    assert "more (--all" not in r.stdout
    last = old.ranges[-1]
    assert any(line.split()[:3] == [str(last.index), str(last.lo), "∞"] for line in r.stdout.splitlines())


def test_json_summary(plans):
    old_path, _, old, _ = plans
    r = run(old_path, "--json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["plan_id"] == old.plan_id and d["ranges"] == len(old.ranges) == len(d["range_list"])
    assert d["rows"] == len(KEYS) and d["max_key"] == str(2**50)
    assert d["strip"]["scale"] == "log"
    assert any(w["kind"] == "tail" for w in d["warnings"])


def test_png_is_written_atomically(plans, tmp_path):
    old_path, _, _, _ = plans
    out = tmp_path / "charts" / "density.png"
    r = run(old_path, "--png", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 5000
    assert [p.name for p in out.parent.iterdir()] == ["density.png"]  # no temp file left behind


def test_png_to_an_unwritable_place_is_one_line(plans, tmp_path):
    old_path, _, _, _ = plans
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run(old_path, "--png", blocker / "sub" / "d.png")  # parent is a file
    assert r.exit_code != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot write PNG" in r.stderr
    assert "Traceback" not in r.output


def test_diff_text_and_json(plans):
    old_path, new_path, old, new = plans
    r = run(old_path, new_path)
    assert r.exit_code == 0, r.output
    assert f"plan {old.plan_id} → {new.plan_id}" in r.stdout
    assert f"{old.estimates.rows:,} →" in r.stdout and "(+2,000)" in r.stdout
    assert "row estimate:" in r.stdout and "max key moved" not in r.stdout  # new rows sit below the outlier
    assert "boundary(ies) added" in r.stdout
    assert "density drift" in r.stdout and ("appeared" in r.stdout or "grew" in r.stdout)
    j = run(old_path, new_path, "--json")
    d = json.loads(j.stdout)
    assert d["counts"]["rows"]["delta"] == 2000
    assert d["counts"]["ranges"] == {"old": len(old.ranges), "new": len(new.ranges), "delta": len(new.ranges) - len(old.ranges)}
    assert d["boundaries_added"] and all(isinstance(k, str) for k in d["boundaries_added"])
    assert any(int(x["lo"]) <= 9_000_500 < int(x["hi"]) for x in d["drift"])


def test_diff_refuses_different_tables(plans, tmp_path):
    old_path, _, _, _ = plans
    url = db_with(tmp_path / "src.db", [1, 2, 3], table="other")
    other = make_plan(url, "other", use_cache=False).save(tmp_path / "other.json")
    r = run(old_path, other)
    assert r.exit_code == UsageError.exit_code
    assert len(r.stderr.strip().splitlines()) == 1 and "different tables" in r.stderr
    assert r.stdout == ""


def test_diff_with_a_broken_second_plan(plans, tmp_path):
    old_path, _, _, _ = plans
    r = run(old_path, tmp_path / "missing.json")
    assert r.exit_code == PlanError.exit_code
    assert "missing.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_help_has_examples():
    r = CliRunner().invoke(cli(), ["show", "--help"])
    assert r.exit_code == 0
    assert "Examples" in r.stdout and "--png" in r.stdout and "--json" in r.stdout
