"""Transient source faults are retried per range and survived; permanent ones stop the run at once.

Faults are real: the export connects as a MariaDB user of its own, and another connection runs
``KILL CONNECTION`` on that user's connections in the middle of the export (from the progress callback,
so the moment is deterministic). The output is read back with DuckDB and compared with the source.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid

import duckdb
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sparsesync.executor.retry import RetryPolicy
from sparsesync.executor.run import execute_plan
from sparsesync.planner.api import make_plan
from sparsesync.errors import SourceError, TransientSourceError, UsageError
from benchmarks.bench_faults import kill_one_busy, killer, user_connections
from tests.executor.test_one_run_per_plan import manifest_parts
from tests.executor.test_run import assert_clean_folder, source_keys

pytestmark = pytest.mark.mysql

# 4 KB rows: a range of 2,000 rows (8 MB) outgrows the socket buffers, so a kill lands while it streams.
WIDE_DDL = "CREATE TABLE {name} (id BIGINT PRIMARY KEY, pad VARCHAR(4000), n INT) ENGINE=InnoDB"


@pytest.fixture
def own_user(mysql_engine, mysql_url):
    """A MariaDB user only this test connects as (so its connections can be found and killed); its URL."""
    user = f"sps_{uuid.uuid4().hex[:10]}"
    password = "pw-" + uuid.uuid4().hex[:8]
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{password}'")
        conn.exec_driver_sql(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'")
        db = make_url(mysql_url).database
        for host in ("%%", "localhost"):
            conn.exec_driver_sql(f"GRANT SELECT ON `{db}`.* TO '{user}'@'{host}'")
    url = make_url(mysql_url).set(username=user, password=password)
    yield user, url.render_as_string(hide_password=False)
    _kill_all(mysql_engine, user)
    with mysql_engine.begin() as conn:
        for host in ("%%", "localhost"):
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")


def _kill_all(engine, user: str) -> int:
    """KILL CONNECTION every connection of ``user``; how many were live (one may end meanwhile: fine)."""
    n = 0
    with engine.begin() as conn:
        for pid in user_connections(conn, user):
            try:
                conn.exec_driver_sql(f"KILL CONNECTION {pid}")
                n += 1
            except sa.exc.OperationalError as exc:
                if "1094" not in str(exc):  # unknown thread id: it closed on its own
                    raise
    return n


def _fill(engine, name: str, n: int) -> list[int]:
    keys = list(range(1, n + 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} (id, pad, n) VALUES (:id, :pad, :n)"),
                     [{"id": k, "pad": f"{k:08d}" * 500, "n": k % 97} for k in keys])
        conn.exec_driver_sql(f"ANALYZE TABLE {name}")  # real row sizes for the planner's file groups
    return keys


SMALL_RCVBUF = 64 * 1024  # bytes; the kernel doubles it, and a set size turns receive autotuning off


def reader_connections(monkeypatch) -> dict[int, int]:
    """Thread id → server connection id of the pymysql session that thread opened last (updated on reconnect).

    Each reader connection also gets a small fixed receive buffer: Linux otherwise grows a loopback socket's
    buffer up to ``tcp_rmem``'s maximum (32 MB here), enough for the server to finish sending a whole 8 MB
    range before we read it — and a kill after that lands on an idle connection and is not a fault at all
    (the cause of `assert 2 == 3` on a loaded machine).
    """
    from sparsesync.executor.readers import PyMySQLReader

    ids: dict[int, int] = {}
    real = PyMySQLReader._connect

    def connect(self):
        conn = real(self)
        raw = conn.dbapi_connection
        raw._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
        ids[threading.get_ident()] = raw.thread_id()
        return conn

    monkeypatch.setattr(PyMySQLReader, "_connect", connect)
    return ids


def stream_killer(engine, ids: dict[int, int], *, kills: int, at_rows: int):
    """A progress callback killing, in ``kills`` different file groups, the first attempt at its ``at_rows``-th row.

    It runs on the reading thread between two batches, so that thread reads nothing while the kill is made;
    the kill goes to that thread's own connection (``ids``). Whether it is a fault is a condition, not a race:
    the range has far more bytes left (1,700 rows of 4 KB) than the server's send buffer (``tcp_wmem`` max,
    4 MB) and our fixed receive buffer can hold, so the server is still sending — which is checked (its
    connection runs the query) before the kill.
    """
    log, done_groups, mutex = [], set(), threading.Lock()
    seen: dict[int, tuple[int | None, int]] = {}  # thread → (group, rows of its current attempt)

    def progress(ev) -> None:
        me = threading.get_ident()
        if ev.kind == "retry":
            seen.pop(me, None)
            return
        if ev.kind != "batch":
            return
        group, rows = seen.get(me, (None, 0))
        rows = rows + ev.rows if group == ev.group else ev.rows
        seen[me] = (ev.group, rows)
        with mutex:
            if rows < at_rows or ev.group in done_groups or len(log) >= kills:
                return
            done_groups.add(ev.group)
        cid = ids[me]
        with engine.begin() as conn:
            command = conn.exec_driver_sql(
                "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s", (cid,)).scalar()
            assert command == "Query", f"connection {cid} of group {ev.group} is {command!r}, not streaming"
            conn.exec_driver_sql(f"KILL CONNECTION {cid}")
        log.append((ev.group, rows))

    progress.threads = []
    return progress, log


@pytest.mark.parametrize("reader,workers,where", [
    ("pymysql", 1, "local"), ("pymysql", 2, "local"), ("connectorx", 1, "local"), ("connectorx", 1, "s3"),
])
def test_three_killed_connections_are_survived_with_every_row_once(
    reader, workers, where, mysql_engine, mysql_table, own_user, tmp_path, request, monkeypatch
):
    user, url = own_user
    name = mysql_table(WIDE_DDL)
    keys = _fill(mysql_engine, name, 6000)
    plan = make_plan(url, name, rows_per_query=2000, file_size=1_000_000, use_cache=False)
    assert len(plan.files) >= 3
    if reader == "pymysql":
        # kill each of three groups' first attempt at its 300th row, on the reading thread's own connection,
        # while the server is provably still sending that range (see stream_killer): no timing involved
        progress, kills = stream_killer(mysql_engine, reader_connections(monkeypatch), kills=3, at_rows=300)
    else:
        # connectorx (which may hold a whole range before its first batch reaches us) opens one connection per
        # query: its next query is caught waiting on a brief table lock and killed there.
        progress, kills = killer(mysql_engine, user, [300, 2300, 4300], name)
    if where == "s3":
        dest, s3_client = f"s3://{request.getfixturevalue('s3_bucket')}/exports", request.getfixturevalue("s3_client")
    else:
        dest, s3_client = tmp_path / "out", None
    report = execute_plan(plan, str(dest), source_url=url, reader=reader, workers=workers, batch_rows=100,
                          retry_base_s=0.05, progress=progress)
    for t in progress.threads:
        t.join()
    assert len(kills) == 3
    assert report.retries == 3, report.retried_ranges
    assert sum(report.retried_ranges.values()) == report.retries
    assert report.rows == len(keys)
    parts = manifest_parts(str(dest), plan, s3_client, tmp_path)
    listing = "[" + ", ".join(f"'{p}'" for p in parts) + "]"
    got = [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet({listing}) ORDER BY id").fetchall()]
    assert got == source_keys(mysql_engine, name)
    if where == "local":
        assert_clean_folder(dest, plan)
    if reader == "pymysql" and workers == 1:
        assert report.consistency == "mixed"  # the snapshot ended with the first kill
    assert any(line.startswith(f"transient source faults survived: {report.retries} retr") for line in report.summary_lines())


def test_a_range_that_keeps_failing_stops_after_its_retries(mysql_engine, mysql_table, own_user, tmp_path, monkeypatch):
    user, url = own_user
    reader_connections(monkeypatch)  # a small receive buffer: the 4,000-row range cannot be buffered whole
    name = mysql_table(WIDE_DDL)
    _fill(mysql_engine, name, 4000)
    plan = make_plan(url, name, rows_per_query=4000, file_size=1_000_000, use_cache=False)
    state = {"rows": 0, "killed": False}
    kills, taken_back = [], []

    def progress(ev):  # kill once in every attempt, after its first 200 rows
        if ev.kind == "retry":
            taken_back.append(ev.rows)
            state.update(rows=0, killed=False)
        elif ev.kind == "batch":
            state["rows"] += ev.rows
            if state["rows"] >= 200 and not state["killed"]:
                state["killed"] = kill_one_busy(mysql_engine, user)
                kills.extend([1] if state["killed"] else [])

    with pytest.raises(TransientSourceError, match="still failing after 2 retries") as err:
        execute_plan(plan, str(tmp_path / "out"), source_url=url, reader="pymysql", batch_rows=100, retries=2,
                     retry_base_s=0.01, progress=progress)
    assert len(kills) == 3  # the first try and two retries
    assert err.value.key_range in [(r.lo, r.hi) for r in plan.ranges if r.est_rows]
    assert len(taken_back) == 3 and all(r < 0 for r in taken_back)  # each discarded attempt was taken back
    assert not list((tmp_path / "out").rglob("*.sparsesync-tmp"))


def test_permanent_error_stops_at_once_without_retry(mysql_engine, mysql_table, own_user, tmp_path, caplog):
    user, url = own_user
    name = mysql_table(WIDE_DDL)
    _fill(mysql_engine, name, 3000)
    plan = make_plan(url, name, rows_per_query=500, file_size=300_000, use_cache=False)
    renamed = {"done": False}

    def progress(ev):
        if ev.kind == "range" and not renamed["done"]:
            renamed["done"] = True
            with mysql_engine.begin() as conn:
                conn.exec_driver_sql(f"RENAME TABLE {name} TO {name}_gone")

    caplog.set_level(logging.WARNING, logger="sparsesync")
    try:
        with pytest.raises(SourceError) as err:
            execute_plan(plan, str(tmp_path / "out"), source_url=url, reader="connectorx", retries=5,
                         retry_base_s=0.01, progress=progress)
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"RENAME TABLE {name}_gone TO {name}")
    assert not err.value.transient
    assert not [r for r in caplog.records if "range_retry" in r.getMessage()]


def test_retry_policy_backoff_is_bounded_jittered_and_validated():
    policy = RetryPolicy(retries=5, base_s=0.5, cap_s=4.0)
    waits = [policy.delay(n) for n in (1, 2, 3, 4, 5, 6) for _ in range(200)]
    assert all(0.0 <= w <= 4.0 for w in waits)
    assert max(policy.delay(1) for _ in range(200)) <= 0.5 < max(policy.delay(3) for _ in range(200))
    assert len({round(policy.delay(4), 6) for _ in range(50)}) > 40  # jitter: waiters do not line up
    with pytest.raises(UsageError, match="--retries"):
        RetryPolicy(retries=-1)


@pytest.mark.parametrize("code,transient", [
    (2013, True), (2006, True), (2003, True), (1213, True), (1205, True), (1146, False), (1064, False), (1045, False),
])
def test_driver_errors_are_classified_by_code(code, transient):
    """The codes pymysql raises (real exception objects) decide retry or stop."""
    import pymysql

    from sparsesync.executor.readers import _source_error

    plan = type("P", (), {"source": type("S", (), {"qualified_table": "t"})()})()
    err = _source_error(pymysql.err.OperationalError(code, "server said no"), plan, None, "range query")
    assert err.transient is transient and isinstance(err, SourceError)
