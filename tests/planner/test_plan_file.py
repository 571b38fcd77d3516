"""Plan-file acceptance: plans made by the planner validate; edited, foreign-version and broken files
are refused with one clear line; a newer minor is read; no plan or CLI output holds the password."""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
from pathlib import Path

import jsonschema
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from sparsesync.planner.api import make_plan
from sparsesync.planner.plan import SCHEMA_PATH, content_hash, load_plan
from sparsesync.errors import PlanError

from tests.conftest import insert_keys

REPO = Path(__file__).resolve().parents[2]
SPARSESYNC = REPO / ".venv" / "bin" / "sparsesync"
EXAMPLE = REPO / "plans" / "example-prealert.json"


def schema_validate(data: dict) -> None:
    """Validate with jsonschema directly, independent of the plan module's own check."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)


def rehash(data: dict) -> dict:
    body = {k: v for k, v in data.items() if k != "sha256"}
    return {**body, "sha256": content_hash(body)}


def cli():
    from sparsesync.cli import _register, app

    _register()
    return app


@pytest.fixture
def sqlite_plan(tmp_path) -> Path:
    """A real plan of a small SQLite table with a dense head and a sparse tail."""
    db = tmp_path / "src.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE prealert (id INTEGER PRIMARY KEY, ref VARCHAR(20) NOT NULL, status SMALLINT)")
    keys = list(range(1, 3001)) + list(range(10_000, 2_000_000, 7919))
    con.executemany("INSERT INTO prealert VALUES (?, ?, ?)", [(k, f"R{k}", k % 4) for k in keys])
    con.commit()
    con.close()
    plan = make_plan(f"sqlite:///{db}", "prealert", rows_per_query=700, file_size=64 * 1024, use_cache=False)
    assert plan.estimates.rows == len(keys)
    return plan.save(tmp_path / "plans" / plan.default_filename())


# ---- validation of real plans ------------------------------------------------------------------------
def test_sqlite_plan_validates_against_schema(sqlite_plan):
    data = json.loads(sqlite_plan.read_text())
    schema_validate(data)
    plan = load_plan(sqlite_plan)
    assert plan.ranges[-1].hi is None and len(plan.ranges) > 3
    # keys are decimal strings in the file
    assert all(isinstance(r["lo"], str) for r in data["ranges"])


def test_mysql_plan_validates_against_schema(mysql_engine, mysql_table, tmp_path):
    name = mysql_table("CREATE TABLE {name} (id BIGINT UNSIGNED PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")
    keys = list(range(1, 1501)) + [2**63 + 5, 2**64 - 2]
    insert_keys(mysql_engine, name, keys, extra=lambda k: f"v{k % 97}")
    plan = make_plan(mysql_engine, name, rows_per_query=400, use_cache=False)
    path = plan.save(tmp_path / "m.json")
    data = json.loads(path.read_text())
    schema_validate(data)
    again = load_plan(path)
    assert again == plan
    assert again.fingerprint.max_key == 2**64 - 2  # beyond int64, exact through JSON
    assert data["fingerprint"]["max_key"] == str(2**64 - 2)


def test_example_plan_loads_and_validates():
    data = json.loads(EXAMPLE.read_text())
    schema_validate(data)
    plan = load_plan(EXAMPLE)
    assert plan.source.table == "prealert"
    # dense head and sparse tail are both there, as the README says
    labels = {r.label for r in plan.ranges}
    assert {"dense", "sparse", "tail"} <= labels
    assert plan.histogram.total_rows == plan.estimates.rows > 0


# ---- refusals ----------------------------------------------------------------------------------------
def test_edited_plan_is_refused(sqlite_plan, tmp_path):
    data = json.loads(sqlite_plan.read_text())
    data["ranges"][1]["est_rows"] += 1
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data, indent=2))
    with pytest.raises(PlanError, match="edited"):
        load_plan(edited)


def test_future_major_is_refused_even_when_rehashed(sqlite_plan, tmp_path):
    data = json.loads(sqlite_plan.read_text())
    data["format_version"] = "2.0"
    future = tmp_path / "future.json"
    future.write_text(json.dumps(rehash(data)))
    with pytest.raises(PlanError) as err:
        load_plan(future)
    line = err.value.one_line()
    assert "2.0" in line and "1.x" in line and "upgrade" in line


def test_future_minor_with_unknown_keys_is_accepted_and_keys_ignored(sqlite_plan, tmp_path):
    original = load_plan(sqlite_plan)
    data = json.loads(sqlite_plan.read_text())
    data["format_version"] = "1.9"
    data["new_top_level"] = {"anything": [1, 2]}
    data["strategy"]["new_strategy_knob"] = 3
    data["ranges"][0]["new_range_field"] = "x"
    data["files"][0]["checksum_hint"] = "abc"
    data["source"]["region"] = "eu"
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(rehash(data)))
    plan = load_plan(newer)
    assert plan.format_version == "1.9"
    assert plan.ranges == original.ranges and plan.files == original.files
    assert plan.strategy == original.strategy and plan.source == original.source
    assert not hasattr(plan, "new_top_level")


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"format_version": "1.0", ', "not valid JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        ("", "not valid JSON"),
        ('{"plan_id": "x"}', "format_version"),
    ],
)
def test_malformed_files_are_refused(tmp_path, content, expected):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(PlanError, match=expected) as err:
        load_plan(p)
    assert str(p) in err.value.one_line()


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(tmp_path / "nope.json")
    with pytest.raises(PlanError, match="is a directory"):
        load_plan(tmp_path)


def test_rehashed_schema_violation_is_refused(sqlite_plan, tmp_path):
    data = json.loads(sqlite_plan.read_text())
    data["ranges"][0]["lo"] = 12  # a number, not a decimal string
    p = tmp_path / "v.json"
    p.write_text(json.dumps(rehash(data)))
    with pytest.raises(PlanError, match="schema"):
        load_plan(p)


@pytest.mark.parametrize("case", ["edited", "major", "malformed", "missing", "directory"])
def test_cli_prints_one_line_and_exits_non_zero(sqlite_plan, tmp_path, case):
    data = json.loads(sqlite_plan.read_text())
    target = tmp_path / f"{case}.json"
    if case == "edited":
        data["estimates"]["rows"] += 10
        target.write_text(json.dumps(data))
    elif case == "major":
        data["format_version"] = "3.1"
        target.write_text(json.dumps(rehash(data)))
    elif case == "malformed":
        target.write_text("{oops")
    elif case == "directory":
        target = tmp_path
    result = CliRunner().invoke(cli(), ["show", str(target)])
    assert result.exit_code == PlanError.exit_code, result.output
    err_lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("sparsesync: error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""


# ---- no password anywhere ----------------------------------------------------------------------------
@pytest.fixture
def password_user(mysql_engine, mysql_url):
    """A MariaDB user with a password, allowed to read the test database; dropped after."""
    user = f"ss_pw_{secrets.token_hex(4)}"
    password = f"Pw{secrets.token_hex(8)}_Zq"  # URL-safe, so the exact string is in the URL
    database = sa.engine.make_url(mysql_url).database
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE USER IF NOT EXISTS '{user}'@'%%' IDENTIFIED BY '{password}'")
        conn.exec_driver_sql(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%%'")
    base = sa.engine.make_url(mysql_url)
    url = base.set(username=user, password=password).render_as_string(hide_password=False)
    yield url, password
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")


def test_plan_never_contains_the_password(mysql_engine, mysql_table, password_user, tmp_path):
    url, password = password_user
    assert password in url
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(20))")
    insert_keys(mysql_engine, name, list(range(1, 801)) + [10**12], extra=lambda k: f"v{k}")

    # library
    plan = make_plan(url, name, rows_per_query=300, use_cache=False)
    lib_file = plan.save(tmp_path / "lib.json")
    assert password not in lib_file.read_text()
    assert plan.source.username == sa.engine.make_url(url).username

    # CLI: plan then show, through the real console script
    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [str(SPARSESYNC), "plan", url, name, "--rows-per-query", "300", "--no-cache", "-o", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert password not in proc.stdout + proc.stderr
    text = out.read_text()
    assert password not in text
    schema_validate(json.loads(text))
    shown = subprocess.run([str(SPARSESYNC), "show", str(out), "--json"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert password not in shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["table"] == name

    # a failure with the password in the URL: one line, no password
    bad = subprocess.run(
        [str(SPARSESYNC), "plan", url, f"{name}_missing", "--no-cache", "-o", str(tmp_path / "x.json")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert bad.returncode != 0
    assert password not in bad.stdout + bad.stderr
    assert len([x for x in bad.stderr.splitlines() if x.strip()]) == 1
    assert not (tmp_path / "x.json").exists()
    wrong = url.replace(password, password + "WRONG")
    denied = subprocess.run(
        [str(SPARSESYNC), "plan", wrong, name, "--no-cache", "-o", str(tmp_path / "y.json")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert denied.returncode != 0
    assert password not in denied.stdout + denied.stderr
