"""Issue 17: values Redshift accepts, the same from both readers, on real MariaDB tables.

4(d) ``--wide-decimal-as-string`` with ``--reader pymysql``: no TypeError, and the text MySQL prints
     (``0.000…001``), as ConnectorX writes it — never ``1E-30`` / ``0E-30`` / ``1.000…E-7``.
9    TINYINT and BOOL are written as 16-bit Parquet integers under their SMALLINT column (Spectrum, which
     Redshift's Parquet COPY goes through, does not coerce INT(8) into SMALLINT).
10   A NUL byte inside text: ``--nul fail`` (default; names table, column and key), ``strip`` or ``keep``,
     counted in the report; binary values keep theirs.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from sparsesync.errors import ValueConversionError
from sparsesync.executor.run import execute_plan
from sparsesync.executor.verify import verify_output
from sparsesync.planner.api import make_plan
from sparsesync.planner.typemap import TypeOptions
from tests.executor.test_run import out_dir, read_output

pytestmark = pytest.mark.mysql

READERS = ("pymysql", "connectorx")


def _parts(dest, plan) -> list[str]:
    manifest = json.loads((out_dir(dest, plan) / "manifest.json").read_text())
    return [e["url"] for e in manifest["entries"]]


# ---------------------------------------------------------------------------------------------- 4(d)
WIDE = [
    "0.000000000000000000000000000001",  # str(Decimal) gave 1E-30
    "0.000000000000000000000000000000",  # 0E-30
    "0.000000100000000000000000000000",  # 1.00000000000000000000000E-7
    "-0.000000000000000000000000000001",
    "12345678901234567890123456789012345.123456789012345678901234567890",
    "-99999999999999999999999999999999999.999999999999999999999999999999",
    "1.000000000000000000000000000000",
    "100000000000000000000.000000000000000000000000000000",
]


def test_wide_decimal_text_is_what_mysql_prints_from_both_readers(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, d DECIMAL(65,30), d0 DECIMAL(40,0), "
                       "note VARCHAR(8)) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:id, :d, :d0, 'x')"),
                     [{"id": i + 1, "d": v, "d0": ("-" if i % 2 else "") + "9" * (i + 33)} for i, v in enumerate(WIDE)]
                     + [{"id": 100, "d": None, "d0": None}])
        truth = [tuple(r) for r in conn.exec_driver_sql(
            f"SELECT CAST(d AS CHAR), CAST(d0 AS CHAR) FROM {name} ORDER BY id").all()]
    assert truth[0][0] == WIDE[0] and truth[2][0] == WIDE[2]  # what MySQL prints: positional, with the scale
    plan = make_plan(mysql_url, name, use_cache=False, type_options=TypeOptions(wide_decimal_as_string=True))
    got = {}
    for reader in READERS:
        dest = tmp_path / reader
        report = execute_plan(plan, str(dest), source_url=mysql_url, reader=reader, batch_rows=3)
        assert report.rows == len(truth)
        got[reader] = read_output(dest, plan, "d, d0")
    assert got["pymysql"] == got["connectorx"] == truth
    assert verify_output(plan, str(tmp_path / "pymysql"), source_url=mysql_url, all_columns=True).ok


# ---------------------------------------------------------------------------------------------- 9
@pytest.mark.parametrize("reader", READERS)
def test_tinyint_and_bool_are_16_bit_parquet_integers(reader, mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, ti TINYINT, b BOOL, t1 TINYINT(1), "
                       "tu TINYINT UNSIGNED NOT NULL) ENGINE=InnoDB")
    rows = [(1, -128, 0, -128, 0), (2, 127, 1, 127, 255), (3, 0, 127, 2, 1), (4, None, None, None, 7), (5, -1, -128, 1, 128)]
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:id, :ti, :b, :t1, :tu)"),
                     [dict(zip(("id", "ti", "b", "t1", "tu"), r)) for r in rows])
    plan = make_plan(mysql_url, name, use_cache=False)  # no --tinyint1-as-bool: BOOL is an integer too
    ddl = {c.name: (c.arrow_type, c.redshift_type) for c in plan.columns}
    assert all(ddl[c] == ("int16", "SMALLINT") for c in ("ti", "b", "t1", "tu")), ddl
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=mysql_url, reader=reader)
    for path in _parts(dest, plan):
        schema = pq.ParquetFile(path).schema
        for col in ("ti", "b", "t1", "tu"):
            logical = str(schema.column(schema.names.index(col)).logical_type)
            assert "bitWidth=16" in logical and "isSigned=true" in logical, (col, logical)
    assert read_output(dest, plan, "id, ti, b, t1, tu") == rows
    assert verify_output(plan, str(dest), source_url=mysql_url, all_columns=True).ok  # checksums compare values


# ---------------------------------------------------------------------------------------------- 10
NUL_DDL = ("CREATE TABLE {name} (id BIGINT NULL, v VARCHAR(20), t TEXT, bl VARBINARY(8), KEY (id)) "
           "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")  # nullable, non-unique key


@pytest.fixture
def nul_table(mysql_engine, mysql_table):
    name = mysql_table(NUL_DDL, prefix="nul")
    rows = [{"id": i, "v": f"v{i}", "t": "é" * (i % 5), "bl": b"\x00\x01"} for i in range(1, 301)]
    rows[41]["v"] = "a\x00b"  # id 42
    rows[199]["t"] = "\x00\x00é\x00"  # id 200
    rows.append({"id": 200, "v": "dup\x00", "t": None, "bl": None})  # a duplicate key with a NUL too
    rows.append({"id": None, "v": "\x00", "t": "nul key", "bl": b"\x00"})
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:id, :v, :t, :bl)"), rows)
    return name, rows


@pytest.mark.parametrize("reader", READERS)
def test_nul_in_text_fails_by_default_naming_column_and_key(reader, nul_table, mysql_url, tmp_path):
    name, _ = nul_table
    plan = make_plan(mysql_url, name, key="id", rows_per_query=100, use_cache=False)
    dest = tmp_path / "out"
    with pytest.raises(ValueConversionError) as err:
        execute_plan(plan, str(dest), source_url=mysql_url, reader=reader)
    line = err.value.one_line()
    assert "column 'v'" in line and "key 42" in line and "NUL" in line and "--nul strip" in line, line
    assert name in line and err.value.exit_code == 7
    assert not [p for p in dest.rglob("*.parquet")]  # nothing half-written is visible


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("mode", ["strip", "keep"])
def test_nul_strip_or_keep_is_counted_in_the_report(reader, mode, nul_table, mysql_url, tmp_path):
    name, rows = nul_table
    plan = make_plan(mysql_url, name, key="id", rows_per_query=100, use_cache=False)
    dest = tmp_path / "out"
    report = execute_plan(plan, str(dest), source_url=mysql_url, reader=reader, nul=mode)
    assert report.rows == len(rows)
    assert report.oversize["nul"] == {"mode": mode, "values": {"v": 3, "t": 1}}
    fix = (lambda s: s.replace("\x00", "")) if mode == "strip" else (lambda s: s)
    want = sorted(((r["id"] is None, r["id"] or 0, None if r["v"] is None else fix(r["v"]),
                    None if r["t"] is None else fix(r["t"]), r["bl"]) for r in rows))
    got = sorted((r[0] is None, r[0] or 0, r[1], r[2], r[3]) for r in read_output(dest, plan, "id, v, t, bl"))
    assert got == want  # binary values keep their NUL bytes
    written = json.loads((out_dir(dest, plan) / "_report.json").read_text())
    assert written["oversize"]["nul"]["values"] == {"v": 3, "t": 1}
    copy_sql = (out_dir(dest, plan) / "copy.sql").read_text()
    assert ('column "v": 3 text value(s)' in copy_sql) and ("stripped" if mode == "strip" else "rejects") in copy_sql
    if mode == "keep":  # the values are the source's: verify agrees
        assert verify_output(plan, str(dest), source_url=mysql_url, all_columns=True).ok


def test_nul_option_on_the_command_line(nul_table, mysql_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sparsesync.cli import _register, app

    _register()
    monkeypatch.delenv("SPARSESYNC_SOURCE_URL", raising=False)
    name, _ = nul_table
    path = make_plan(mysql_url, name, key="id", rows_per_query=100, use_cache=False).save(tmp_path / "p.json")
    run = CliRunner().invoke
    res = run(app, ["execute", str(path), "--dest", str(tmp_path / "a"), "--source", mysql_url])
    errors = [line for line in res.stderr.splitlines() if "error" in line]  # beside the plain progress lines
    assert res.exit_code == 7 and len(errors) == 1 and "--nul" in errors[0] and "Traceback" not in res.output, res.output
    res = run(app, ["execute", str(path), "--dest", str(tmp_path / "b"), "--source", mysql_url, "--nul", "zap"])
    assert res.exit_code == 2 and "--nul must be one of fail, strip, keep" in res.stderr, res.output
    res = run(app, ["execute", str(path), "--dest", str(tmp_path / "c"), "--source", mysql_url, "--nul", "strip"])
    assert res.exit_code == 0 and "had their NUL bytes stripped" in res.stdout, res.output


# ---------------------------------------------------------------------------------------------- 11 (documented)
@pytest.mark.parametrize("reader", READERS)
def test_partial_zero_and_year_0000_dates_become_null_and_are_counted(reader, mysql_engine, mysql_url, mysql_table,
                                                                      tmp_path):
    """What the README's type map says (finding 11 documents it): NULL, counted per column, both readers."""
    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY, d DATE, dt DATETIME, b BIT(64)) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")  # legacy tables hold such dates
        conn.exec_driver_sql(
            f"INSERT INTO {name} VALUES (1, '2020-00-15', '2020-05-00 12:00:00', 18446744073709551615), "
            "(2, '0000-03-01', '0000-01-01 00:00:00', 0), (3, '2020-05-06', '2020-05-06 07:08:09', 1), "
            "(4, '0000-00-00', '2020-00-00 00:00:00', NULL)")
    plan = make_plan(mysql_url, name, use_cache=False)
    assert {c.name: (c.arrow_type, c.redshift_type) for c in plan.columns}["b"] == ("decimal128(20, 0)", "NUMERIC(20,0)")
    report = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader=reader)
    assert report.zero_dates == {"d": 3, "dt": 3}
    rows = read_output(tmp_path / "out", plan, "id, d, CAST(dt AS VARCHAR), CAST(b AS VARCHAR)")
    assert [r[:3] for r in rows if r[0] != 3] == [(1, None, None), (2, None, None), (4, None, None)]
    assert [r[3] for r in rows] == ["18446744073709551615", "0", "1", None]
