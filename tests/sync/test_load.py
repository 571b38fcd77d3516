"""Loading runs exactly once: DuckDB executed for real, Redshift SQL golden-tested."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.executor.dest import open_sink
from sparsesync.sync.load import LoadError, apply_run_duckdb, load_pending, parse_into, pending_runs
from sparsesync.sync.loadsql import merge_spans, span_predicate, write_load_sql

from .imagekit import MIN, Image


def warehouse_rows(path, table="orders"):
    con = duckdb.connect(str(path))
    try:
        return sorted(con.execute(f'SELECT id, v FROM "{table}"').fetchall(), key=lambda r: (r[0] is None, r[0] or 0, r[1]))
    finally:
        con.close()


def source_rows(rows, nulls):
    return sorted([(k, v) for k, v in rows.items()] + [(None, v) for v in nulls], key=lambda r: (r[0] is None, r[0] or 0, r[1]))


# ---- spans ---------------------------------------------------------------------------------------------------
def test_span_predicate_merges_touching_spans_and_drops_the_domain_minimum():
    assert merge_spans([["10", "20"], ["20", "30"], ["50", None], ["40", "45"]]) == [(10, 30), (40, 45), (50, None)]
    assert span_predicate("id", [[str(MIN), None]], True) == '("id" IS NOT NULL) OR ("id" IS NULL)'
    assert span_predicate("id", [["5", "9"]], False) == '"id" >= 5 AND "id" < 9'
    assert span_predicate("id", [], False) is None


def test_span_keys_must_be_integers():
    with pytest.raises(Exception, match="bad key bound"):
        span_predicate("id", [["1; DROP TABLE x", None]], False)


# ---- Redshift golden -------------------------------------------------------------------------------------------
GOLDEN_APPEND = '''-- sparsesync: apply run 20260101T002000Z-000002 (sequence 2) of orders to "analytics"."orders"
-- schema version 1
-- Safe to run twice; refused (cast error, transaction rolled back) after a newer run of this target.
-- A sparsesync_loads made before schema versions needs once: ALTER TABLE sparsesync_loads ADD COLUMN schema_version BIGINT;
BEGIN;
CREATE TABLE IF NOT EXISTS sparsesync_loads (target VARCHAR(512) NOT NULL, run_id VARCHAR(64) NOT NULL, sequence BIGINT NOT NULL, applied_at TIMESTAMP, schema_version BIGINT);
LOCK sparsesync_loads;
SELECT CASE WHEN (SELECT MAX(sequence) FROM sparsesync_loads WHERE target = 'analytics.orders') > 2
  THEN CAST('sparsesync: refusing run 20260101T002000Z-000002 (sequence 2): a newer run of analytics.orders is already applied' AS INTEGER) END;
SELECT CASE WHEN COALESCE((SELECT MAX(sequence) FROM sparsesync_loads WHERE target = 'analytics.orders'), -1) < 1
  THEN CAST('sparsesync: refusing run 20260101T002000Z-000002 (sequence 2): analytics.orders has not applied sequence 1; load it with sparsesync load (it loads the image when runs are gone)' AS INTEGER) END;
CREATE TEMP TABLE "sparsesync_stage_2" (
  "id" BIGINT,
  "v" VARCHAR(256)
);
COPY "sparsesync_stage_2"
FROM 's3://lake/x/orders/20260101T002000Z-000002/manifest.json'
IAM_ROLE 'arn:aws:iam::1:role/load'
FORMAT AS PARQUET
MANIFEST;
DELETE FROM "analytics"."orders" WHERE "id" >= 4;
INSERT INTO "analytics"."orders" ("id", "v") SELECT "id", "v" FROM "sparsesync_stage_2";
DROP TABLE "sparsesync_stage_2";
DELETE FROM sparsesync_loads WHERE target = 'analytics.orders' AND sequence = 2;
INSERT INTO sparsesync_loads (target, run_id, sequence, applied_at, schema_version) VALUES ('analytics.orders', '20260101T002000Z-000002', 2, GETDATE(), 1);
COMMIT;
'''


def test_redshift_load_sql_golden_append(tmp_path):
    img = Image(tmp_path)
    img.sync({1: "a", 3: "b"}, [])
    run = img.sync({1: "a", 3: "b", 7: "c"}, [])
    sql = write_load_sql(img.state(), run, target="analytics.orders", iam_role="arn:aws:iam::1:role/load",
                         manifest_url="s3://lake/x/orders/20260101T002000Z-000002/manifest.json")
    assert sql == GOLDEN_APPEND


def test_redshift_load_sql_of_an_empty_first_run_skips_copy_but_deletes(tmp_path):
    img = Image(tmp_path)
    run = img.sync({}, [])
    sql = write_load_sql(img.state(), run)
    assert "COPY" not in sql and "INSERT INTO \"orders\"" not in sql
    # A first run replaces the target: a new (here empty) table swapped in.
    assert 'DROP TABLE IF EXISTS "orders";\nALTER TABLE "orders__sparsesync_swap" RENAME TO "orders";' in sql
    assert sql.rstrip().endswith("COMMIT;")


# ---- DuckDB: executed for real ---------------------------------------------------------------------------------
def test_load_sql_splits_into_its_statements_for_a_driver():
    from sparsesync.sync.load import _statements

    stmts = _statements(GOLDEN_APPEND)
    assert stmts[0] == "BEGIN" and stmts[-1] == "COMMIT" and len(stmts) == 13
    assert all(not s.endswith(";") and not s.startswith("--") for s in stmts)


def test_into_url_follows_sqlalchemy_slashes():
    assert parse_into("duckdb:///wh.duckdb") == ("duckdb", "wh.duckdb")
    assert parse_into("duckdb:////abs/wh.duckdb") == ("duckdb", "/abs/wh.duckdb")
    assert parse_into("redshift+redshift_connector://u@h:5439/db")[0] == "redshift"
    with pytest.raises(Exception, match="unsupported warehouse"):
        parse_into("postgresql://u@h/db")


def test_load_applies_pending_runs_in_order_and_refuses_an_older_one(tmp_path):
    img = Image(tmp_path / "dest")
    rows, nulls = {1: "a", 2: "b", 10: "c"}, ["n1"]
    img.sync(rows, nulls)
    wh = tmp_path / "wh.duckdb"
    res = load_pending(str(tmp_path / "dest"), "orders", f"duckdb:///{wh}")
    # A new target is loaded from the image (current.manifest.json), recorded as the image's sequence.
    assert res.applied == [] and res.from_image == 1 and warehouse_rows(wh) == source_rows(rows, nulls)
    assert "loaded the image (sequence 1)" in res.summary() and "the target is new" in res.summary()
    rows.update({3: "d", 11: "e"})
    del rows[1]
    nulls.append("n2")
    img.sync(rows, nulls)
    img.sync(rows, nulls)  # nothing changed: a run with only the new empty tail
    res = load_pending(str(tmp_path / "dest"), "orders", f"duckdb:///{wh}")
    assert res.applied == [r["run_id"] for r in img.runs[1:]] and res.already == 1
    assert warehouse_rows(wh) == source_rows(rows, nulls) == img.rows()
    assert load_pending(str(tmp_path / "dest"), "orders", f"duckdb:///{wh}").applied == []

    before = warehouse_rows(wh)
    con = duckdb.connect(str(wh))
    try:
        with pytest.raises(LoadError, match="newer run is already applied"):
            apply_run_duckdb(con, open_sink(str(tmp_path / "dest")), img.state(), img.runs[0], "orders", str(tmp_path))
    finally:
        con.close()
    assert warehouse_rows(wh) == before  # the refused run changed nothing


def test_a_gap_in_the_runs_is_refused():
    state = {"table": "t", "runs": [{"run_id": "r3", "sequence": 3, "kind": "changed"}]}
    with pytest.raises(LoadError, match="next run is r3"):
        pending_runs(state, 1)
    assert pending_runs({"table": "t", "runs": [{"run_id": "r5", "sequence": 5, "kind": "full"}]}, 1)[0]["run_id"] == "r5"


def test_a_part_removed_from_under_a_pending_run_fails_with_one_line(tmp_path):
    img = Image(tmp_path / "dest")
    img.sync({1: "a"}, [])
    part = next(p for p in img.parts if p["path"])
    (tmp_path / "dest" / "orders" / part["path"]).unlink()
    with pytest.raises(LoadError, match="missing"):
        load_pending(str(tmp_path / "dest"), "orders", f"duckdb:///{tmp_path / 'wh.duckdb'}")


def test_unsigned_keys_near_2_64_and_an_odd_target_name(tmp_path):
    top = 2**64 - 1
    img = Image(tmp_path / "dest", unsigned=True)
    rows = {0: "zero", 2**63: "mid", top - 1: "a"}
    img.sync(rows, [])
    rows[top] = "max"
    rows[2**63] = "MID"
    img.sync(rows, [])
    wh = tmp_path / "wh.duckdb"
    load_pending(str(tmp_path / "dest"), "orders", f"duckdb:///{wh}", target='we"ird tab')
    con = duckdb.connect(str(wh))
    got = con.execute('SELECT CAST(id AS VARCHAR), v FROM "we""ird tab" ORDER BY id').fetchall()
    assert got == [(str(k), v) for k, v in sorted(rows.items())]


keys = st.one_of(st.integers(-50, 50), st.integers(-(2**63), 2**63 - 1))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.text("abc", max_size=3)),
        st.tuples(st.just("del"), keys, st.just("")),
        st.tuples(st.just("null"), st.just(0), st.text("xy", max_size=2)),
        st.tuples(st.just("dropnull"), st.just(0), st.just("")),
        st.tuples(st.just("sync"), st.booleans(), st.just("")),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_warehouse_converges_and_applying_every_run_twice_changes_nothing(seq):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        img, rows, nulls = Image(tmp / "dest"), {}, []
        once, twice = tmp / "once.duckdb", tmp / "twice.duckdb"
        sink = open_sink(str(tmp / "dest"))
        for op, a, b in seq + [("sync", True, "")]:
            if op == "put":
                rows[a] = b
            elif op == "del":
                rows.pop(a, None)
            elif op == "null":
                nulls.append(b)
            elif op == "dropnull" and nulls:
                nulls.pop(0)
            elif op == "sync":
                run = img.sync(rows, nulls, detect=a or not img.runs)
                load_pending(str(tmp / "dest"), "orders", f"duckdb:///{once}")
                con = duckdb.connect(str(twice))
                try:
                    con.execute("CREATE TABLE IF NOT EXISTS sparsesync_loads (target VARCHAR(512), run_id VARCHAR(64), sequence BIGINT, applied_at TIMESTAMP)")
                    for _ in range(2):
                        apply_run_duckdb(con, sink, img.state(), run, "orders", str(tmp))
                finally:
                    con.close()
                # A run detecting changes makes the image equal to the source; 'none' only appends.
                expected = img.rows()
                if a or len(img.runs) == 1:
                    assert expected == source_rows(rows, nulls)
                assert warehouse_rows(once) == expected
                assert warehouse_rows(twice) == expected
