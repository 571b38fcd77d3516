"""Schema evolution (sparsesync.sync.evolve): a plain ``sync`` after ADD, DROP, a rename, a widening or a
VARCHAR length change carries the image over to a new schema version — every part with the current Arrow
schema, the image equal to the source in every column of every row, the history in ``_state.json`` — and
refuses (one line naming the column) what it cannot carry over. Real MariaDB, local destination, one S3 case."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from sparsesync.errors import DriftError
from sparsesync.planner.introspect import introspect
from sparsesync.sync.evolve import arrow_schema
from sparsesync.sync.table import SyncOptions, sync_table
from tests.sync.conftest import state_of

pytestmark = pytest.mark.mysql

DDL = ("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(40), n INT NULL, f FLOAT NULL, d DECIMAL(8,2) NULL, "
       "s SMALLINT UNSIGNED NULL)")
ROWS = 600
SMALL = dict(rows_per_query=100, file_size_mb=0.006, reader="pymysql")  # 3 parts of 2 files


VALUES = {"id": "seq", "v": "CONCAT('v', seq)", "w": "CONCAT('w', seq)", "n": "IF(MOD(seq, 5) = 0, NULL, seq * 3)",
          "m": "seq * 5", "f": "seq + 0.25", "d": "seq / 4", "s": "MOD(seq, 300)"}


def fill(engine, t: str, lo: int = 1, hi: int = ROWS) -> None:
    """Rows lo..hi in whatever columns the table has now (columns added by a test take their default)."""
    cols = [c for c in source_columns(engine, t) if c in VALUES]
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{t}` ({', '.join(cols)}) SELECT {', '.join(VALUES[c] for c in cols)} "
                             f"FROM seq_{lo}_to_{hi}")


def source_columns(engine, t: str) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
            "ORDER BY ORDINAL_POSITION", (t,))]


def source_all(engine, t: str) -> list[tuple]:
    cols = ", ".join(f"`{c}`" for c in source_columns(engine, t))
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {cols} FROM `{t}` ORDER BY id")]


def image_files(dest: Path, t: str) -> list[str]:
    return [e["url"] for e in json.loads((dest / t / "current.manifest.json").read_text())["entries"]]


def image_all(files: list[str], columns: list[str]) -> list[tuple]:
    cols = ", ".join(f'"{c}"' for c in columns)
    return duckdb.sql(f"SELECT {cols} FROM read_parquet({files!r}) ORDER BY id").fetchall()


def check_image(engine, dest: Path, t: str) -> None:
    """Every part file has the current Arrow schema (the executor's for the source's columns now) and the
    image holds exactly the source's rows, every column."""
    want = arrow_schema(introspect(engine, t).columns)
    files = image_files(dest, t)
    assert files
    for f in files:
        assert pq.read_schema(f).remove_metadata().equals(want), f
    assert image_all(files, source_columns(engine, t)) == source_all(engine, t)


def alter(engine, t: str, *sql: str) -> None:
    with engine.begin() as conn:
        for s in sql:
            conn.exec_driver_sql(s.format(t=f"`{t}`"))


# kind of change -> (ALTER statements, change kinds recorded, parts rewritten?, every span re-exported?)
CASES = {
    "add_nullable": (["ALTER TABLE {t} ADD COLUMN c INT NULL"], ["add"], True, False),
    "add_default": (["ALTER TABLE {t} ADD COLUMN c INT NOT NULL DEFAULT 7"], ["add"], False, True),
    "drop": (["ALTER TABLE {t} DROP COLUMN n"], ["drop"], True, False),
    "rename": (["ALTER TABLE {t} RENAME COLUMN v TO w"], ["rename"], True, False),
    "int_bigint": (["ALTER TABLE {t} MODIFY n BIGINT NULL", "ALTER TABLE {t} MODIFY s INT UNSIGNED NULL"],
                   ["widen", "widen"], True, False),
    "float_double": (["ALTER TABLE {t} MODIFY f DOUBLE NULL"], ["widen"], True, False),
    "decimal": (["ALTER TABLE {t} MODIFY d DECIMAL(12,2) NULL"], ["widen"], True, False),
    "varchar": (["ALTER TABLE {t} MODIFY v VARCHAR(80)"], ["length"], False, False),
}


@pytest.mark.parametrize("case, detect", [(c, "checksum") for c in CASES]
                         + [(c, "none") for c in ("add_default", "drop", "rename", "int_bigint")])
def test_schema_change_then_plain_sync(mysql_url, mysql_engine, mysql_table, tmp_path, case, detect):
    statements, kinds, rewrites, reexports = CASES[case]
    t = mysql_table(DDL, prefix="ev")
    fill(mysql_engine, t)
    opts = SyncOptions(detect=detect, **SMALL)
    r1 = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r1.schema_version == 1
    before = state_of(tmp_path, t)
    old_paths = {p["path"] for p in before["parts"] if p["path"]}
    old_schema = pq.read_schema(tmp_path / t / sorted(old_paths)[0])
    alter(mysql_engine, t, *statements)
    fill(mysql_engine, t, ROWS + 1, ROWS + 50)  # appends in the same run

    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r.status == "ok", r.error
    check_image(mysql_engine, tmp_path, t)
    st = state_of(tmp_path, t)
    assert st["schema_version"] == 2 and r.schema_version == 2
    assert [s["version"] for s in st["schemas"]] == [1, 2]
    assert [c["kind"] for c in st["schemas"][1]["changes"]] == kinds
    assert st["schemas"][0]["columns"] == before["columns"] and st["schemas"][1]["columns"] == st["columns"]
    assert st["runs"][-1]["schema_version"] == 2 and st["runs"][0]["schema_version"] == 1
    sc = r.schema_change
    assert [c["kind"] for c in sc["changes"]] == kinds
    kept = [p for p in st["parts"] if p["path"] and p["run_id"] == r1.run_id]
    if rewrites:
        # every part of the first run that stayed is a new file in this run's folder; old files untouched
        assert sc["parts_rewritten"] > 0 and sc["bytes_rewritten"] > 0
        assert not any(p["path"] in old_paths for p in st["parts"])
        if not r.tidy["parts_merged"]:  # (smaller rewritten parts may be merged by the tidy step: sync.tidy)
            assert sc["parts_rewritten"] == len(kept) > 0
            assert all(p["path"].startswith(f"{r.run_id}/evolve-") for p in kept)
        assert all(pq.read_schema(tmp_path / t / p).equals(old_schema) for p in old_paths)
    else:
        assert sc["parts_rewritten"] == 0 and sc["bytes_rewritten"] == 0
    if reexports:
        assert r.rows_read == ROWS + 50 and sc["rows_reexported"] == ROWS
    else:
        assert r.rows_read == 50, (r.rows_read, sc)  # only the appended rows
        assert sc["rows_reexported"] == 0 and r.spans_reexported == 0
        if not rewrites:
            assert {p["path"] for p in st["parts"] if p["run_id"] == r1.run_id} == old_paths


@pytest.mark.parametrize("detect", ["checksum", "none", "cursor:s"])
def test_a_wrong_rename_guess_is_caught_in_the_same_run(mysql_url, mysql_engine, mysql_table, tmp_path, detect):
    """DROP v + ADD w VARCHAR(40) in v's place looks exactly like a rename; the new column's values are not
    v's: the checksum detection (checksum) or the verifying pass (none) re-exports every span that differs."""
    t = mysql_table(DDL, prefix="ev")
    fill(mysql_engine, t)
    opts = SyncOptions(detect=detect, **SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    alter(mysql_engine, t, "ALTER TABLE {t} DROP COLUMN v, ADD COLUMN w VARCHAR(40) AFTER id",
          "UPDATE {t} SET w = CONCAT('w', id) WHERE id <= 300")
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r.status == "ok", r.error
    assert [c["kind"] for c in r.schema_change["changes"]] == ["rename"]
    assert r.spans_reexported > 0 and r.rows_read >= 300
    sc = r.schema_change
    if detect == "checksum":  # detection re-read the rewritten parts that differ: their rewrite is not kept
        assert sc["rows_replaced_after_rewrite"] >= 300 and sc["rows_reexported"] == 0
    else:  # the verifying pass found them: re-exported for the change
        assert sc["rows_reexported"] >= 300 and "server checksum pass" in sc["verified"]
    check_image(mysql_engine, tmp_path, t)


def test_float_to_double_is_verified_without_checksum_detection(mysql_url, mysql_engine, mysql_table, tmp_path):
    """--detect none: FLOAT -> DOUBLE is checked by a checksum pass on the key and the column, so whatever
    value the server's conversion gives, the image has it (here: values changed with the ALTER)."""
    t = mysql_table(DDL, prefix="ev")
    fill(mysql_engine, t)
    opts = SyncOptions(detect="none", **SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    alter(mysql_engine, t, "ALTER TABLE {t} MODIFY f DOUBLE NULL", "UPDATE {t} SET f = f + 0.1 WHERE id = 7")
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert "server checksum pass" in r.schema_change["verified"]
    assert r.spans_reexported >= 1
    check_image(mysql_engine, tmp_path, t)


def rows_read(engine, t: str) -> int:
    with engine.connect() as conn:
        got = conn.exec_driver_sql("SELECT ROWS_READ FROM information_schema.TABLE_STATISTICS "
                                   "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (t,)).scalar()
    return int(got or 0)


@pytest.fixture
def userstat(mysql_engine):
    """The server's per-table statistics (information_schema.TABLE_STATISTICS: rows read of OUR table only,
    whatever other clients do meanwhile)."""
    with mysql_engine.connect() as conn:
        conn.exec_driver_sql("SET GLOBAL userstat = 1")  # left on: a concurrent user of it must not see it go off


@pytest.mark.parametrize("detect", ["none", "checksum"])
def test_varchar_length_change_reads_no_rows(mysql_url, mysql_engine, mysql_table, tmp_path, userstat, detect):
    t = mysql_table(DDL, prefix="ev")
    fill(mysql_engine, t)
    opts = SyncOptions(detect=detect, **SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    a = rows_read(mysql_engine, t)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)  # a sync with no change, for reference
    b = rows_read(mysql_engine, t)
    files = image_files(tmp_path, t)
    alter(mysql_engine, t, "ALTER TABLE {t} MODIFY v VARCHAR(200)")
    c = rows_read(mysql_engine, t)  # the ALTER itself copies the table
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    d = rows_read(mysql_engine, t)
    assert r.status == "ok" and r.schema_version == 2
    assert d - c == b - a  # the length change costs no row read beyond a sync without a change
    if detect == "none":
        assert d - c < ROWS // 10  # a few key probes (planner bounds, drift check), no table scan
    assert image_files(tmp_path, t) == files  # no part rewritten
    st = state_of(tmp_path, t)
    assert [(c["kind"], c["column"]) for c in st["schemas"][1]["changes"]] == [("length", "v")]
    assert next(c for c in st["columns"] if c["name"] == "v")["source_type"] == "varchar(200)"
    check_image(mysql_engine, tmp_path, t)


@pytest.mark.parametrize("sql, column", [
    ("ALTER TABLE {t} MODIFY n SMALLINT NULL", "n"),  # a narrowing
    ("ALTER TABLE {t} MODIFY s TINYINT NULL", "s"),  # unsigned to a smaller signed type
    ("ALTER TABLE {t} MODIFY n VARCHAR(20)", "n"),  # a type family change
    ("ALTER TABLE {t} MODIFY v VARCHAR(10)", "v"),  # a length narrowing
    ("ALTER TABLE {t} MODIFY d DECIMAL(8,1) NULL", "d"),  # fewer fraction digits
    ("ALTER TABLE {t} MODIFY f FLOAT NOT NULL", "f"),  # NULL -> NOT NULL
    ("ALTER TABLE {t} MODIFY id INT NOT NULL", "id"),  # the key column
])
def test_changes_that_cannot_be_carried_over_are_refused(mysql_url, mysql_engine, mysql_table, tmp_path, sql, column):
    t = mysql_table(DDL, prefix="ev")
    fill(mysql_engine, t, 1, 100)
    sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    before = (tmp_path / t / "_state.json").read_bytes()
    alter(mysql_engine, t, sql)
    with pytest.raises(DriftError) as exc:
        sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    line = exc.value.one_line()
    assert exc.value.exit_code == 6 and "\n" not in line
    assert f"column {column!r}" in line and "--full" in line
    assert (tmp_path / t / "_state.json").read_bytes() == before  # nothing half-written


def test_full_after_a_refused_change_starts_the_next_version(mysql_url, mysql_engine, mysql_table, tmp_path):
    t = mysql_table(DDL, prefix="ev")
    fill(mysql_engine, t, 1, 100)
    sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    alter(mysql_engine, t, "ALTER TABLE {t} MODIFY n VARCHAR(20)")
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL))
    assert r.status == "failed" and "column 'n'" in r.error
    rf = sync_table(mysql_url, t, tmp_path, SyncOptions(full=True, **SMALL), raise_errors=True)
    assert rf.kind == "full" and rf.schema_version == 2
    st = state_of(tmp_path, t)
    assert st["schema_version"] == 2 and [s["version"] for s in st["schemas"]] == [1, 2]
    assert st["schemas"][1]["changes"] == []  # not one of the five kinds: a full run records none
    assert [x["schema_version"] for x in st["runs"]] == [1, 2]
    check_image(mysql_engine, tmp_path, t)
    assert sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True).schema_change is None


def test_full_after_a_carried_change_records_its_changes(mysql_url, mysql_engine, mysql_table, tmp_path):
    t = mysql_table(DDL, prefix="ev")
    fill(mysql_engine, t, 1, 100)
    sync_table(mysql_url, t, tmp_path, SyncOptions(**SMALL), raise_errors=True)
    alter(mysql_engine, t, "ALTER TABLE {t} ADD COLUMN c INT NULL, DROP COLUMN f")
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(full=True, **SMALL), raise_errors=True)
    assert r.kind == "full" and r.rows_read == 100 and r.schema_change["parts_rewritten"] == 0
    st = state_of(tmp_path, t)
    assert [(c["kind"], c["column"]) for c in st["schemas"][1]["changes"]] == [("drop", "f"), ("add", "c")]
    check_image(mysql_engine, tmp_path, t)


def test_several_changes_in_one_run_and_twice(mysql_url, mysql_engine, mysql_table, tmp_path):
    """ADD + DROP + rename + widening at once, then another change: versions 1, 2, 3, runs tagged."""
    t = mysql_table(DDL, prefix="ev")
    fill(mysql_engine, t)
    opts = SyncOptions(**SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    alter(mysql_engine, t, "ALTER TABLE {t} ADD COLUMN c VARCHAR(5) NULL FIRST, DROP COLUMN f, RENAME COLUMN n TO m, "
                           "MODIFY d DECIMAL(10,3) NULL")
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert sorted(c["kind"] for c in r.schema_change["changes"]) == ["add", "drop", "rename", "widen"]
    assert r.spans_reexported == 0
    check_image(mysql_engine, tmp_path, t)
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)  # the next plain sync: nothing to do
    assert r.schema_change is None and r.rows_read == 0 and r.schema_version == 2
    alter(mysql_engine, t, "ALTER TABLE {t} MODIFY m BIGINT NULL", "UPDATE {t} SET c = 'x' WHERE id = 3")
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r.schema_version == 3 and r.spans_reexported == 1  # the updated row's span, found by detection
    st = state_of(tmp_path, t)
    assert [s["version"] for s in st["schemas"]] == [1, 2, 3]
    assert [x["schema_version"] for x in st["runs"]] == [1, 2, 2, 3]
    check_image(mysql_engine, tmp_path, t)


@pytest.mark.s3
def test_schema_change_on_s3(mysql_url, mysql_engine, mysql_table, s3_bucket, s3_client, tmp_path):
    t = mysql_table(DDL, prefix="ev3")
    fill(mysql_engine, t)
    dest = f"s3://{s3_bucket}/lake/evolve"
    opts = SyncOptions(**SMALL)
    sync_table(mysql_url, t, dest, opts, raise_errors=True)
    alter(mysql_engine, t, "ALTER TABLE {t} RENAME COLUMN v TO w, ADD COLUMN c INT NULL, MODIFY n BIGINT NULL")
    r = sync_table(mysql_url, t, dest, opts, raise_errors=True)
    assert r.status == "ok", r.error
    assert r.schema_change["parts_rewritten"] > 0 and r.spans_reexported == 0
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=f"lake/evolve/{t}/current.manifest.json")["Body"].read())
    want = arrow_schema(introspect(mysql_engine, t).columns)
    paths = []
    for i, e in enumerate(manifest["entries"]):
        p = tmp_path / f"dl{i}.parquet"
        s3_client.download_file(s3_bucket, e["url"].removeprefix(f"s3://{s3_bucket}/"), str(p))
        assert p.stat().st_size == e["meta"]["content_length"]
        assert pq.read_schema(p).remove_metadata().equals(want)
        paths.append(str(p))
    assert image_all(paths, source_columns(mysql_engine, t)) == source_all(mysql_engine, t)


def test_nullable_non_unique_key_and_hostile_names(mysql_url, mysql_engine, mysql_table, tmp_path):
    """--key k (nullable, not unique, duplicate rows, NULL keys: a part of their own) and columns named with
    quotes, a backtick and a space: renamed, added and widened, the NULL-key part rewritten like the others."""
    t = mysql_table("CREATE TABLE {name} (k BIGINT NULL, `we``ird \"col\"` INT NULL, v VARCHAR(20), KEY (k))", prefix="evk")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{t}` SELECT IF(MOD(seq, 50) = 0, NULL, seq DIV 2), seq, CONCAT('v', seq) "
                             "FROM seq_1_to_400")
        conn.exec_driver_sql(f"INSERT INTO `{t}` SELECT k, `we``ird \"col\"`, v FROM `{t}` WHERE k < 20")  # duplicates
    opts = SyncOptions(key="k", **SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    alter(mysql_engine, t, "ALTER TABLE {t} RENAME COLUMN `we``ird \"col\"` TO `it's new`, ADD COLUMN `a b` INT NULL, "
                           "MODIFY v VARCHAR(30)")
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r.status == "ok", r.error
    assert sorted(c["kind"] for c in r.schema_change["changes"]) == ["add", "length", "rename"]
    assert r.spans_reexported == 0 and r.schema_change["parts_rewritten"] >= 2
    st = state_of(tmp_path, t)
    nulls = next(p for p in st["parts"] if p["nulls"])
    assert nulls["path"].startswith(f"{r.run_id}/evolve-") and nulls["rows"] == 8
    want = arrow_schema(introspect(mysql_engine, t, key="k").columns)
    files = image_files(tmp_path, t)
    assert all(pq.read_schema(f).remove_metadata().equals(want) for f in files)
    order = "k NULLS FIRST, \"it's new\""
    got = duckdb.sql(f"SELECT k, \"it's new\", v, \"a b\" FROM read_parquet({files!r}) ORDER BY {order}").fetchall()
    with mysql_engine.connect() as conn:
        src = [tuple(x) for x in conn.exec_driver_sql(f"SELECT k, `it's new`, v, `a b` FROM `{t}` ORDER BY k, `it's new`")]
    assert got == src


def test_an_image_with_int8_tinyint_from_an_older_version_is_widened_not_refused(mysql_url, mysql_engine, mysql_table,
                                                                                tmp_path):
    """Before issue 17 TINYINT was written as int8; this version writes int16. An image made by the older
    version (its parts and columns int8) must carry over by a widening at the destination, not be refused
    as a change of type options."""
    import pyarrow as pa

    from dataclasses import replace as dc_replace

    from sparsesync.executor.sink import LocalSink
    from sparsesync.planner.introspect import schema_hash
    from sparsesync.planner.plan import ColumnSpec
    from sparsesync.sync.load import load_pending
    from sparsesync.sync.state import load_state, save_state

    t = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, b TINYINT NULL, v VARCHAR(20))", prefix="ev8")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{t}` SELECT seq, CAST(MOD(seq, 255) AS SIGNED) - 127, CONCAT('v', seq) FROM seq_1_to_400")
    opts = SyncOptions(detect="checksum", **SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    # Make the image what the older version wrote: column b int8 in the state and in every part.
    sink = LocalSink(tmp_path)
    st = load_state(sink, t)
    cols = tuple(dict(c, arrow_type="int8") if c["name"] == "b" else c for c in st.columns)
    parts = []
    for p in st.parts:
        files = []
        for f in p.files:
            path = tmp_path / t / f.path
            tbl = pq.read_table(path)
            tbl = tbl.set_column(tbl.schema.get_field_index("b"), pa.field("b", pa.int8()),
                                 tbl.column("b").cast(pa.int8()))
            pq.write_table(tbl, path)
            files.append(path.stat().st_size)
        parts.append(dc_replace(p, bytes=sum(files)) if files else p)
    specs = [ColumnSpec(**c) for c in cols]
    old_hash = schema_hash(specs, st.key)
    save_state(sink, t, dc_replace(st, columns=cols, schema_hash=old_hash, parts=tuple(parts), schemas=()))
    wh = tmp_path / "wh.duckdb"
    load_pending(str(tmp_path), t, f"duckdb:///{wh}")

    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r.status == "ok", r.error
    assert [(c["kind"], c["column"]) for c in r.schema_change["changes"]] == [("widen", "b")]
    assert r.spans_reexported == 0  # rewritten at the destination; the content checksums agree with the server
    check_image(mysql_engine, tmp_path, t)
    load_pending(str(tmp_path), t, f"duckdb:///{wh}")
    with duckdb.connect(str(wh)) as con:
        assert con.execute(f'SELECT id, b, v FROM "{t}" ORDER BY id').fetchall() == source_all(mysql_engine, t)
