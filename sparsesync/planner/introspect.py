"""Reflect a source table: columns with their type mappings, the integer key, and size estimates."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sparsesync.errors import KeyColumnError, SourceError
from sparsesync.source import is_mysql, short_db_error

from .plan import ColumnSpec
from .typemap import TypeOptions, is_integer_type, map_generic_column, map_mysql_column


@dataclass(frozen=True)
class TableInfo:
    """What reflection found: enough to plan, and to detect drift later."""

    table: str
    schema: str | None
    key: str
    key_signed: bool
    key_unique: bool
    columns: tuple[ColumnSpec, ...]
    row_estimate: int
    avg_row_bytes: float | None
    schema_hash: str


def schema_hash(columns: tuple[ColumnSpec, ...] | list[ColumnSpec], key: str) -> str:
    """Hash of names, declared types, nullability and key: changes iff the table's shape changes."""
    body = {"key": key, "columns": [[c.name, c.source_type.lower(), c.nullable] for c in columns]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def introspect(
    engine: Engine,
    table: str,
    *,
    key: str | None = None,
    schema: str | None = None,
    options: TypeOptions = TypeOptions(),
) -> TableInfo:
    """Reflect ``table`` and choose its key; every refusal is a one-line :class:`SparsesyncError`."""
    try:
        insp = sa.inspect(engine)
        names = insp.get_table_names(schema=schema)
        if table not in names:
            close = difflib.get_close_matches(table, names, n=3)
            where = f"schema {schema}" if schema else f"database {engine.url.database}"
            hint = f"did you mean {', '.join(close)}?" if close else "check the table name and the database in the URL"
            raise SourceError(f"table {table!r} not found in {where}", hint=hint, table=table)
        reflected = insp.get_columns(table, schema=schema)
        pk = insp.get_pk_constraint(table, schema=schema).get("constrained_columns") or []
        indexes = insp.get_indexes(table, schema=schema)
        uniques = insp.get_unique_constraints(table, schema=schema) if not is_mysql(engine) else []
    except SourceError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot reflect table {table!r}: {short_db_error(exc)}", table=table) from exc

    if is_mysql(engine):
        columns, row_est, avg_row = _mysql_columns(engine, table, schema, reflected, options)
    else:
        columns = tuple(
            map_generic_column(c["name"], _declared_text(engine, c), c["type"], bool(c.get("nullable", True)))
            for c in reflected
        )
        row_est, avg_row = _generic_estimates(engine, table, schema)

    declared = {c.name: c.source_type for c in columns}
    key_col, signed, unique = _choose_key(table, key, pk, indexes, uniques, declared, engine)
    return TableInfo(
        table=table,
        schema=schema,
        key=key_col,
        key_signed=signed,
        key_unique=unique,
        columns=columns,
        row_estimate=row_est,
        avg_row_bytes=avg_row,
        schema_hash=schema_hash(columns, key_col),
    )


def _choose_key(table, key, pk, indexes, uniques, declared, engine) -> tuple[str, bool, bool]:
    if key is None:
        if not pk:
            raise KeyColumnError(
                f"table {table!r} has no primary key",
                hint="pass --key COL naming an indexed integer column",
                table=table,
            )
        if len(pk) > 1:
            raise KeyColumnError(
                f"table {table!r} has a composite primary key ({', '.join(pk)})",
                hint="pass --key COL naming one indexed integer column",
                table=table,
            )
        key = pk[0]
    if key not in declared:
        raise KeyColumnError(
            f"key column {key!r} is not a column of {table!r}",
            hint=f"pass --key with one of its columns: {', '.join(declared)}",
            table=table,
        )
    is_int, signed = is_integer_type(declared[key])
    if engine.dialect.name == "sqlite" and declared[key].strip() == "":
        is_int = False
    if not is_int:
        raise KeyColumnError(
            f"key column {key!r} is {declared[key] or 'untyped'}, not an integer",
            hint="sparsesync ranges need an integer key; pass --key COL naming an indexed integer column",
            table=table,
        )
    leading = [ix for ix in indexes if ix.get("column_names") and ix["column_names"][0] == key]
    unique = (pk == [key]) or any(ix.get("unique") and len(ix["column_names"]) == 1 for ix in leading)
    unique = unique or any(u.get("column_names") == [key] for u in uniques)
    indexed = bool(pk and pk[0] == key) or bool(leading) or unique
    if not indexed:
        raise KeyColumnError(
            f"key column {key!r} of {table!r} is not indexed, so every range query would scan the table",
            hint=f"add an index on {key} or pass --key with an indexed integer column",
            table=table,
        )
    return key, signed, unique


def _mysql_columns(engine, table, schema, reflected, options):
    where = "TABLE_SCHEMA = " + (":db" if schema else "DATABASE()") + " AND TABLE_NAME = :t"
    params = {"t": table, **({"db": schema} if schema else {})}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
                f"WHERE {where} ORDER BY ORDINAL_POSITION"
            ),
            params,
        ).all()
        trow = conn.execute(
            sa.text(f"SELECT TABLE_ROWS, AVG_ROW_LENGTH FROM information_schema.TABLES WHERE {where}"), params
        ).first()
        json_cols = set()
        if getattr(engine.dialect, "is_mariadb", False):
            # MariaDB's JSON is LONGTEXT plus a json_valid() check named after the column.
            checks = conn.execute(
                sa.text(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE "
                    + where.replace("TABLE_SCHEMA", "CONSTRAINT_SCHEMA")
                ),
                params,
            ).scalars()
            for clause in checks:
                text = (clause or "").strip()
                if text.lower().startswith("json_valid(`") and text.endswith("`)"):
                    json_cols.add(text[len("json_valid(`") : -2])
    columns = tuple(
        map_mysql_column(name, ctype, nullable == "YES", is_json=name in json_cols, options=options)
        for name, ctype, nullable in rows
    )
    row_est = int(trow[0] or 0) if trow else 0
    avg = float(trow[1]) if trow and trow[1] else None
    return columns, row_est, avg


def _declared_text(engine, col) -> str:
    try:
        return col["type"].compile(dialect=engine.dialect)
    except Exception:  # noqa: BLE001 - NullType (SQLite untyped) compiles to nothing useful
        return ""


def _generic_estimates(engine, table, schema) -> tuple[int, float | None]:
    """No cheap statistics on SQLite: report 0 and let the pre-scan measure."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            est = conn.execute(
                sa.text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:t)"),
                {"t": f"{schema}.{table}" if schema else table},
            ).scalar()
        return max(int(est or 0), 0), None
    return 0, None


def count_null_keys(conn, table: str, key: str, schema: str | None = None) -> int:
    """``COUNT(*) … WHERE key IS NULL``: the rows a nullable key column cannot place in any ``[lo, hi)``."""
    t = sa.table(table, sa.column(key), schema=schema)
    stmt = sa.select(sa.func.count()).select_from(t).where(t.c[key].is_(None))
    try:
        return int(conn.execute(stmt).scalar_one())
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot count NULL keys: {short_db_error(exc)}", table=table) from exc
