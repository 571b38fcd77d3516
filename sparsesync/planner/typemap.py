"""Declared column type → Arrow type → Redshift type (the table in shared design notes).

Mapping is from the **declared** type only, never from sampled values, so every file of a plan has the
same schema whatever rows it happens to hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sparsesync.errors import TypeMappingError

from .plan import ColumnSpec

REDSHIFT_VARCHAR_MAX = 65535
REDSHIFT_VARBYTE_MAX = 1_024_000


@dataclass(frozen=True)
class TypeOptions:
    """Opt-ins for mappings that are lossy or not the default."""

    tinyint1_as_bool: bool = False
    wide_decimal_as_string: bool = False


@dataclass(frozen=True)
class Declared:
    """A declared SQL type split into its parts: ``bigint(20) unsigned`` → (bigint, [20], unsigned)."""

    name: str
    args: tuple[str, ...] = ()
    unsigned: bool = False
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "Declared":
        raw = text.strip()
        low = raw.lower()
        unsigned = " unsigned" in low
        m = re.match(r"^\s*([a-z ]+?)\s*(?:\((.*)\))?\s*((?:unsigned|signed|zerofill|\s)*)$", low, re.S)
        if not m:
            return cls(name=low.split("(")[0].strip(), unsigned=unsigned, text=raw)
        name = m.group(1).strip()
        args: tuple[str, ...] = ()
        if m.group(2) is not None and name not in ("enum", "set"):
            args = tuple(a.strip() for a in m.group(2).split(","))
        return cls(name=name, args=args, unsigned=unsigned, text=raw)

    def int_arg(self, i: int, default: int | None = None) -> int | None:
        try:
            return int(self.args[i])
        except (IndexError, ValueError):
            return default


# TINYINT is written as int16, never int8: Redshift has no 1-byte integer, and its Parquet COPY (Spectrum)
# does not coerce an INT(8) Parquet column into SMALLINT. Every integer is written at its Redshift width.
_SIGNED_INTS = {
    "tinyint": ("int16", "SMALLINT"),
    "smallint": ("int16", "SMALLINT"),
    "mediumint": ("int32", "INTEGER"),
    "int": ("int32", "INTEGER"),
    "integer": ("int32", "INTEGER"),
    "bigint": ("int64", "BIGINT"),
}
_UNSIGNED_INTS = {
    "tinyint": ("int16", "SMALLINT"),
    "smallint": ("int32", "INTEGER"),
    "mediumint": ("int32", "INTEGER"),
    "int": ("int64", "BIGINT"),
    "integer": ("int64", "BIGINT"),
    "bigint": ("decimal128(20, 0)", "NUMERIC(20,0)"),
}
INTEGER_TYPE_NAMES = frozenset(_SIGNED_INTS) | {"int2", "int4", "int8", "serial", "bigserial"}
_TEXT_MAX_CHARS = {"tinytext": 255, "text": 65535, "mediumtext": 16777215, "longtext": 4294967295}
_BLOB_MAX = {"tinyblob": 255, "blob": 65535, "mediumblob": 16777215, "longblob": 4294967295}


def map_mysql_column(
    name: str, column_type: str, nullable: bool, *, is_json: bool = False, options: TypeOptions = TypeOptions()
) -> ColumnSpec:
    """Map one MySQL/MariaDB column from its ``information_schema.COLUMNS.COLUMN_TYPE``."""
    d = Declared.parse(column_type)
    n = d.name

    def spec(arrow: str, redshift: str, conversion: str | None = None, nullable_: bool = nullable) -> ColumnSpec:
        return ColumnSpec(name, column_type, arrow, redshift, nullable_, conversion)

    if is_json or n == "json":
        return spec("string", f"VARCHAR({REDSHIFT_VARCHAR_MAX})", "json")
    if n in _SIGNED_INTS:
        if n == "tinyint" and d.int_arg(0) == 1 and not d.unsigned and options.tinyint1_as_bool:
            return spec("bool", "BOOLEAN", "bool")
        arrow, rs = (_UNSIGNED_INTS if d.unsigned else _SIGNED_INTS)[n]
        return spec(arrow, rs)
    if n in ("bool", "boolean"):
        return spec("bool", "BOOLEAN", "bool") if options.tinyint1_as_bool else spec("int16", "SMALLINT")
    if n in ("decimal", "numeric", "dec", "fixed"):
        p = d.int_arg(0, 10)
        s = d.int_arg(1, 0)
        if p <= 38:
            return spec(f"decimal128({p}, {s})", f"NUMERIC({p},{s})")
        if options.wide_decimal_as_string:
            return spec("string", f"VARCHAR({p + 2})", "decimal_str")
        raise TypeMappingError(
            f"column {name!r} is {column_type}: precision {p} > 38 does not fit Arrow decimal128 or Redshift NUMERIC",
            hint="pass --wide-decimal-as-string to export it as text, or exclude the column",
        )
    if n == "float":
        return spec("float", "REAL")
    if n in ("double", "double precision", "real"):
        return spec("double", "DOUBLE PRECISION")
    if n == "date":
        return spec("date32[day]", "DATE", "zero_date", True)
    if n == "datetime":
        return spec("timestamp[us]", "TIMESTAMP", "zero_date", True)
    if n == "timestamp":
        return spec("timestamp[us, tz=UTC]", "TIMESTAMPTZ", "zero_date", True)
    if n == "time":
        return spec("int64", "BIGINT", "time_us")
    if n == "year":
        return spec("int16", "SMALLINT")
    if n in ("char", "varchar", "nchar", "nvarchar", "national char", "national varchar"):
        chars = d.int_arg(0, 255) or 1
        return spec("string", f"VARCHAR({min(4 * chars, REDSHIFT_VARCHAR_MAX)})")
    if n in _TEXT_MAX_CHARS:
        return spec("string", f"VARCHAR({min(4 * _TEXT_MAX_CHARS[n], REDSHIFT_VARCHAR_MAX)})")
    if n in ("enum", "set"):
        values = re.findall(r"'((?:[^']|'')*)'", column_type)
        longest = max((len(v) for v in values), default=1)
        if n == "set":
            longest = sum(len(v) + 1 for v in values) or 1
        return spec("string", f"VARCHAR({min(4 * longest, REDSHIFT_VARCHAR_MAX)})")
    if n in ("binary", "varbinary"):
        size = d.int_arg(0, 255) or 1
        return spec("binary", f"VARBYTE({min(size, REDSHIFT_VARBYTE_MAX)})")
    if n in _BLOB_MAX:
        return spec("binary", f"VARBYTE({min(_BLOB_MAX[n], REDSHIFT_VARBYTE_MAX)})")
    if n == "bit":
        bits = d.int_arg(0, 1) or 1
        if bits <= 63:
            return spec("int64", "BIGINT", "bit_int")
        return spec("decimal128(20, 0)", "NUMERIC(20,0)", "bit_int")
    raise TypeMappingError(
        f"column {name!r} has type {column_type}, which sparsesync cannot map to Arrow/Redshift",
        hint="exclude the column or cast it in a view",
    )


def map_generic_column(name: str, declared: str, sa_type, nullable: bool) -> ColumnSpec:
    """Map a column of a non-MySQL source (SQLite, PostgreSQL) from its declared type text.

    SQLite stores any value in any column, so the declared type is the only promise we have; the
    reader casts to it and fails with column and key if a value does not fit.
    """
    d = Declared.parse(declared or "")
    n = d.name
    pg = {"int2": "smallint", "int4": "int", "int8": "bigint", "serial": "int", "bigserial": "bigint"}
    n = pg.get(n, n)

    def spec(arrow: str, redshift: str, conversion: str | None = None) -> ColumnSpec:
        return ColumnSpec(name, declared or "", arrow, redshift, nullable, conversion)

    if n in ("integer",):  # SQLite INTEGER is 64-bit
        return spec("int64", "BIGINT")
    if n in _SIGNED_INTS:
        arrow, rs = _SIGNED_INTS[n]
        return spec(arrow, rs)
    if n in ("bool", "boolean"):
        return spec("bool", "BOOLEAN", "bool")
    if n in ("decimal", "numeric"):
        p = d.int_arg(0, 38)
        s = d.int_arg(1, 0)
        if p > 38:
            raise TypeMappingError(f"column {name!r} is {declared}: precision {p} > 38", hint="cast it in a view")
        return spec(f"decimal128({p}, {s})", f"NUMERIC({p},{s})")
    if n in ("real", "float", "double", "double precision", "float8"):
        return spec("double", "DOUBLE PRECISION")
    if n in ("float4",):
        return spec("float", "REAL")
    if n == "date":
        return spec("date32[day]", "DATE", "iso_date")
    if n in ("datetime", "timestamp", "timestamp without time zone"):
        return spec("timestamp[us]", "TIMESTAMP", "iso_datetime")
    if n in ("timestamptz", "timestamp with time zone"):
        return spec("timestamp[us, tz=UTC]", "TIMESTAMPTZ", "iso_datetime")
    if n in ("blob", "bytea", "binary", "varbinary"):
        return spec("binary", f"VARBYTE({REDSHIFT_VARBYTE_MAX})")
    if n in ("json", "jsonb"):
        return spec("string", f"VARCHAR({REDSHIFT_VARCHAR_MAX})", "json")
    if n in ("char", "varchar", "character varying", "character", "nvarchar", "nchar"):
        chars = d.int_arg(0, 256) or 1
        return spec("string", f"VARCHAR({min(4 * chars, REDSHIFT_VARCHAR_MAX)})")
    if n in ("text", "clob", "string", ""):
        return spec("string", f"VARCHAR({REDSHIFT_VARCHAR_MAX})")
    # SQLite affinity rules (https://sqlite.org/datatype3.html §3.1) as the last resort.
    if "int" in n:
        return spec("int64", "BIGINT")
    if any(t in n for t in ("char", "clob", "text")):
        return spec("string", f"VARCHAR({REDSHIFT_VARCHAR_MAX})")
    if any(t in n for t in ("real", "floa", "doub")):
        return spec("double", "DOUBLE PRECISION")
    raise TypeMappingError(
        f"column {name!r} has type {declared!r}, which sparsesync cannot map to Arrow/Redshift",
        hint="declare a standard type or cast it in a view",
    )


def is_integer_type(declared: str) -> tuple[bool, bool]:
    """(is an integer type, is signed) for a declared key type."""
    d = Declared.parse(declared)
    return d.name in INTEGER_TYPE_NAMES or d.name == "integer", not d.unsigned
