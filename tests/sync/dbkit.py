"""A dedicated database and MariaDB user per test, so ``--all`` and the processlist see only this test.

Test modules import the fixtures they use from here (``from .dbkit import database``).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sparsesync.bench.fixtures import create_fixture

# "%%": the driver formats the statement, so a literal % is doubled.
HOSTS = ("%%", "localhost", "127.0.0.1")


class Database:
    """``sparsesync_t_<uuid>`` with its own user; ``url`` connects as that user."""

    def __init__(self, admin_url: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.name, self.user, self.password = f"sparsesync_t_{tag}", f"ss_{tag}", f"pw_{tag}"
        self.admin = sa.create_engine(make_url(admin_url).set(database=self.name), pool_pre_ping=True)
        root = sa.create_engine(admin_url)
        with root.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{self.name}`")
            for host in HOSTS:
                conn.exec_driver_sql(f"CREATE USER '{self.user}'@'{host}' IDENTIFIED BY '{self.password}'")
                conn.exec_driver_sql(f"GRANT ALL ON `{self.name}`.* TO '{self.user}'@'{host}'")
        root.dispose()
        self.root_url = admin_url
        self.url = make_url(admin_url).set(username=self.user, password=self.password, database=self.name) \
            .render_as_string(hide_password=False)

    def fixture(self, shape: str, rows: int, table: str):
        return create_fixture(self.admin, shape, rows, table=table, seed=7)

    def execute(self, *sql: str) -> None:
        with self.admin.begin() as conn:
            for s in sql:
                conn.exec_driver_sql(s)

    def drop(self) -> None:
        self.admin.dispose()
        root = sa.create_engine(self.root_url)
        with root.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{self.name}`")
            for host in HOSTS:
                conn.exec_driver_sql(f"DROP USER IF EXISTS '{self.user}'@'{host}'")
        root.dispose()


@pytest.fixture
def database(mysql_url):
    db = Database(mysql_url)
    try:
        yield db
    finally:
        db.drop()


class ProcesslistSampler:
    """Samples how many connections ``user`` has open on the server, every few milliseconds, in a thread."""

    def __init__(self, admin_url: str, user: str, every_s: float = 0.005) -> None:
        self.engine = sa.create_engine(admin_url)
        self.user, self.every_s = user, every_s
        self.samples: list[int] = []
        self.at_peak: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        stmt = sa.text("SELECT ID, COMMAND, STATE, LEFT(INFO, 80) FROM information_schema.PROCESSLIST WHERE USER = :u")
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                rows = [tuple(r) for r in conn.execute(stmt, {"u": self.user})]
                conn.commit()
                if len(rows) > self.peak:
                    self.at_peak = rows  # what the server listed at the worst moment, for the failure message
                self.samples.append(len(rows))
                time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


from tests.executor.conftest import s3_bucket, s3_client, s3_env, s3_server  # noqa: E402,F401 - the loopback S3
