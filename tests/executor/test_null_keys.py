"""A nullable key column: rows whose key is NULL are planned (one ``key IS NULL`` range), exported by
every reader, and verified against the source — issue 7 finding 1 (they used to vanish silently)."""

from __future__ import annotations

import json

import duckdb
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from sparsesync.executor.run import execute_plan
from sparsesync.executor.verify import verify_output
from sparsesync.planner.api import make_plan
from sparsesync.planner.plan import Plan, load_plan
from sparsesync.errors import VerifyError
from tests.executor.test_run import out_dir

NULLABLE_DDL = ("CREATE TABLE {name} (pk INT AUTO_INCREMENT PRIMARY KEY, ext_id BIGINT NULL, v VARCHAR(20), "
                "d DATETIME NULL, x DOUBLE NULL, UNIQUE KEY (ext_id)) ENGINE=InnoDB")


def _fill(engine, name: str, n: int = 600, null_every: int = 5) -> tuple[int, int]:
    rows = [{"e": None if i % null_every == 0 else i * 7 - 1000, "v": f"v{i}|", "d": f"2024-02-{1 + i % 28:02d} 01:02:03",
             "x": i / 7 * 10.0 ** (i % 40 - 20)} for i in range(n)]
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` (ext_id, v, d, x) VALUES (:e, :v, :d, :x)"), rows)
    nulls = sum(1 for r in rows if r["e"] is None)
    return n, nulls


def _output(dest, plan) -> tuple[int, int]:
    manifest = json.loads((out_dir(dest, plan) / "manifest.json").read_text())
    urls = [e["url"] for e in manifest["entries"]]
    return duckdb.sql(f"SELECT count(*), count(*) FILTER (ext_id IS NULL) FROM read_parquet({urls!r})").fetchall()[0]


@pytest.mark.mysql
def test_plan_has_a_null_key_range_counted_and_warned(mysql_engine, mysql_table, tmp_path):
    name = mysql_table(NULLABLE_DDL, prefix="nk")
    n, nulls = _fill(mysql_engine, name)
    plan = make_plan(mysql_engine, name, key="ext_id", rows_per_query=100, file_size=4_000)
    nr = plan.null_range
    assert nr is not None and nr is plan.ranges[-1] and nr.est_rows == nulls and nr.exact and nr.label == "nulls"
    assert plan.tail is plan.ranges[-2] and plan.tail.hi is None
    assert any("'ext_id' is nullable" in w and f"{nulls:,}" in w for w in plan.warnings)
    assert plan.format_version == "1.1" and plan.estimates.rows == n
    assert plan.files[-1].last_range == nr.index
    again = load_plan(plan.save(tmp_path / "p.json"))  # schema and check_structure accept it
    assert again == plan and json.loads((tmp_path / "p.json").read_text())["ranges"][-1]["nulls"] is True
    # A NOT NULL key has no such range and no extra pre-scan query.
    plain = make_plan(mysql_engine, name, rows_per_query=100)
    assert plain.null_range is None and not any("nullable" in w for w in plain.warnings)


@pytest.mark.mysql
@pytest.mark.parametrize("reader,workers", [("pymysql", 1), ("pymysql", 2), ("connectorx", 1), ("connectorx", 2)])
def test_every_row_exported_and_verified(reader, workers, mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(NULLABLE_DDL, prefix="nk")
    n, nulls = _fill(mysql_engine, name)
    plan = make_plan(mysql_engine, name, key="ext_id", rows_per_query=100, file_size=4_000)
    dest = tmp_path / "out"
    rep = execute_plan(plan, str(dest), source_url=mysql_url, reader=reader, workers=workers)
    assert rep.rows == n and rep.verified == "counts"
    assert _output(dest, plan) == (n, nulls)
    assert rep.ranges[-1].actual == nulls
    for all_columns in (False, True):
        v = verify_output(plan, str(dest), source_url=mysql_url, all_columns=all_columns)
        assert v.ok and v.source_rows == v.output_rows == n

    # The NULL-key rows lost from the output: the NULL range is named.
    part = out_dir(dest, plan) / plan.files[-1].name
    t = pq.read_table(part)
    pq.write_table(t.filter(t.column("ext_id").is_valid()), part)
    with pytest.raises(VerifyError) as err:
        verify_output(plan, str(dest), source_url=mysql_url)
    assert f"missing rows: #{plan.null_range.index} key IS NULL" in err.value.one_line()
    pq.write_table(t, part)

    # A NULL-key row changed at the source: only --all-columns sees it, in the NULL range.
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE `{name}` SET v = 'changed' WHERE ext_id IS NULL LIMIT 1")
    assert verify_output(plan, str(dest), source_url=mysql_url).ok
    v = verify_output(plan, str(dest), source_url=mysql_url, all_columns=True, raise_on_mismatch=False)
    assert v.differ == [plan.null_range.index] and not v.missing


@pytest.fixture(scope="module")
def app():
    from sparsesync.cli import _register, app

    _register()
    return app


@pytest.mark.mysql
def test_cli_verify_exit_9_names_the_range(app, mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(NULLABLE_DDL, prefix="nk")
    _fill(mysql_engine, name, n=50)
    plan = make_plan(mysql_engine, name, key="ext_id", rows_per_query=10)
    path = plan.save(tmp_path / "plan.json")
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=mysql_url)
    runner = CliRunner()
    res = runner.invoke(app, ["verify", str(path), "--dest", str(dest), "--source", mysql_url])
    assert res.exit_code == 0, res.output
    with mysql_engine.begin() as conn:  # rows deleted at the source: NULL keys and one keyed range
        conn.exec_driver_sql(f"DELETE FROM `{name}` WHERE ext_id IS NULL OR ext_id < -900")
    res = runner.invoke(app, ["verify", str(path), "--dest", str(dest), "--source", mysql_url, "--all-columns"])
    assert res.exit_code == 9, res.output
    assert "duplicated rows: #0 [" in res.output and "key IS NULL" in res.output
    assert "Traceback" not in res.output


def _sqlite_nullable_key(tmp_path, rows: int, ext, v) -> tuple[str, sa.Engine]:
    """SQLite table ``t`` with a unique nullable key ``ext``: every fourth row's key is NULL."""
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (pk INTEGER PRIMARY KEY, ext INTEGER, v TEXT)")
        conn.exec_driver_sql("CREATE UNIQUE INDEX t_ext ON t (ext)")
        conn.execute(sa.text("INSERT INTO t (ext, v) VALUES (:e, :v)"),
                     [{"e": None if i % 4 == 0 else ext(i), "v": v(i)} for i in range(rows)])
    return url, engine


def test_sqlite_nullable_key(tmp_path):
    url, engine = _sqlite_nullable_key(tmp_path, 400, ext=lambda i: i * 3, v=lambda i: f"r{i}")
    plan = make_plan(url, "t", key="ext", rows_per_query=50, file_size=2_000)
    assert plan.null_range is not None and plan.null_range.est_rows == 100
    rep = execute_plan(plan, str(tmp_path / "out"), source_url=url)
    assert rep.rows == 400
    assert verify_output(plan, str(tmp_path / "out"), source_url=url, all_columns=True).ok
    # The rowid alias (INTEGER PRIMARY KEY) never holds NULL: no NULL range for it.
    assert make_plan(url, "t", rows_per_query=50).null_range is None
    engine.dispose()


def test_a_1_0_plan_without_the_null_range_loads_and_verify_reports_the_unplanned_nulls(tmp_path):
    """Plans made before format 1.1 stay loadable; their missed NULL-key rows are reported, not hidden."""
    url, engine = _sqlite_nullable_key(tmp_path, 40, ext=lambda i: i, v=lambda i: "x")
    new = make_plan(url, "t", key="ext", rows_per_query=10)
    body = new.to_dict()
    body.pop("sha256")
    body["format_version"] = "1.0"
    body["ranges"] = body["ranges"][:-1]
    body["files"][-1]["ranges"][1] -= 1
    body["warnings"] = []
    from sparsesync.planner.plan import content_hash

    body["sha256"] = content_hash(body)
    old = Plan.from_dict(body)
    assert old.null_range is None and old.format_version == "1.0"
    with pytest.raises(VerifyError, match=r"10 row\(s\) with a NULL key are in no range of this plan"):
        execute_plan(old, str(tmp_path / "out"), source_url=url)
    engine.dispose()
    with pytest.raises(VerifyError, match="10 row\\(s\\) with a NULL key are in no range of this plan"):
        execute_plan(old, str(tmp_path / "out2"), source_url=url, workers=2)  # counted after the run
    execute_plan(old, str(tmp_path / "out3"), source_url=url, verify=False)
    rep = verify_output(old, str(tmp_path / "out3"), source_url=url, raise_on_mismatch=False)
    assert not rep.ok and rep.unplanned_null_rows == 10 and rep.output_rows == rep.source_rows == 30


@pytest.mark.mysql
@pytest.mark.parametrize("reader", ["pymysql", "connectorx"])
def test_hostile_names_through_the_checks(reader, mysql_engine, mysql_url, tmp_path):
    """Quoted, never pasted: backtick, quote, percent, semicolon and a comment in table and column names.
    (No newline, and no backtick in the key column: SQLAlchemy's MySQL reflection misreads such indexes.)"""
    from tests.conftest import unique_name

    table = unique_name("h") + "`x'%; --"
    key, col = "e'k%;", 'v"%s;`'
    qt = "`" + table.replace("`", "``") + "`"
    qk, qc = "`" + key.replace("`", "``") + "`", "`" + col.replace("`", "``") + "`"
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {qt} (id INT PRIMARY KEY, {qk} BIGINT NULL, {qc} TEXT, UNIQUE KEY ({qk}))"
                             .replace("%", "%%"))
        conn.execute(sa.text(f"INSERT INTO {qt} VALUES (:i, :k, :v)"),
                     [{"i": i, "k": None if i % 3 == 0 else i, "v": f"'%{i};"} for i in range(60)])
    try:
        plan = make_plan(mysql_engine, table, key=key, rows_per_query=15)
        assert plan.null_range is not None and plan.null_range.est_rows == 20
        rep = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader=reader)
        assert rep.rows == 60 and rep.count_check["mismatched"] == 0
        assert verify_output(plan, str(tmp_path / "out"), source_url=mysql_url, all_columns=True).ok
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {qt}".replace("%", "%%"))
