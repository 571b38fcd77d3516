"""Many tables under one connection budget: real MariaDB, a dedicated database and user, processlist sampled."""

from __future__ import annotations

import json
import duckdb
import pytest

from sparsesync.errors import UsageError
from sparsesync.sync.many import select_tables, sync_many
from sparsesync.sync.table import SyncOptions, sync_table

from .dbkit import ProcesslistSampler, database  # noqa: F401 - fixture


pytestmark = pytest.mark.mysql


def Opts(**kw) -> SyncOptions:
    return SyncOptions(**{"rows_per_query": 500, "use_cache": False, **kw})


def full_export(source_url, table, dest, options, *, engine, events):
    """The real sync of one table, through the budgeted engine."""
    return sync_table(source_url, table, dest, options, engine=engine, events=events, raise_errors=True)


def exported_ids(dest, table) -> list[int]:
    con = duckdb.connect()
    try:
        urls = [e["url"] for e in json.loads((dest / table / "current.manifest.json").read_text())["entries"]]
        return [r[0] for r in con.execute("SELECT id FROM read_parquet(?) ORDER BY id", [urls]).fetchall()]
    finally:
        con.close()


def source_ids(db, table) -> list[int]:
    with db.admin.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(f"SELECT id FROM `{table}` ORDER BY id")]


def make_six(db):
    for shape in ("dense", "uniform_sparse", "outliers", "snowflake"):
        db.fixture(shape, 1500, table=f"t_{shape}")
    db.execute("CREATE TABLE t_keyless (name VARCHAR(20), v INT)", "INSERT INTO t_keyless VALUES ('a', 1), ('b', 2)",
               "CREATE TABLE t_empty (id BIGINT PRIMARY KEY, v INT)")


def test_sync_all_stays_within_two_connections_and_reports_the_keyless_table(database, tmp_path):
    make_six(database)
    events, readers = [], set()

    def export(source_url, table, dest, options, **kw):
        readers.add(options.reader)
        return full_export(source_url, table, dest, options, **kw)

    with ProcesslistSampler(database.root_url, database.user) as sampler:
        summary = sync_many(database.url, None, str(tmp_path), Opts(reader="auto"), connections=2,
                            sync_fn=export, events=events.append)
    assert readers == {"pymysql"}  # connectorx's own connection pools cannot be budgeted
    assert sampler.samples and 1 <= sampler.peak <= 2, sampler.at_peak
    assert 1 <= summary.peak_connections <= 2
    by = {t["table"]: t for t in summary.tables}
    assert set(by) == {"t_dense", "t_uniform_sparse", "t_outliers", "t_snowflake", "t_keyless", "t_empty"}
    assert summary.failed == ["t_keyless"] and "key" in by["t_keyless"]["error"].lower()
    assert summary.exit_code() == 3  # KeyColumnError is a source error
    for t in ("t_dense", "t_uniform_sparse", "t_outliers", "t_snowflake"):
        assert exported_ids(tmp_path, t) == source_ids(database, t), t
    assert by["t_empty"]["status"] in ("ok", "empty") and by["t_empty"]["rows_read"] == 0
    report = json.loads((tmp_path / "_sync_report.json").read_text())
    assert report["failed"] == ["t_keyless"] and len(report["tables"]) == 6
    assert database.password not in (tmp_path / "_sync_report.json").read_text()
    kinds = [e["event"] for e in events]
    assert kinds.count("table_start") == 6 and kinds.count("table_done") == 6 and kinds[-1] == "sync_summary"


def test_one_connection_is_enough_and_never_exceeded(database, tmp_path):
    database.fixture("dense", 800, table="a")
    database.fixture("outliers", 800, table="b")
    with ProcesslistSampler(database.root_url, database.user) as sampler:
        summary = sync_many(database.url, ["a", "b"], str(tmp_path), Opts(), connections=1, sync_fn=full_export)
    assert summary.failed == [] and sampler.peak == 1 and summary.peak_connections == 1


def test_a_table_needing_more_than_its_share_fails_on_its_own_line(database, tmp_path):
    database.fixture("dense", 200, table="a")
    database.fixture("dense", 200, table="b")

    def greedy(source_url, table, dest, options, *, engine, events):
        with engine.connect(), engine.connect():  # two at once with a share of one
            pass
        return full_export(source_url, table, dest, options, engine=engine, events=events)

    summary = sync_many(database.url, ["a", "b"], str(tmp_path), Opts(reader="pymysql"), connections=2, sync_fn=greedy,
                        wait_s=0.5)
    assert summary.failed == ["a", "b"]
    assert all("needs more than its 1 connection" in t["error"] for t in summary.tables)


def test_connectorx_is_refused_under_a_budget(database, tmp_path):
    database.fixture("dense", 50, table="a")
    with pytest.raises(UsageError, match="cannot be held to --connections"):
        sync_many(database.url, ["a"], str(tmp_path), Opts(reader="connectorx"), connections=4, sync_fn=full_export)


def test_an_idle_pooled_connection_keeps_its_slot(database):
    import sqlalchemy as sa

    from sparsesync.sync.budget import ConnectionBudget, budget_engine

    def on_server() -> int:
        with database.admin.connect() as conn:
            return conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = :u"),
                                {"u": database.user}).scalar()

    budget = ConnectionBudget(1, wait_s=0.5)
    with budget.reserve(1) as share:
        engine = budget_engine(database.url, share)
        assert budget.open == 0  # the connection check at creation is closed again
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert budget.open == 1 and on_server() == 1  # idle in the pool: still one of ours, still counted
        with pytest.raises(Exception, match="needs more than its 1 connection"):
            with engine.connect(), engine.connect():
                pass
        engine.dispose()
        assert budget.open == 0


def test_select_tables_largest_first_with_exclusions():
    avail = [("big", 900), ("mid", 500), ("tmp_x", 700), ("small", 1)]
    assert select_tables(avail, None, ["tmp_*"]) == ["big", "mid", "small"]
    assert select_tables(avail, ["small", "big", "missing"], ()) == ["big", "small", "missing"]
