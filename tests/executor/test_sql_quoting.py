"""Generated SQL (copy.sql, create_table.sql) never carries an identifier outside proper quoting.

Each file is parsed statement by statement with a real SQL parser (sqlglot's Redshift dialect, which
reads backslash escapes in string literals as Redshift does) and must hold exactly the expected
statements, naming exactly the table and columns the source has — whatever those names contain.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sparsesync.executor import redshift
from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.planner.api import make_plan
from sparsesync.errors import PlanError, UsageError

HOSTILE_NAMES = [
    "t\nDROP TABLE public.users; --",
    'we"ird',
    "back`tick",
    "semi;colon",
    "dash -- comment",
    "slash /* open",
    "quote'q\\",
    "ünï©ødé ✓ 表",
    "cr\r\nline",
]


def parse_statements(text: str) -> list[exp.Expression]:
    """Every statement of ``text`` (comments are not statements)."""
    return [s for s in sqlglot.parse(text, read="redshift") if s is not None]


def check_generated(folder: Path, plan_id: str, table: str, columns: list[str], key: str, manifest_url: str) -> None:
    """copy.sql: one COPY of ``table`` from ``manifest_url``; create_table.sql: one CREATE of it with ``columns``."""
    copy = parse_statements((folder / "copy.sql").read_bytes().decode())
    assert len(copy) == 1, copy
    stmt = copy[0]
    assert isinstance(stmt, exp.Copy), type(stmt)
    assert stmt.this.name == table
    froms = [f.name for f in stmt.args["files"]]
    assert froms == [manifest_url]

    ddl = parse_statements((folder / "create_table.sql").read_bytes().decode())
    assert len(ddl) == 1, ddl
    create = ddl[0]
    assert isinstance(create, exp.Create) and create.kind == "TABLE"
    assert create.this.this.name == table
    assert [c.name for c in create.this.expressions if isinstance(c, exp.ColumnDef)] == columns
    sortkey = create.find(exp.SortKeyProperty)
    assert [c.name for c in sortkey.this] == [key]
    # Comments carry no identifier text at all: the first line is the plan id and fixed words.
    assert (folder / "copy.sql").read_bytes().decode().startswith(f"-- sparsesync plan {plan_id}: load the table from its manifest\nCOPY ")
    assert (folder / "create_table.sql").read_bytes().decode().startswith(
        f"-- sparsesync plan {plan_id}: the table the COPY loads\nCREATE TABLE ")


def test_hostile_names_in_literal_strings_stay_literal(tmp_path):
    """A manifest URL with quotes and backslashes stays one string literal."""
    from types import SimpleNamespace

    plan = SimpleNamespace(plan_id="p1", source=SimpleNamespace(schema=None, table="t"), columns=[])
    url = "s3://b/x\\'; DROP TABLE users; --/manifest.json"
    stmt = parse_statements(redshift.copy_sql(plan, url))
    assert len(stmt) == 1 and [f.name for f in stmt[0].args["files"]] == [url]


def test_iam_role_and_types_that_are_not_what_they_claim_are_refused():
    from types import SimpleNamespace

    plan = SimpleNamespace(plan_id="p1", source=SimpleNamespace(schema=None, table="t"),
                           columns=[SimpleNamespace(name="c", redshift_type="BIGINT", nullable=True)])
    with pytest.raises(UsageError, match="not an IAM role ARN"):
        redshift.copy_sql(plan, "s3://b/m.json", "arn:aws:iam::1:role/r' ; DROP TABLE users; --")
    assert "IAM_ROLE 'arn:aws:iam::1:role/a,arn:aws:iam::2:role/b'" in redshift.copy_sql(
        plan, "s3://b/m.json", "arn:aws:iam::1:role/a,arn:aws:iam::2:role/b")
    plan.columns[0].redshift_type = "BIGINT) ; DROP TABLE users; --"
    with pytest.raises(PlanError, match="not a plain type name"):
        redshift.create_table_sql(plan)


@pytest.mark.mysql
@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_hostile_mysql_names_give_exactly_one_statement_per_file(mysql_engine, mysql_url, tmp_path, hostile):
    table = f"{hostile}_{sa.util.md5_hex(str(tmp_path))[:8]}"
    column = f"c {hostile}"
    q = mysql_engine.dialect.identifier_preparer
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {q.quote(table)} (id BIGINT PRIMARY KEY, {q.quote(column)} VARCHAR(20))")
    try:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {q.quote(table)} VALUES (1, 'a'), (5, 'b'), (900, 'c')")
        plan = make_plan(mysql_url, table, use_cache=False)
        dest = tmp_path / "out"
        report = execute_plan(plan, str(dest), source_url=mysql_url, reader="pymysql")
        assert report.rows == 3
        folder = dest / output_folder(plan)
        check_generated(folder, plan.plan_id, table, ["id", column], "id", str(folder / "manifest.json"))
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q.quote(table)}")


# SQLite takes any character but NUL in a quoted identifier; '/' and '\\' would make the output folder
# (named after the table) a different path, which is a path question, not a quoting one.
_NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/\\")
_names = st.text(_NAME_CHARS, min_size=1, max_size=12).filter(lambda s: s.strip(". ") == s and s not in (".", ".."))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=_names, column=_names)
def test_fuzzed_identifiers_through_plan_execute_and_generated_sql(tmp_path_factory, table, column):
    if column.lower() == "id":
        column = column + "_"
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'src.db'}"
    engine = sa.create_engine(url)
    q = engine.dialect.identifier_preparer
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {q.quote(table)} (id INTEGER PRIMARY KEY, {q.quote(column)} TEXT)")
        conn.exec_driver_sql(f"INSERT INTO {q.quote(table)} VALUES (1, 'x'), (7, NULL), (1000, 'z')")
    engine.dispose()
    plan = make_plan(url, table, use_cache=False)
    report = execute_plan(plan, str(tmp / "out"), source_url=url)
    assert report.rows == 3
    folder = (tmp / "out").resolve() / output_folder(plan)
    check_generated(folder, plan.plan_id, table, ["id", column], "id", str(folder / "manifest.json"))
