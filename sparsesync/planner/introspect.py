"""Reflect a source table: columns with their type mappings, the integer key, and size estimates."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparsesync.errors import KeyColumnError, SourceError
from sparsesync.lazy import lazy_module
from sparsesync.source import is_mysql, short_db_error

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

sa = lazy_module("sqlalchemy")  # the executor's direct MySQL source (sparsesync.direct) introspects without it

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
    engine: "Engine",
    table: str,
    *,
    key: str | None = None,
    schema: str | None = None,
    options: TypeOptions = TypeOptions(),
) -> TableInfo:
    """Reflect ``table`` and choose its key; every refusal is a one-line :class:`SparsesyncError`."""
    from sparsesync.direct import is_direct

    if is_direct(engine):
        return _introspect_direct(engine, table, key=key, schema=schema, options=options)
    try:
        insp = sa.inspect(engine)
        names = insp.get_table_names(schema=schema)
        if table not in names:
            raise _not_found(table, names, schema, engine.url.database)
        reflected = insp.get_columns(table, schema=schema)
        pk = insp.get_pk_constraint(table, schema=schema).get("constrained_columns") or []
        indexes = insp.get_indexes(table, schema=schema)
        uniques = insp.get_unique_constraints(table, schema=schema) if not is_mysql(engine) else []
    except SourceError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot reflect table {table!r}: {short_db_error(exc)}", table=table) from exc

    if is_mysql(engine):
        with engine.connect() as conn:
            def fetch(sql, params):
                return conn.execute(sa.text(sql), params).all()

            columns, row_est, avg_row = _mysql_columns(fetch, schema, table, getattr(engine.dialect, "is_mariadb", False),
                                                       options)
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


def _not_found(table: str, names: list[str], schema: str | None, database: str | None) -> SourceError:
    """The one-line refusal of a table that is not among ``names``, with the closest names as a hint."""
    close = difflib.get_close_matches(table, names, n=3)
    where = f"schema {schema}" if schema else f"database {database}"
    hint = f"did you mean {', '.join(close)}?" if close else "check the table name and the database in the URL"
    return SourceError(f"table {table!r} not found in {where}", hint=hint, table=table)


def _mysql_where(schema: str | None, table: str) -> tuple[str, str, dict]:
    """information_schema's filters (``:db``/``:t`` binds): for ``schema`` (or the connection's database), for
    ``table`` in it, and their parameters."""
    in_schema = "TABLE_SCHEMA = " + (":db" if schema else "DATABASE()")
    return in_schema, f"{in_schema} AND TABLE_NAME = :t", {"t": table, **({"db": schema} if schema else {})}


def _mysql_columns(fetch, schema, table, is_mariadb: bool, options):
    """Columns (declared types from information_schema), row estimate and average row length.

    ``fetch(sql, params)`` runs one statement with ``:name`` binds: a SQLAlchemy connection for the
    planner, PyMySQL for the executor's direct source (:func:`_introspect_direct`)."""
    _, where, params = _mysql_where(schema, table)
    rows = fetch("SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
                 f"WHERE {where} ORDER BY ORDINAL_POSITION", params)
    trows = fetch(f"SELECT TABLE_ROWS, AVG_ROW_LENGTH FROM information_schema.TABLES WHERE {where}", params)
    trow = trows[0] if trows else None
    json_cols = set()
    if is_mariadb:
        # MariaDB's JSON is LONGTEXT plus a json_valid() check named after the column.
        checks = fetch("SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE "
                       + where.replace("TABLE_SCHEMA", "CONSTRAINT_SCHEMA"), params)
        for (clause,) in checks:
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


_BIND = re.compile(r":(\w+)")


def _introspect_direct(src, table: str, *, key, schema, options) -> TableInfo:
    """:func:`introspect` for a :class:`sparsesync.direct.DirectSource`: the same facts from information_schema
    over PyMySQL (tables, columns, PRIMARY and other indexes) instead of SQLAlchemy's reflection."""
    def fetch(sql, params):
        return src.fetch_all(_BIND.sub(r"%(\1)s", sql), params)

    in_schema, where, params = _mysql_where(schema, table)
    try:
        found = fetch("SELECT TABLE_NAME FROM information_schema.TABLES WHERE " + where, params)
        # information_schema compares names case-insensitively; reflection (and the planner) does not
        if table not in [r[0] for r in found]:
            names = [r[0] for r in fetch("SELECT TABLE_NAME FROM information_schema.TABLES WHERE " + in_schema, params)]
            raise _not_found(table, names, schema, src.url.database)
        columns, row_est, avg_row = _mysql_columns(fetch, schema, table, src.is_mariadb, options)
        stats = fetch("SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS "
                      f"WHERE {where} ORDER BY INDEX_NAME, SEQ_IN_INDEX", params)
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - a driver error, one line
        raise SourceError(f"cannot reflect table {table!r}: {short_db_error(exc)}", table=table) from exc
    by_index: dict[str, dict] = {}
    for name, col, non_unique in stats:
        ix = by_index.setdefault(name, {"name": name, "column_names": [], "unique": int(non_unique) == 0})
        ix["column_names"].append(col)
    pk = by_index.pop("PRIMARY", {}).get("column_names", [])
    declared = {c.name: c.source_type for c in columns}
    key_col, signed, unique = _choose_key(table, key, pk, list(by_index.values()), [], declared, src)
    return TableInfo(table=table, schema=schema, key=key_col, key_signed=signed, key_unique=unique, columns=columns,
                     row_estimate=row_est, avg_row_bytes=avg_row, schema_hash=schema_hash(columns, key_col))


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
