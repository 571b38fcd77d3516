"""Introspection on MariaDB and SQLite: key choice, one-line refusals, and the type map of every MySQL type."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sparsesync.planner.api import make_plan
from sparsesync.planner.introspect import introspect
from sparsesync.planner.typemap import TypeOptions
from sparsesync.errors import KeyColumnError, SourceError, TypeMappingError

ALL_TYPES = """CREATE TABLE {name} (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    flag TINYINT(1),
    ti TINYINT, tu TINYINT UNSIGNED, su SMALLINT UNSIGNED, mu MEDIUMINT UNSIGNED, iu INT UNSIGNED,
    bi BIGINT, bu BIGINT UNSIGNED,
    d38 DECIMAL(38,10), d12 DECIMAL(12,2),
    f FLOAT, dbl DOUBLE,
    dt6 DATETIME(6), ts TIMESTAMP NULL, dd DATE, tm TIME, yr YEAR,
    e ENUM('small','medium','large'), st SET('a','bb','ccc'),
    j JSON, b BLOB, vb VARBINARY(16), bit8 BIT(8), bit64 BIT(64),
    vc VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL, tx TEXT
)"""

EXPECTED = {
    "id": ("decimal128(20, 0)", "NUMERIC(20,0)", None),
    "flag": ("int16", "SMALLINT", None),  # int16, not int8: Redshift's Parquet COPY does not coerce (issue 17.9)
    "ti": ("int16", "SMALLINT", None),
    "tu": ("int16", "SMALLINT", None),
    "su": ("int32", "INTEGER", None),
    "mu": ("int32", "INTEGER", None),
    "iu": ("int64", "BIGINT", None),
    "bi": ("int64", "BIGINT", None),
    "bu": ("decimal128(20, 0)", "NUMERIC(20,0)", None),
    "d38": ("decimal128(38, 10)", "NUMERIC(38,10)", None),
    "d12": ("decimal128(12, 2)", "NUMERIC(12,2)", None),
    "f": ("float", "REAL", None),
    "dbl": ("double", "DOUBLE PRECISION", None),
    "dt6": ("timestamp[us]", "TIMESTAMP", "zero_date"),
    "ts": ("timestamp[us, tz=UTC]", "TIMESTAMPTZ", "zero_date"),
    "dd": ("date32[day]", "DATE", "zero_date"),
    "tm": ("int64", "BIGINT", "time_us"),
    "yr": ("int16", "SMALLINT", None),
    "e": ("string", "VARCHAR(24)", None),
    "st": ("string", "VARCHAR(36)", None),
    "j": ("string", "VARCHAR(65535)", "json"),
    "b": ("binary", "VARBYTE(65535)", None),
    "vb": ("binary", "VARBYTE(16)", None),
    "bit8": ("int64", "BIGINT", "bit_int"),
    "bit64": ("decimal128(20, 0)", "NUMERIC(20,0)", "bit_int"),
    "vc": ("string", "VARCHAR(400)", None),
    "tx": ("string", "VARCHAR(65535)", None),
}


def test_every_mariadb_type_maps_from_its_declaration(mysql_engine, mysql_table):
    name = mysql_table(ALL_TYPES)
    info = introspect(mysql_engine, name)
    got = {c.name: (c.arrow_type, c.redshift_type, c.conversion) for c in info.columns}
    assert got == EXPECTED
    cols = {c.name: c for c in info.columns}
    assert not cols["vc"].nullable and cols["dt6"].nullable, "zero dates force nullable"
    assert info.key == "id" and not info.key_signed and info.key_unique
    as_bool = introspect(mysql_engine, name, options=TypeOptions(tinyint1_as_bool=True))
    assert {c.name: c.arrow_type for c in as_bool.columns}["flag"] == "bool"
    assert info.schema_hash == introspect(mysql_engine, name).schema_hash


def test_wide_decimal_refused_unless_opted_in(mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY, big DECIMAL(65,0))")
    with pytest.raises(TypeMappingError) as err:
        introspect(mysql_engine, name)
    line = err.value.one_line()
    assert "big" in line and "--wide-decimal-as-string" in line and "\n" not in line
    info = introspect(mysql_engine, name, options=TypeOptions(wide_decimal_as_string=True))
    big = {c.name: c for c in info.columns}["big"]
    assert (big.arrow_type, big.conversion) == ("string", "decimal_str")


@pytest.mark.parametrize(
    "ddl,key,needle",
    [
        ("CREATE TABLE {name} (a INT, b INT, PRIMARY KEY (a, b))", None, "composite primary key (a, b)"),
        ("CREATE TABLE {name} (code VARCHAR(20) PRIMARY KEY)", None, "not an integer"),
        ("CREATE TABLE {name} (u BINARY(16) PRIMARY KEY)", None, "not an integer"),
        ("CREATE TABLE {name} (u CHAR(36) PRIMARY KEY, n INT)", "n", "not indexed"),
        ("CREATE TABLE {name} (v INT)", None, "has no primary key"),
        ("CREATE TABLE {name} (id INT PRIMARY KEY)", "nope", "not a column"),
    ],
)
def test_unusable_keys_refused_in_one_line(mysql_engine, mysql_table, ddl, key, needle):
    name = mysql_table(ddl)
    with pytest.raises(KeyColumnError) as err:
        introspect(mysql_engine, name, key=key)
    line = err.value.one_line()
    assert needle in line and name in line and ("--key" in line or "index" in line)
    assert "\n" not in line


def test_missing_table_suggests_close_names(mysql_engine, mysql_table):
    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY)")
    with pytest.raises(SourceError) as err:
        introspect(mysql_engine, name[:-1] + "x")
    assert "not found" in err.value.one_line() and name in err.value.one_line()


def test_key_option_picks_another_indexed_integer(mysql_engine, mysql_table):
    name = mysql_table(
        "CREATE TABLE {name} (u CHAR(36) PRIMARY KEY, seq BIGINT NOT NULL, grp INT, UNIQUE KEY (seq), KEY (grp))"
    )
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (UUID(), :s, :g)"), [{"s": i * 10, "g": i % 7} for i in range(300)])
    info = introspect(mysql_engine, name, key="seq")
    assert info.key == "seq" and info.key_unique
    plan = make_plan(mysql_engine, name, key="grp", rows_per_query=100, use_cache=False)
    assert plan.source.key == "grp" and any("not unique" in w for w in plan.warnings)
    assert sum(r.est_rows for r in plan.ranges) == 300
    with pytest.raises(KeyColumnError):
        introspect(mysql_engine, name)  # the CHAR(36) primary key is not usable by default


def test_sqlite_keys_and_types(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ok (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC(10,2), at DATETIME, raw BLOB)")
        conn.exec_driver_sql("CREATE TABLE s (code TEXT PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE c (a INTEGER, b INTEGER, PRIMARY KEY (a, b))")
        conn.exec_driver_sql("CREATE TABLE u (id INTEGER PRIMARY KEY, other INTEGER)")
    info = introspect(eng, "ok")
    assert info.key == "id" and info.key_signed
    assert {c.name: c.arrow_type for c in info.columns} == {
        "id": "int64", "name": "string", "price": "decimal128(10, 2)", "at": "timestamp[us]", "raw": "binary"
    }
    for table, key, needle in [("s", None, "not an integer"), ("c", None, "composite"), ("u", "other", "not indexed")]:
        with pytest.raises(KeyColumnError) as err:
            introspect(eng, table, key=key)
        assert needle in err.value.one_line()
    with pytest.raises(SourceError):
        introspect(eng, "missing")
    eng.dispose()
