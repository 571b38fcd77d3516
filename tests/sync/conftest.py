"""Helpers for sync tests: a MariaDB table with a cursor column, and reading an image back with DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

SYNC_DDL = (
    "CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(40), n INT NULL, "
    "updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (updated_at))"
)


def image_rows(dest: Path, table: str, columns: str = "id, v, n") -> list[tuple]:
    """Rows of the parts listed in ``current.manifest.json``, read with DuckDB, ordered by id."""
    manifest = dest / table / "current.manifest.json"
    if not manifest.exists():
        return []
    urls = [e["url"] for e in json.loads(manifest.read_text())["entries"]]
    assert len(urls) == len(set(urls)), "a part is referenced twice"
    return duckdb.sql(f"SELECT {columns} FROM read_parquet({urls!r}) ORDER BY id").fetchall()


def source_rows(engine, table: str, columns: str = "id, v, n") -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {columns} FROM `{table}` ORDER BY id")]


def state_of(dest: Path, table: str) -> dict:
    return json.loads((dest / table / "_state.json").read_text())


@pytest.fixture
def sync_table_name(mysql_table):
    """A fresh table (see SYNC_DDL) with rows id 1..n inserted by the test."""
    return lambda: mysql_table(SYNC_DDL, prefix="sy")


# The loopback moto S3 fixtures live with the executor's tests; sync tests use the same ones.
from tests.executor.conftest import s3_bucket, s3_client, s3_env, s3_server  # noqa: E402,F401
