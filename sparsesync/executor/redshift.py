"""Redshift load files: ``manifest.json``, ``copy.sql`` and ``create_table.sql``.

A Parquet COPY with a manifest needs ``meta.content_length`` on every entry, and it must be the
object's real size, so entries are built from the committed parts' measured sizes. The manifest is
written last by the executor: its presence marks the run finished.
"""

from __future__ import annotations

import json
import re

from sparsesync.errors import PlanError, UsageError

IAM_ROLE_PLACEHOLDER = "<IAM_ROLE_ARN>"
MANIFEST, COPY_SQL, CREATE_TABLE_SQL = "manifest.json", "copy.sql", "create_table.sql"


def quote_ident(name: str) -> str:
    """A Redshift identifier in double quotes (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


# A Redshift type as the type map writes it: words, optionally one parenthesised length/precision list.
# The DDL takes the type from the plan file, which anyone can edit (its hash is only a checksum).
_TYPE_RE = re.compile(r"^[A-Z][A-Z ]*[A-Z](\((\d+|MAX)(, ?\d+)?\))?$")
# What a role ARN (or a comma-separated chain of them) can hold; anything else is refused, not escaped.
_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d+:role/[A-Za-z0-9+=,.@_/-]+$")


SQL_DIALECTS = ("redshift", "duckdb")


def sql_string(text: str, dialect: str = "redshift") -> str:
    """A string literal for every SQL file and statement sparsesync generates (``copy.sql``, ``load.sql``,
    the DuckDB load): quotes doubled; for Redshift backslashes doubled too (Redshift reads ``\\'`` as an
    escaped quote, so a lone backslash before a doubled quote would end the literal early). DuckDB takes
    a backslash literally, so there it stays single (doubling it would change the value)."""
    if dialect not in SQL_DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    if dialect == "redshift":
        text = text.replace("\\", "\\\\")
    return "'" + text.replace("'", "''") + "'"


def checked_type(column: str, redshift_type: str) -> str:
    """``redshift_type`` if it is a plain type name such as ``NUMERIC(20,0)``; anything else is refused."""
    if not _TYPE_RE.match(redshift_type):
        raise PlanError(
            f"column {column!r} has Redshift type {redshift_type!r}, which is not a plain type name",
            hint="the plan file was edited; re-plan the table",
        )
    return redshift_type


def check_load_inputs(plan, iam_role: str | None) -> None:
    """Refuse, before any reading, what :func:`copy_sql` / :func:`create_table_sql` would refuse at the end."""
    for c in plan.columns:
        checked_type(c.name, c.redshift_type)
    if iam_role is not None and not all(_ROLE_RE.match(r) for r in iam_role.split(",")):
        raise UsageError(f"--iam-role {iam_role[:120]!r} is not an IAM role ARN",
                         hint="pass arn:aws:iam::<account>:role/<name> (comma-separated to chain roles)")


def _comment(plan, what: str) -> str:
    # Only our own plan id goes into the comment (the schema allows [A-Za-z0-9_.-] only); identifiers never do.
    plan_id = re.sub(r"[^A-Za-z0-9_.-]", "_", plan.plan_id)
    return f"-- sparsesync plan {plan_id}: {what}\n"


def qualified_name(plan) -> str:
    """``"schema"."table"`` when the plan names a schema, else ``"table"`` (Redshift's search_path)."""
    src = plan.source
    return f"{quote_ident(src.schema)}.{quote_ident(src.table)}" if src.schema else quote_ident(src.table)


def manifest_json(parts) -> bytes:
    """Manifest for ``parts`` (objects with ``url`` and ``size``), in file order."""
    entries = [{"url": p.url, "mandatory": True, "meta": {"content_length": int(p.size)}} for p in parts]
    return (json.dumps({"entries": entries}, indent=2) + "\n").encode("utf-8")


def copy_sql(plan, manifest_url: str, iam_role: str | None = None, warnings=()) -> str:
    """The one COPY statement loading every part through the manifest; ``warnings`` become comment lines."""
    check_load_inputs(plan, iam_role)
    # One comment line each, whatever they hold: a line break could turn the rest into a statement.
    notes = "".join(f"-- WARNING: {' '.join(str(w).splitlines())}\n" for w in warnings)
    return (
        notes
        + _comment(plan, "load the table from its manifest")
        + f"COPY {qualified_name(plan)}\n"
        f"FROM {sql_string(manifest_url)}\n"
        f"IAM_ROLE {sql_string(iam_role or IAM_ROLE_PLACEHOLDER)}\n"
        "FORMAT AS PARQUET\n"
        "MANIFEST;\n"
    )


def create_table_sql(plan) -> str:
    """DDL from the plan's Redshift types and nullability; the key is the sort key."""
    cols = []
    for c in plan.columns:
        null = "" if c.nullable else " NOT NULL"  # zero-date columns are nullable in the plan already
        cols.append(f"  {quote_ident(c.name)} {checked_type(c.name, c.redshift_type)}{null}")
    return (
        _comment(plan, "the table the COPY loads")
        + f"CREATE TABLE IF NOT EXISTS {qualified_name(plan)} (\n"
        + ",\n".join(cols)
        + f"\n)\nSORTKEY ({quote_ident(plan.source.key)});\n"
    )
