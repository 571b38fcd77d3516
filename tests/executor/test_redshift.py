"""Redshift load files: manifest with real content lengths (written last), COPY and CREATE TABLE."""

from __future__ import annotations

import json
import os

from sparsesync.executor import redshift
from sparsesync.executor.run import execute_plan
from sparsesync.planner.api import make_plan
from tests.executor.test_run import MYSQL_DDL, fill_mysql, make_sqlite_table, out_dir, sparse_keys


def test_manifest_lists_every_part_with_its_real_size_and_is_written_last(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(2000))
    plan = make_plan(sqlite_url, "t", rows_per_query=200, file_size=20_000)
    execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url, compression="snappy")
    folder = out_dir(tmp_path / "out", plan)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [os.path.basename(e["url"]) for e in manifest["entries"]] == [f.name for f in plan.files]
    for e in manifest["entries"]:
        assert e["mandatory"] is True
        assert e["meta"]["content_length"] == os.path.getsize(e["url"]) > 0
    # The commit marker comes after everything else of the run.
    mtime = (folder / "manifest.json").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= mtime for p in folder.iterdir())


def test_copy_sql_names_manifest_and_role(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, list(range(1, 100)))
    plan = make_plan(sqlite_url, "t")
    execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url, iam_role="arn:aws:iam::123456789012:role/load")
    sql = (out_dir(tmp_path / "out", plan) / "copy.sql").read_text()
    manifest = str(out_dir(tmp_path / "out", plan) / "manifest.json")
    assert f"FROM '{manifest}'" in sql
    assert "IAM_ROLE 'arn:aws:iam::123456789012:role/load'" in sql
    assert "FORMAT AS PARQUET" in sql and "MANIFEST;" in sql and 'COPY "t"' in sql
    assert redshift.IAM_ROLE_PLACEHOLDER in redshift.copy_sql(plan, "s3://b/m.json")


def test_create_table_from_plan_types(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(MYSQL_DDL)
    fill_mysql(mysql_engine, name, [1, 2, 3])
    plan = make_plan(mysql_url, name)
    ddl = redshift.create_table_sql(plan)
    assert f'CREATE TABLE IF NOT EXISTS "{name}"' in ddl
    for c in plan.columns:
        line = next(l for l in ddl.splitlines() if l.strip().startswith(f'"{c.name}"'))
        assert c.redshift_type in line
        assert ("NOT NULL" in line) == (not c.nullable)
    assert '"id" BIGINT NOT NULL' in ddl and 'SORTKEY ("id")' in ddl


def test_identifiers_are_quoted():
    assert redshift.quote_ident('we"ird') == '"we""ird"'
