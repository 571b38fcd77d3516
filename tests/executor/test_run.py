"""execute_plan end to end: round trips on SQLite and MariaDB, resume, overwrite, dry run, workers."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.planner.api import make_plan
from sparsesync.errors import DestinationError, UsageError

SQLITE_DDL = "CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT, x REAL)"
MYSQL_DDL = (
    "CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(40), d DATETIME NULL, n DECIMAL(10,2), "
    "ts TIMESTAMP NULL, b VARBINARY(8)) ENGINE=InnoDB"
)
ARTIFACTS = {"manifest.json", "copy.sql", "create_table.sql", "_report.json", "_ledger.json"}


# ---- helpers shared by the executor tests --------------------------------------------------------
def sparse_keys(n: int, seed: int = 7) -> list[int]:
    """``n`` distinct keys: a dense run, a sparse stretch and a few far outliers."""
    rng = random.Random(seed)
    dense = list(range(1, n // 2 + 1))
    sparse = sorted(rng.sample(range(10**6, 10**8), n - n // 2 - 3))
    return dense + sparse + [10**12, 10**15 + 7, 2**62]


def make_sqlite_table(url: str, keys: list[int], name: str = "t") -> str:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(SQLITE_DDL.format(name=name))
        if keys:
            conn.execute(
                sa.text(f"INSERT INTO {name} (id, v, x) VALUES (:id, :v, :x)"),
                [{"id": k, "v": f"v{k % 997}", "x": k / 7} for k in keys],
            )
    engine.dispose()
    return name


def fill_mysql(engine, name: str, keys: list[int]) -> None:
    rows = [
        {"id": k, "v": f"name-{k % 1013}", "d": f"2024-01-{1 + k % 28:02d} 12:{k % 60:02d}:00",
         "n": f"{k % 100000}.{k % 100:02d}", "ts": None if k % 5 == 0 else "2023-06-01 10:00:00", "b": bytes([k % 256])}
        for k in keys
    ]
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} (id, v, d, n, ts, b) VALUES (:id, :v, :d, :n, :ts, :b)"), rows)


def out_dir(dest: Path, plan) -> Path:
    return dest / output_folder(plan)


def read_output(dest: Path, plan, columns: str = "*") -> list[tuple]:
    """Every row in the manifest's parts, sorted by key, through DuckDB."""
    manifest = json.loads((out_dir(dest, plan) / "manifest.json").read_text())
    paths = [e["url"] for e in manifest["entries"]]
    if not paths:
        return []
    listing = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    key = plan.source.key
    return duckdb.sql(f'SELECT {columns} FROM read_parquet({listing}) ORDER BY "{key}"').fetchall()


def source_keys(engine, table: str) -> list[int]:
    with engine.connect() as conn:
        return [int(r[0]) for r in conn.exec_driver_sql(f"SELECT id FROM {table} ORDER BY id")]


def assert_clean_folder(dest: Path, plan) -> None:
    """Only the manifest's parts plus the run's artifacts; no staging leftovers, no orphans."""
    folder = out_dir(dest, plan)
    manifest = json.loads((folder / "manifest.json").read_text())
    parts = {Path(e["url"]).name for e in manifest["entries"]}
    present = {p.name for p in folder.iterdir()}
    assert present == parts | ARTIFACTS, present ^ (parts | ARTIFACTS)
    for e in manifest["entries"]:
        assert e["meta"]["content_length"] == os.path.getsize(e["url"])


# ---- tests -------------------------------------------------------------------------------------------------
def test_sqlite_round_trip(sqlite_url, tmp_path):
    keys = sparse_keys(3000)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=250, file_size=30_000)
    assert len(plan.files) > 2
    report = execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url)
    rows = read_output(tmp_path / "out", plan, "id, v, x")
    assert [r[0] for r in rows] == sorted(keys)
    assert all(r[1] == f"v{r[0] % 997}" and r[2] == pytest.approx(r[0] / 7) for r in rows)
    assert report.rows == len(keys) and report.status == "done" and report.verified == "counts"
    assert report.files == len(plan.files)
    assert sum(rc.actual for rc in report.ranges) == len(keys)
    assert_clean_folder(tmp_path / "out", plan)
    saved = json.loads((out_dir(tmp_path / "out", plan) / "_report.json").read_text())
    assert saved["rows"] == len(keys) and saved["plan_id"] == plan.plan_id


@pytest.mark.parametrize("reader, consistency", [("pymysql", "snapshot"), ("connectorx", "per-range")])
def test_mysql_round_trip_values(mysql_engine, mysql_url, mysql_table, tmp_path, reader, consistency):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(2000, seed=3)
    fill_mysql(mysql_engine, name, keys)
    plan = make_plan(mysql_url, name, rows_per_query=300, file_size=40_000)
    report = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader=reader)
    assert report.reader == reader and report.consistency == consistency
    # Only a snapshot run can compare COUNT(*) with the rows it streamed (same snapshot).
    assert report.snapshot_count == (len(keys) if consistency == "snapshot" else None)
    got = read_output(tmp_path / "out", plan, "id, v, CAST(n AS VARCHAR), b")
    with mysql_engine.connect() as conn:
        want = conn.exec_driver_sql(f"SELECT id, v, CAST(n AS CHAR), b FROM {name} ORDER BY id").all()
    assert [(r[0], r[1], r[2], bytes(r[3])) for r in got] == [(w[0], w[1], w[2], bytes(w[3])) for w in want]
    assert_clean_folder(tmp_path / "out", plan)


def test_resume_skips_done_groups_and_redoes_interrupted(sqlite_url, tmp_path):
    keys = sparse_keys(2000, seed=11)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=200, file_size=20_000)
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=sqlite_url)
    folder = out_dir(dest, plan)
    # Simulate a crash mid-run: group 1 was running (its part committed but not recorded), no manifest yet.
    ledger = json.loads((folder / "_ledger.json").read_text())
    ledger["groups"][1]["state"] = "running"
    ledger["groups"][2]["state"] = "pending"
    ledger["groups"][2]["parts"] = []
    (folder / "_ledger.json").write_text(json.dumps(ledger))
    (folder / "manifest.json").unlink()
    (folder / (plan.files[3].name + ".123.sparsesync-tmp")).write_bytes(b"half a part")
    report = execute_plan(plan, str(dest), source_url=sqlite_url)
    assert report.groups_skipped == len(plan.files) - 2
    assert report.groups_redone >= 1
    assert [r[0] for r in read_output(dest, plan, "id")] == sorted(keys)
    assert_clean_folder(dest, plan)


def test_done_group_with_damaged_part_is_redone(sqlite_url, tmp_path):
    keys = sparse_keys(1500, seed=5)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=200, file_size=20_000)
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=sqlite_url)
    folder = out_dir(dest, plan)
    (folder / "manifest.json").unlink()
    (folder / plan.files[0].name).write_bytes(b"truncated")  # wrong size → not trusted
    report = execute_plan(plan, str(dest), source_url=sqlite_url)
    assert report.groups_skipped == len(plan.files) - 1
    assert [r[0] for r in read_output(dest, plan, "id")] == sorted(keys)
    assert_clean_folder(dest, plan)


def test_finished_run_is_kept_unless_overwrite(sqlite_url, tmp_path):
    keys = sparse_keys(800)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=200, file_size=20_000)
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=sqlite_url)
    again = execute_plan(plan, str(dest), source_url=sqlite_url)
    assert again.status == "already-complete" and again.rows == 0
    # The source changed; --overwrite re-reads everything into the same folder.
    with sa.create_engine(sqlite_url).begin() as conn:
        conn.exec_driver_sql("DELETE FROM t WHERE id <= 100")
    redo = execute_plan(plan, str(dest), source_url=sqlite_url, overwrite=True)
    assert redo.status == "done" and redo.groups_skipped == 0
    assert [r[0] for r in read_output(dest, plan, "id")] == sorted(k for k in keys if k > 100)
    assert redo.deviations  # planned (exact) vs actual differs in the first range
    assert_clean_folder(dest, plan)


def test_dry_run_prints_queries_and_writes_nothing(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(500))
    plan = make_plan(sqlite_url, "t", rows_per_query=100, file_size=20_000)
    dest = tmp_path / "out"
    report = execute_plan(plan, str(dest), source_url=sqlite_url, dry_run=True)
    assert report.status == "dry-run"
    assert len(report.queries_sql) == len(plan.ranges)
    assert f"id >= {plan.ranges[1].lo} AND id < {plan.ranges[1].hi}" in report.queries_sql[1].replace('"', "")
    assert "<" not in report.queries_sql[-1].split("WHERE")[1]  # the open tail has no upper bound
    assert not dest.exists()


def test_parallel_workers_per_range_consistency(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(2500, seed=21)
    fill_mysql(mysql_engine, name, keys)
    plan = make_plan(mysql_url, name, rows_per_query=200, file_size=20_000)
    report = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, workers=3)
    assert report.consistency == "per-range" and report.workers == 3
    assert [r[0] for r in read_output(tmp_path / "out", plan, "id")] == sorted(keys)
    assert_clean_folder(tmp_path / "out", plan)


def test_source_url_must_match_plan(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, [1, 2, 3])
    plan = make_plan(sqlite_url, "t")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(UsageError, match="points at"):
        execute_plan(plan, str(tmp_path / "out"), source_url=other)
    assert not (tmp_path / "out").exists()


def test_plan_without_source_url_rebuilds_it_from_identity(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSESYNC_SOURCE_URL", raising=False)
    make_sqlite_table(sqlite_url, list(range(1, 301)))
    plan = make_plan(sqlite_url, "t", rows_per_query=100)
    report = execute_plan(plan, str(tmp_path / "out"))
    assert report.rows == 300


def test_foreign_ledger_is_refused(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, list(range(1, 201)))
    plan = make_plan(sqlite_url, "t", rows_per_query=100)
    other = make_plan(sqlite_url, "t", rows_per_query=50)
    ledger = tmp_path / "ledger.json"
    execute_plan(other, str(tmp_path / "o1"), source_url=sqlite_url, ledger=str(ledger))
    with pytest.raises(DestinationError, match="another plan"):
        execute_plan(plan, str(tmp_path / "o2"), source_url=sqlite_url, ledger=str(ledger))
    assert not (tmp_path / "o2").exists()


def test_progress_callback_counts_rows(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, sparse_keys(1000))
    plan = make_plan(sqlite_url, "t", rows_per_query=100, file_size=20_000)
    events = []
    execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url, progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert kinds.count("group") == len(plan.files)
    assert kinds.count("range") == len(plan.ranges)
    assert events[-1].rows_done == 1000


@pytest.mark.s3
def test_s3_destination_round_trip(sqlite_url, s3_bucket, s3_client, tmp_path):
    """Nothing in execute/verify assumes a local path: same run into moto's S3."""
    from sparsesync.executor.verify import verify_output

    keys = sparse_keys(1200, seed=31)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=200, file_size=10_000)
    dest = f"s3://{s3_bucket}/exports"
    report = execute_plan(plan, dest, source_url=sqlite_url)
    assert report.rows == len(keys) and report.manifest == f"s3://{s3_bucket}/exports/{output_folder(plan)}/manifest.json"
    prefix = f"exports/{output_folder(plan)}/"
    objects = {o["Key"][len(prefix):]: o["Size"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)["Contents"]}
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=prefix + "manifest.json")["Body"].read())
    parts = {e["url"].rsplit("/", 1)[1]: e["meta"]["content_length"] for e in manifest["entries"]}
    assert set(objects) == set(parts) | ARTIFACTS
    assert all(objects[name] == size for name, size in parts.items())
    copy = s3_client.get_object(Bucket=s3_bucket, Key=prefix + "copy.sql")["Body"].read().decode()
    assert f"FROM 's3://{s3_bucket}/{prefix}manifest.json'" in copy
    assert verify_output(plan, dest, source_url=sqlite_url, all_columns=True).ok
    assert execute_plan(plan, dest, source_url=sqlite_url).status == "already-complete"


def test_zero_dates_are_counted_in_the_report(mysql_engine, mysql_url, mysql_table, tmp_path):
    from sparsesync.errors import ValueConversionError

    name = mysql_table("CREATE TABLE {name} (id INT PRIMARY KEY, d DATE NOT NULL)")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")  # allow zero dates, as legacy tables hold them
        conn.exec_driver_sql(
            f"INSERT INTO {name} VALUES " + ",".join(f"({i}, '{'0000-00-00' if i % 4 == 0 else '2024-02-03'}')" for i in range(1, 201))
        )
    plan = make_plan(mysql_url, name, rows_per_query=50)
    report = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader="pymysql")
    assert report.zero_dates == {"d": 50}
    assert any("zero dates" in line for line in report.summary_lines())
    rows = read_output(tmp_path / "out", plan, "id, d")
    assert [r[0] for r in rows if r[1] is None] == list(range(4, 201, 4))
    with pytest.raises(ValueConversionError):
        execute_plan(plan, str(tmp_path / "strict"), source_url=mysql_url, reader="pymysql", strict_dates=True)
    folder = out_dir(tmp_path / "strict", plan)
    assert not (folder / "manifest.json").exists()
    assert not [p for p in folder.iterdir() if p.suffix == ".parquet" or "sparsesync-tmp" in p.name]


def test_empty_table(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, [])
    plan = make_plan(sqlite_url, "t")
    report = execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url)
    assert report.rows == 0 and report.status == "done"
    assert read_output(tmp_path / "out", plan, "id") == []
    assert_clean_folder(tmp_path / "out", plan)


def test_overwrite_replaces_a_torn_ledger(sqlite_url, tmp_path):
    make_sqlite_table(sqlite_url, list(range(1, 301)))
    plan = make_plan(sqlite_url, "t", rows_per_query=100)
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=sqlite_url)
    (out_dir(dest, plan) / "_ledger.json").write_text('{"groups": [')
    (out_dir(dest, plan) / "manifest.json").unlink()
    with pytest.raises(DestinationError, match="unreadable"):
        execute_plan(plan, str(dest), source_url=sqlite_url)
    assert execute_plan(plan, str(dest), source_url=sqlite_url, overwrite=True).rows == 300
    assert_clean_folder(dest, plan)


def test_ctrl_c_while_the_pool_waits_stops_the_workers(monkeypatch):
    """A KeyboardInterrupt in the waiting thread sets ``stop``: leaving the pool then waits for workers that
    end at their next batch, not for every file group to be read."""
    import threading

    import sparsesync.executor.run as run

    stop, started = threading.Event(), threading.Event()

    def work():  # a worker reading batches until told to stop, as write_group does
        started.set()
        while not stop.wait(0.01):
            pass
        raise run._Cancelled()

    def interrupted(fs, return_when=None):
        started.wait(5)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "wait", interrupted)
    raised = []

    def call():
        try:
            run._run_all([work, work], 2, "t", stop)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            raised.append(exc)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive() and stop.is_set()
    assert len(raised) == 1 and isinstance(raised[0], KeyboardInterrupt)
