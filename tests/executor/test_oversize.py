"""Values the generated Redshift DDL cannot hold (issue 7, finding 3): fail / truncate / keep, both readers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import duckdb
import pytest
import sqlalchemy as sa

from sparsesync.executor.oversize import ddl_limit, truncate_utf8, warning_lines
from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.executor.verify import verify_output
from sparsesync.planner.api import make_plan
from sparsesync.errors import ValueConversionError
from tests.conftest import unique_name

DDL = ("CREATE TABLE {name} (id BIGINT PRIMARY KEY, lt LONGTEXT, lb LONGBLOB, v VARCHAR(10), j JSON) "
       "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
BAD_TEXT_KEY, BAD_BLOB_KEY = 150, 170
LONG_TEXT = "é" * 40_000 + "x"  # 80,001 bytes in UTF-8: over VARCHAR(65535), cut point inside an 'é'
LONG_BLOB = os.urandom(1_100_000)  # over VARBYTE(1024000)


@pytest.fixture(scope="module")
def table(mysql_engine):
    name = unique_name("ovs")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(DDL.format(name=name))
        rows = [{"id": i, "lt": f"t{i}", "lb": bytes([i % 256]) * 10, "v": "ünïcødé!!"[: 1 + i % 9], "j": "{}"}
                for i in range(1, 1001)]
        rows[BAD_TEXT_KEY - 1]["lt"] = LONG_TEXT
        rows[BAD_BLOB_KEY - 1]["lb"] = LONG_BLOB
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:id, :lt, :lb, :v, :j)"), rows)
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()
    yield name
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture(scope="module")
def plan(mysql_url, table):
    p = make_plan(mysql_url, table, rows_per_query=100, file_size=20_000, use_cache=False)
    last_lo = p.ranges_of(p.files[-1])[0].lo
    assert len(p.files) >= 3 and BAD_TEXT_KEY < last_lo, "the oversize rows are not in the last group"
    return p


def _files(dest, plan) -> set[str]:
    folder = dest / output_folder(plan)
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.mark.parametrize("reader", ["pymysql", "connectorx"])
def test_default_stops_at_the_first_oversize_value(mysql_url, table, plan, tmp_path, reader):
    dest = tmp_path / "out"
    with pytest.raises(ValueConversionError) as err:
        execute_plan(plan, str(dest), source_url=mysql_url, reader=reader)
    text = str(err.value)
    assert table in text and "'lt'" in text and f"key {BAD_TEXT_KEY}" in text and "80,001 bytes" in text
    assert "VARCHAR(65535)" in text and "--oversize" in text
    files = _files(dest, plan)
    assert "manifest.json" not in files and not any("sparsesync-tmp" in f for f in files)
    ledger = json.loads((dest / output_folder(plan) / "_ledger.json").read_text())
    states = [g["state"] for g in ledger["groups"]]
    bad = next(g["index"] for g in ledger["groups"] if g["state"] == "running")
    # Stopped in the group holding the key: the groups after it were never read.
    assert all(s == "pending" for s in states[bad + 1:]) and len(states) > bad + 1
    assert any(r.lo <= BAD_TEXT_KEY < r.hi for r in plan.ranges_of(plan.files[bad]) if r.hi is not None)
    done_parts = {os.path.basename(p["name"]) for g in ledger["groups"] for p in g["parts"]}
    assert {f for f in files if f.endswith(".parquet")} == done_parts  # nothing of the failed group is left


def test_cli_stops_with_one_line_and_exit_7(mysql_url, plan, tmp_path):
    path = plan.save(tmp_path / "plan.json")
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    p = subprocess.run([sys.executable, "-m", "sparsesync", "execute", str(path), "--dest", str(tmp_path / "o"),
                        "--source", mysql_url, "--reader", "pymysql"], capture_output=True, text=True, env=env)
    assert p.returncode == 7 and "Traceback" not in p.stderr
    assert f"key {BAD_TEXT_KEY}" in p.stderr and "lt" in p.stderr


@pytest.mark.parametrize("reader", ["pymysql", "connectorx"])
def test_truncate_cuts_utf8_safely_and_counts(mysql_url, table, plan, tmp_path, reader):
    dest = tmp_path / "out"
    report = execute_plan(plan, str(dest), source_url=mysql_url, reader=reader, oversize="truncate")
    assert report.rows == 1000
    assert report.oversize["values"] == {"lt": 1, "lb": 1}
    assert report.oversize["max_bytes"]["lt"] == len(LONG_TEXT.encode()) and report.oversize["max_bytes"]["lb"] == len(LONG_BLOB)
    assert report.oversize["max_bytes"]["v"] == len("ünïcødé!!".encode())
    folder = dest / output_folder(plan)
    on_disk = json.loads((folder / "_report.json").read_text())
    assert on_disk["oversize"]["values"] == {"lt": 1, "lb": 1}
    con = duckdb.connect()
    lt, lb = con.execute(f"SELECT lt, lb FROM read_parquet('{folder}/*.parquet') WHERE id = {BAD_TEXT_KEY}").fetchone()
    assert lt == "é" * 32_767 and len(lt.encode()) == 65_534  # whole characters only
    lb = con.execute(f"SELECT lb FROM read_parquet('{folder}/*.parquet') WHERE id = {BAD_BLOB_KEY}").fetchone()[0]
    assert bytes(lb) == LONG_BLOB[:1_024_000]
    _assert_ddl_holds_output(folder, con)
    assert "truncated" in (folder / "copy.sql").read_text()


def test_keep_writes_values_and_warns_in_report_and_copy_sql(mysql_url, plan, tmp_path):
    dest = tmp_path / "out"
    report = execute_plan(plan, str(dest), source_url=mysql_url, reader="pymysql", oversize="keep")
    folder = dest / output_folder(plan)
    con = duckdb.connect()
    lt = con.execute(f"SELECT lt FROM read_parquet('{folder}/*.parquet') WHERE id = {BAD_TEXT_KEY}").fetchone()[0]
    assert lt == LONG_TEXT
    assert report.oversize["values"] == {"lt": 1, "lb": 1} and len(report.warnings) == 2
    assert any("warning" in line and "lt" in line for line in report.summary_lines())
    copy = (folder / "copy.sql").read_text()
    warnings = [line for line in copy.splitlines() if line.startswith("-- WARNING")]
    assert len(warnings) == 2 and "VARCHAR(65535)" in warnings[1] + warnings[0]
    statements = [s for s in re.sub(r"--[^\n]*\n", "", copy).split(";") if s.strip()]
    assert len(statements) == 1 and statements[0].strip().startswith("COPY")
    assert verify_output(plan, str(dest), source_url=mysql_url, all_columns=True).ok


def test_report_keeps_oversize_counts_of_groups_done_in_an_earlier_run(mysql_url, plan, tmp_path):
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=mysql_url, reader="pymysql", oversize="truncate")
    folder = dest / output_folder(plan)
    ledger = json.loads((folder / "_ledger.json").read_text())
    ledger["groups"][-1]["state"] = "running"  # a crash in the last group; the oversize rows were done before
    (folder / "_ledger.json").write_text(json.dumps(ledger))
    (folder / "manifest.json").unlink()
    report = execute_plan(plan, str(dest), source_url=mysql_url, reader="pymysql", oversize="truncate")
    assert report.groups_skipped >= 1 and report.oversize["values"] == {"lt": 1, "lb": 1}


def _assert_ddl_holds_output(folder, con) -> None:
    """Every text/binary column's widest output value fits the byte length create_table.sql declares."""
    ddl = (folder / "create_table.sql").read_text()
    declared = dict(re.findall(r'^\s*"([^"]+)" ((?:VARCHAR|VARBYTE)\(\d+\))', ddl, re.M))
    assert set(declared) >= {"lt", "lb", "v", "j"}
    for col, ty in declared.items():
        size = "strlen" if ty.startswith("VARCHAR") else "octet_length"  # both count bytes
        widest = con.execute(f"SELECT max({size}(\"{col}\")) FROM read_parquet('{folder}/*.parquet')").fetchone()[0]
        assert widest <= ddl_limit(ty), (col, widest, ty)


# ---- pieces ---------------------------------------------------------------------------------------------------
def test_truncate_utf8_never_splits_a_character():
    assert truncate_utf8("a😀b", 4) == "a"  # the emoji takes 4 bytes: 1 + 4 > 4
    assert truncate_utf8("a😀b", 5) == "a😀"
    assert truncate_utf8("éé", 3) == "é"
    assert truncate_utf8("abc", 10) == "abc"


def test_ddl_limits_parse_the_plan_types():
    assert ddl_limit("VARCHAR(65535)") == 65535 and ddl_limit("VARBYTE(1024000)") == 1_024_000
    assert ddl_limit("BIGINT") is None and ddl_limit("NUMERIC(20,0)") is None


def test_warning_lines_keep_a_hostile_column_name_on_one_comment_line():
    from sparsesync.planner.plan import ColumnSpec

    class P:
        columns = [ColumnSpec("x\nDROP TABLE users; --", "longtext", "string", "VARCHAR(65535)")]

    lines = warning_lines(P(), {"mode": "keep", "max_bytes": {"x\nDROP TABLE users; --": 70000},
                                "values": {"x\nDROP TABLE users; --": 3}})
    assert len(lines) == 1 and "\n" not in lines[0] and "70,000" in lines[0]


def test_unknown_oversize_choice_is_one_line_exit_2(sqlite_url, tmp_path):
    from tests.executor.test_run import make_sqlite_table

    make_sqlite_table(sqlite_url, list(range(1, 20)))
    path = make_plan(sqlite_url, "t", use_cache=False).save(tmp_path / "p.json")
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    p = subprocess.run([sys.executable, "-m", "sparsesync", "execute", str(path), "--dest", str(tmp_path / "o"),
                        "--source", sqlite_url, "--oversize", "shrink"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--oversize must be one of" in p.stderr
    assert not (tmp_path / "o").exists()
