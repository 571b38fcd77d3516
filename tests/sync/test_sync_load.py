"""Issue 9 acceptance 1(b)/(c) with real syncs: after each sync, ``load`` into DuckDB makes the warehouse
equal to the image (and the source); applying every run twice changes nothing; an older run is refused."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.executor.dest import open_sink
from sparsesync.sync.load import LoadError, apply_run_duckdb, load_pending, read_state
from sparsesync.sync.table import SyncOptions, sync_table
from tests.conftest import unique_name

from .dbkit import database  # noqa: F401 - fixture

pytestmark = pytest.mark.mysql

DDL = "CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(40), n INT NULL)"
# A nullable unique key: rows whose key is NULL live in the image's NULL-key part and load with it.
NULLABLE_DDL = "CREATE TABLE `{name}` (id BIGINT NULL, v VARCHAR(40), n INT NULL, UNIQUE KEY (id))"
INITIAL = list(range(1, 121)) + list(range(300, 6000, 113)) + [70_000, 2**62]
KEYS = st.one_of(st.integers(-200, 0), st.integers(1, 130), st.integers(121, 7000), st.just(2**62 + 5), st.none())
OP = st.one_of(
    st.tuples(st.just("insert"), KEYS),
    st.tuples(st.just("update"), st.integers(0, 10_000)),
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
)
OPTS = SyncOptions(detect="checksum", rows_per_query=25, file_size_mb=0.002, reader="pymysql", use_cache=False)


def ordered(rows) -> list[tuple]:
    return sorted((tuple(r) for r in rows), key=lambda r: (r[0] is None, r[0] or 0, str(r[1:])))


def rows_of(conn, sql: str) -> list[tuple]:
    return ordered(conn.execute(sa.text(sql)))


def warehouse(path: Path, table: str) -> list[tuple]:
    con = duckdb.connect(str(path))
    try:
        return ordered(con.execute(f'SELECT id, v, n FROM "{table}"').fetchall())
    finally:
        con.close()


def apply_ops(engine, table, ops, step):
    with engine.begin() as conn:
        keys = [r[0] for r in conn.exec_driver_sql(f"SELECT id FROM `{table}` WHERE id IS NOT NULL ORDER BY id")]
        for i, (kind, arg) in enumerate(ops):
            if kind == "insert":
                conn.execute(sa.text(f"INSERT IGNORE INTO `{table}` VALUES (:id, :v, NULL)"), {"id": arg, "v": f"i{step}.{i}"})
            elif keys and kind == "update":
                conn.execute(sa.text(f"UPDATE `{table}` SET v = :v, n = :n WHERE id = :id"),
                             {"id": keys[arg % len(keys)], "v": f"u{step}.{i}", "n": step})
            elif keys and kind == "delete":
                conn.execute(sa.text(f"DELETE FROM `{table}` WHERE id = :id"), {"id": keys[arg % len(keys)]})


@pytest.mark.parametrize("ddl", [DDL, NULLABLE_DDL], ids=["primary-key", "nullable-key"])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.lists(OP, max_size=8), min_size=1, max_size=3))
def test_load_after_every_sync_equals_the_source_and_twice_changes_nothing(mysql_url, mysql_engine, ddl, steps):
    table = unique_name("ld")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(ddl.format(name=table))
        conn.execute(sa.text(f"INSERT INTO `{table}` VALUES (:id, :v, 1)"), [{"id": k, "v": f"x{k}"} for k in INITIAL])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            dest, once, twice = tmp / "lake", tmp / "once.duckdb", tmp / "twice.duckdb"
            sink = open_sink(str(dest))
            for n, ops in enumerate([[]] + steps):
                apply_ops(mysql_engine, table, ops, n)
                opts = OPTS if ddl == DDL else dataclasses.replace(OPTS, key="id")
                res = sync_table(mysql_url, table, dest, opts, raise_errors=True)
                assert res.status in ("ok", "empty")
                load_pending(str(dest), table, f"duckdb:///{once}")
                state = read_state(sink, table)
                run = state["runs"][-1]
                con = duckdb.connect(str(twice))
                try:
                    con.execute("CREATE TABLE IF NOT EXISTS sparsesync_loads (target VARCHAR(512), run_id VARCHAR(64), sequence BIGINT, applied_at TIMESTAMP)")
                    for _ in range(2):
                        apply_run_duckdb(con, sink, state, run, table, str(tmp))
                finally:
                    con.close()
                with mysql_engine.connect() as conn:
                    source = rows_of(conn, f"SELECT id, v, n FROM `{table}`")
                assert warehouse(once, table) == source, f"after sync {n + 1}"
                assert warehouse(twice, table) == source, f"after sync {n + 1}, each run applied twice"
            if len(state["runs"]) > 1:  # the first run after the last one: refused, nothing changed
                con = duckdb.connect(str(once))
                try:
                    with pytest.raises(LoadError, match="newer run is already applied"):
                        apply_run_duckdb(con, sink, state, state["runs"][0], table, str(tmp))
                finally:
                    con.close()
                assert warehouse(once, table) == source
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")


def test_the_load_sql_of_a_real_run_names_its_manifest(mysql_url, mysql_table, tmp_path):
    table = mysql_table(DDL.replace("`{name}`", "{name}"), prefix="ls")
    with sa.create_engine(mysql_url).begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{table}` VALUES (1, 'a', 1), (2, 'b', NULL)")
    res = sync_table(mysql_url, table, tmp_path, OPTS, raise_errors=True)
    sql = (tmp_path / table / res.run_id / "load.sql").read_text()
    assert f"{tmp_path / table / res.run_id / 'manifest.json'}" in sql and "COPY" in sql and sql.rstrip().endswith("COMMIT;")


def test_cli_sync_all_then_load(database, tmp_path):
    """`sparsesync sync --all` end to end: one line per table, the failed one named, metrics file, then load."""
    from prometheus_client.parser import text_string_to_metric_families
    from typer.testing import CliRunner

    from sparsesync.cli import _register, app

    _register()
    database.fixture("dense", 700, table="t_dense")
    database.execute("CREATE TABLE t_keyless (name VARCHAR(20))", "CREATE TABLE t_empty (id BIGINT PRIMARY KEY)")
    import socket

    lake, prom = tmp_path / "lake", tmp_path / "sync.prom"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(app, ["sync", database.url, "--all", "--dest", str(lake), "--connections", "2",
                                   "--rows-per-query", "200", "--no-cache", "--metrics-file", str(prom),
                                   "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"])
    assert res.exit_code == 3, res.output  # the keyless table's error kind (source)
    lines = res.stdout.splitlines()
    assert any(line.startswith("t_dense  ok") for line in lines) and any(line.startswith("t_keyless  FAILED") for line in lines)
    assert "1 table(s) failed: t_keyless" in res.stderr and "Traceback" not in res.output
    events = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    done = {e["table"]: e for e in events if e["event"] == "table_done"}  # one JSON line per table's run
    assert set(done) == {"t_dense", "t_keyless", "t_empty"} and done["t_dense"]["rows_read"] == 700
    text = prom.read_text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    rows = {s.labels["table"]: s.value for s in fams["sparsesync_sync_rows_read"].samples}
    assert rows["t_dense"] == 700
    for f in (prom, lake / "_sync_report.json"):
        assert database.password not in f.read_text()
    assert database.password not in res.output
    with socket.socket() as s:  # the metrics server was shut down with the sync
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))

    wh = tmp_path / "wh.duckdb"
    res = CliRunner().invoke(app, ["load", str(lake), "t_dense", "--into", f"duckdb:///{wh}"])
    assert res.exit_code == 0, res.output
    with database.admin.connect() as conn:
        source = sorted(tuple(r) for r in conn.exec_driver_sql("SELECT id, amount FROM t_dense"))
    assert sorted(duckdb.connect(str(wh)).execute("SELECT id, amount FROM t_dense").fetchall()) == source
