"""Shared fixtures: the real MariaDB/MySQL server, SQLite files, unique table names.

MySQL tests read ``SPARSESYNC_TEST_MYSQL_URL`` (default ``mysql+pymysql://root@127.0.0.1:3306/test``).
Under ``CI=true`` an unreachable server fails the run; elsewhere those tests skip with the reason.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def pytest_configure(config):
    """Keep the histogram cache of this test session out of the user's ~/.cache (and out of later runs)."""
    import tempfile

    config._sparsesync_cache = tempfile.mkdtemp(prefix="sparsesync-test-cache-")
    os.environ["XDG_CACHE_HOME"] = config._sparsesync_cache


def pytest_unconfigure(config):
    import shutil

    path = getattr(config, "_sparsesync_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


def _mysql_url() -> str:
    return os.environ.get("SPARSESYNC_TEST_MYSQL_URL", DEFAULT_MYSQL_URL)


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """URL of a reachable test server, or skip (fail under CI)."""
    url = _mysql_url()
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        msg = f"MySQL test server not reachable at {sa.engine.make_url(url).render_as_string(hide_password=True)}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: the server is required)")
        pytest.skip(msg)
    return url


@pytest.fixture(scope="session")
def mysql_engine(mysql_url):
    engine = sa.create_engine(mysql_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


def unique_name(prefix: str = "t") -> str:
    """A table name no other test (or concurrent run) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def mysql_table(mysql_engine):
    """Factory: ``name = mysql_table(ddl_template)``; ``{name}`` in the DDL is replaced; dropped after the test."""
    created: list[str] = []

    def make(ddl: str, prefix: str = "t") -> str:
        name = unique_name(prefix)
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(ddl.format(name=name))
        created.append(name)
        return name

    yield make
    with mysql_engine.begin() as conn:
        for name in created:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'source.db'}"


@pytest.fixture
def query_log(mysql_engine):
    """Server-side statement counter (general log to table), see benchmarks.counters."""
    from sparsesync.bench.counters import QueryLog

    with QueryLog(mysql_engine) as log:
        yield log


def insert_keys(engine, table: str, keys, extra=None, chunk: int = 5000) -> None:
    """Insert rows with the given ids (and optional extra column values) in multi-row batches."""
    keys = list(keys)
    with engine.begin() as conn:
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            if extra is None:
                conn.execute(sa.text(f"INSERT INTO {table} (id) VALUES (:id)"), [{"id": k} for k in part])
            else:
                conn.execute(
                    sa.text(f"INSERT INTO {table} (id, v) VALUES (:id, :v)"),
                    [{"id": k, "v": extra(k)} for k in part],
                )
