"""Redshift load files: ``manifest.json``, ``copy.sql`` and ``create_table.sql``.

A Parquet COPY with a manifest needs ``meta.content_length`` on every entry, and it must be the
object's real size, so entries are built from the committed parts' measured sizes. The manifest is
written last by the executor: its presence marks the run finished.
"""

from __future__ import annotations

import json

IAM_ROLE_PLACEHOLDER = "<IAM_ROLE_ARN>"
MANIFEST, COPY_SQL, CREATE_TABLE_SQL = "manifest.json", "copy.sql", "create_table.sql"


def quote_ident(name: str) -> str:
    """A Redshift identifier in double quotes (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


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
    role = (iam_role or IAM_ROLE_PLACEHOLDER).replace("'", "''")
    url = manifest_url.replace("'", "''")
    # One comment line each, whatever they hold: a line break could turn the rest into a statement.
    notes = "".join(f"-- WARNING: {' '.join(str(w).splitlines())}\n" for w in warnings)
    return notes + (
        f"-- sparsesync plan {plan.plan_id}: load {plan.source.table} from its manifest\n"
        f"COPY {qualified_name(plan)}\n"
        f"FROM '{url}'\n"
        f"IAM_ROLE '{role}'\n"
        "FORMAT AS PARQUET\n"
        "MANIFEST;\n"
    )


def create_table_sql(plan) -> str:
    """DDL from the plan's Redshift types and nullability; the key is the sort key."""
    cols = []
    for c in plan.columns:
        null = "" if c.nullable else " NOT NULL"  # zero-date columns are nullable in the plan already
        cols.append(f"  {quote_ident(c.name)} {c.redshift_type}{null}")
    return (
        f"-- sparsesync plan {plan.plan_id}: table for {plan.source.table}\n"
        f"CREATE TABLE IF NOT EXISTS {qualified_name(plan)} (\n"
        + ",\n".join(cols)
        + f"\n)\nSORTKEY ({quote_ident(plan.source.key)});\n"
    )
