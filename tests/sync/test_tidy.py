"""A tidy image (sync/tidy.py): a span is one file, small parts are merged at the destination as the image
grows, and ``--file-size`` takes fractions. Real MariaDB tables, local destination, a DuckDB warehouse."""

from __future__ import annotations

import json
import random

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sparsesync.sync.load import load_pending
from sparsesync.sync.table import SyncOptions, sync_table
from sparsesync.sync.tidy import MAX_MERGED, merge_plan, part_cap, slack
from tests.sync.conftest import image_rows, s3_bucket, s3_client, s3_env, s3_server, source_rows, state_of  # noqa: F401 - S3 fixtures

ROLL = dict(rows_per_query=100_000, file_size_mb=0.004, reader="pymysql")  # one range; its file group rolls at 4 KiB
F = int(0.004 * 1024 * 1024)


def fill(engine, table, lo, hi):
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{table}` (id, v, n) SELECT seq, CONCAT('row-', seq, '-', "
                             f"REPEAT(CHAR(97 + seq MOD 26), seq MOD 23)), seq MOD 7 FROM seq_{lo}_to_{hi}")


def keyed(st: dict) -> list[dict]:
    return [p for p in st["parts"] if not p["nulls"]]


def in_part(p: dict, k: int) -> bool:
    hi = p["hi"] if p["hi"] is not None else p["read_hi"]
    return int(p["lo"]) <= k and (hi is None or k < int(hi))


@pytest.mark.mysql
def test_a_rolled_file_group_is_one_part_per_file_and_an_update_reexports_only_that_file(
        mysql_url, mysql_engine, sync_table_name, tmp_path):
    t = sync_table_name()
    fill(mysql_engine, t, 1, 3000)
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**ROLL), raise_errors=True)
    st = state_of(tmp_path, t)
    parts = keyed(st)
    assert len(parts) >= 3 and r.tidy["groups_split"] == 1 and r.tidy["parts_from_splits"] == len(parts)
    assert not any(p.get("more") for p in st["parts"])  # no span holds several files any more
    for p in parts:  # each part is exactly one file, whose keys lie in the part's span
        got = pq.read_table(tmp_path / t / p["path"], columns=["id"]).column(0).to_pylist()
        assert len(got) == p["rows"] and all(in_part(p, k) for k in got)
    assert [p["hi"] for p in parts[:-1]] == [p["lo"] for p in parts[1:]]
    assert json.loads((tmp_path / t / "current.manifest.json").read_text())["entries"].__len__() == len(parts)

    middle = parts[len(parts) // 2]
    k = int(middle["lo"]) + 1
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE `{t}` SET v = 'changed' WHERE id = {k}")
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**ROLL), raise_errors=True)
    assert (r.kind, r.spans_reexported) == ("changed", 1)
    assert r.rows_read == middle["rows"] < 3000 // 2  # that file's rows, not the whole group's 3,000
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
    r = sync_table(mysql_url, t, tmp_path, SyncOptions(**ROLL), raise_errors=True)
    assert (r.spans_reexported, r.rows_read) == (0, 0)  # the split parts' content checksums match the source


@pytest.mark.mysql
def test_duplicate_and_null_keys_split_at_key_boundaries(mysql_url, mysql_engine, mysql_table, tmp_path):
    """A non-unique nullable key (``--key``), every row twice, NULL keys, a column name with a space and a
    quote: the rolled group is cut only where keys do not straddle two files, no row is lost, the content
    checksums of the pieces match the server's, and an update re-reads one piece."""
    t = mysql_table("CREATE TABLE {name} (k BIGINT NULL, `v 'al` VARCHAR(60), d DECIMAL(12,3), f DOUBLE, KEY (k))",
                    prefix="td")
    with mysql_engine.begin() as conn:
        for _ in range(2):  # every row twice
            conn.exec_driver_sql(f"INSERT INTO `{t}` SELECT seq DIV 2, CONCAT('x', seq, REPEAT('y', seq MOD 19)), "
                                 f"seq / 8, seq / 3 FROM seq_1_to_1500")
        conn.exec_driver_sql(f"INSERT INTO `{t}` VALUES (NULL, 'null-key', 1.5, 0.1), (NULL, 'null-key', 1.5, 0.1)")
    opts = SyncOptions(key="k", **ROLL)
    def source():
        with mysql_engine.connect() as conn:
            return sorted((tuple(r) for r in conn.exec_driver_sql(f"SELECT k, `v 'al`, d, f FROM `{t}`")), key=repr)

    src = source()

    def img():
        urls = [e["url"] for e in json.loads((tmp_path / t / "current.manifest.json").read_text())["entries"]]
        return sorted(duckdb.sql(f"SELECT k, \"v 'al\", d, f FROM read_parquet({urls!r})").fetchall(), key=repr)

    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    parts = keyed(state_of(tmp_path, t))
    assert len(parts) >= 3 and r.tidy["groups_split"] == 1 and img() == src
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert (r.spans_reexported, r.rows_read) == (0, 0)
    k = int(parts[1]["lo"]) + 2
    with mysql_engine.begin() as conn:
        # one of the two copies (both copies alike cancel in today's XOR checksum: issue 16 finding 1, not ours)
        conn.exec_driver_sql(f"UPDATE `{t}` SET `v 'al` = 'changed' WHERE k = {k} LIMIT 1")
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r.spans_reexported == 1 and 0 < r.rows_read < 3000 // 2
    assert img() == source()


def merged_parts(dest, t) -> list[dict]:
    """The image's parts whose file no run's delta manifest lists (made by a merge)."""
    out = []
    for p in keyed(state_of(dest, t)):
        if p["path"] is None:
            continue
        delta = json.loads((dest / t / p["run_id"] / "manifest.json").read_text())["entries"]
        if p["path"].rsplit("/", 1)[1] not in {e["url"].rsplit("/", 1)[1] for e in delta}:
            out.append(p)
    assert out, "no merged part"
    return out


@pytest.mark.mysql
def test_small_appends_are_merged_within_the_bound_and_the_warehouse_follows(
        mysql_url, mysql_engine, sync_table_name, tmp_path):
    t = sync_table_name()
    dest = tmp_path / "lake"
    fill(mysql_engine, t, 1, 200)
    opts = SyncOptions(**dict(ROLL, file_size_mb=0.016))  # 200 rows fit one 16 KiB file: every append is small
    f = int(0.016 * 1024 * 1024)
    wh, late = tmp_path / "wh.duckdb", tmp_path / "late.duckdb"
    top, merged, folded, runs = 200, 0, 0, 8
    for i in range(runs + 1):
        if i and i != 4:  # run 4 finds nothing new: its empty open tail is folded into the part before it
            fill(mysql_engine, t, top + 1, top + 15)
            top += 15
        if i == 6:  # an update inside a merged part: that span is re-read, the warehouse follows
            target = merged_parts(dest, t)[0]
            with mysql_engine.begin() as conn:
                k = int(target["hi"] or target["read_hi"]) - 1  # its last row (keys are consecutive here)
                conn.exec_driver_sql(f"UPDATE `{t}` SET v = 'upd' WHERE id = {k}")
        r = sync_table(mysql_url, t, dest, opts, raise_errors=True)
        parts = keyed(state_of(dest, t))
        assert len(parts) <= part_cap(sum(p["bytes"] for p in parts), f), (i, [p["bytes"] for p in parts])
        if i == 6:
            assert r.spans_reexported == 1 and r.rows_read == target["rows"] + 15
        tidied = getattr(r, "tidy", None) or {}  # what the run's tidy step did (absent before it existed)
        merged += tidied.get("parts_merged", 0)
        folded += tidied.get("spans_folded", 0)
        assert tidied.get("bytes_written", 0) <= MAX_MERGED * f * max(1, tidied.get("merged_into", 0))
        load_pending(str(dest), t, f"duckdb:///{wh}")  # run by run
    assert merged > 0 and folded > 0
    want = source_rows(mysql_engine, t)
    assert image_rows(dest, t) == want
    with duckdb.connect(str(wh)) as con:
        assert con.execute(f'SELECT id, v, n FROM "{t}" ORDER BY id').fetchall() == want
    load_pending(str(dest), t, f"duckdb:///{late}")  # a lagging warehouse replays every run's delta
    with duckdb.connect(str(late)) as con:
        assert con.execute(f'SELECT id, v, n FROM "{t}" ORDER BY id').fetchall() == want
    r = sync_table(mysql_url, t, dest, opts, raise_errors=True)  # merged parts' checksums: nothing to re-read
    assert (r.spans_reexported, r.rows_read) == (0, 0)


@pytest.mark.mysql
def test_fractional_file_size_on_the_command_line(mysql_url, mysql_engine, sync_table_name, tmp_path):
    from sparsesync.cli import _register, app

    _register()
    t = sync_table_name()
    fill(mysql_engine, t, 1, 3000)
    runner = CliRunner()
    from sparsesync.cli.options import FILE_SIZE

    helptext = FILE_SIZE.help  # plan, run and sync share this one definition (tests/test_cli_options.py)
    assert "fractions" in helptext and "[default: 256]" in helptext
    res = runner.invoke(app, ["sync", mysql_url, t, "--dest", str(tmp_path / "lake"), "--file-size", "0.004",
                              "--rows-per-query", "100000", "--reader", "pymysql"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert len(keyed(state_of(tmp_path / "lake", t))) >= 3  # rolled at 4 KiB, one part per file
    res = runner.invoke(app, ["plan", mysql_url, t, "--file-size", "0.5", "-o", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p.json").read_text())["strategy"]["file_size"] == 512 * 1024


def test_merge_policy_keeps_the_bound_and_rewrites_little():
    """100 appends of 1 % of a file onto 10 full files, then random images: within the cap after every run
    (or every adjacent pair is over 1.5 files), no merged file over 1.5 files, at most 1 + slack merges in a
    run, most runs merge nothing, and the full files are never rewritten."""
    f = 1000
    sizes = [f] * 10
    merging = 0
    for _ in range(100):
        sizes.append(f // 100)
        groups = merge_plan(sizes, f)
        cap = part_cap(sum(sizes), f)
        assert len(groups) <= cap
        rewritten = [g for g in groups if len(g) > 1]
        assert sum(len(g) - 1 for g in rewritten) <= 1 + slack(cap)
        assert all(sum(sizes[i] for i in g) <= MAX_MERGED * f for g in rewritten)
        merging += bool(rewritten)
        sizes = [sum(sizes[i] for i in g) for g in groups]
    assert sizes[:10] == [f] * 10  # the full files were never rewritten
    assert merging <= 50
    rnd = random.Random(7)
    for _ in range(300):
        sizes = [rnd.choice([0, rnd.randint(1, 2 * f)]) for _ in range(rnd.randint(1, 40))]
        groups = merge_plan(sizes, f)
        assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
        got = [sum(sizes[i] for i in g) for g in groups]
        assert len(groups) <= part_cap(sum(sizes), f) or all(a + b > MAX_MERGED * f for a, b in zip(got, got[1:]))


@pytest.mark.mysql
@pytest.mark.s3
def test_split_and_merge_on_s3(mysql_url, mysql_engine, sync_table_name, s3_bucket, s3_client, tmp_path):
    """On S3 the parts are downloaded to a private temporary folder to be cut, checksummed and merged; a larger
    ``--file-size`` on a later run lowers the bound, so that run merges several pairs at once."""
    from tests.sync.test_s3 import PREFIX, s3_image

    t = sync_table_name()
    fill(mysql_engine, t, 1, 900)
    dest = f"s3://{s3_bucket}/{PREFIX}"

    def state():
        return json.loads(s3_client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{t}/_state.json")["Body"].read())

    r = sync_table(mysql_url, t, dest, SyncOptions(**ROLL), raise_errors=True)
    assert r.tidy["groups_split"] == 1 and len(keyed(state())) >= 3
    fill(mysql_engine, t, 901, 920)
    r = sync_table(mysql_url, t, dest, SyncOptions(**dict(ROLL, file_size_mb=0.05)), raise_errors=True)
    parts = keyed(state())
    assert r.tidy["parts_merged"] >= 3 and len(parts) <= part_cap(sum(p["bytes"] for p in parts), int(0.05 * 2**20))
    assert s3_image(s3_client, s3_bucket, t, tmp_path / "img") == source_rows(mysql_engine, t)
    r = sync_table(mysql_url, t, dest, SyncOptions(**dict(ROLL, file_size_mb=0.05)), raise_errors=True)
    assert (r.spans_reexported, r.rows_read) == (0, 0)
