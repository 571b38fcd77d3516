"""Memory bounded by bytes and parts rotating at run time (issue 7, finding 2), on real MariaDB and moto.

Peak RSS is measured on a real ``sparsesync execute`` subprocess, by a small parent process that waits for
it and reports ``RUSAGE_CHILDREN`` (so nothing else this test session started is counted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from sparsesync.executor.budget import MemoryBudget, RowWidth, cut_by_bytes
from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.executor.verify import verify_output
from sparsesync.planner.api import make_plan
from tests.conftest import unique_name

WIDE_ROWS, HALF = 3000, 50 * 1024  # 3,000 rows × 100 KB: a LONGBLOB and a LONGTEXT of 50 KB each
FILE_SIZE = 32 * 1024 * 1024
LIMIT_MB = 512


def _env():
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    return env


def peak_rss_mb(args: list[str]) -> tuple[int, str]:
    """Run ``python -m sparsesync ARGS`` and return (peak RSS in MB of that process, its stderr)."""
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'sparsesync'] + sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
        "sys.exit(p.returncode)\n"
    )
    p = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=_env(), timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return int(p.stdout.strip().splitlines()[-1]), p.stderr


@pytest.fixture(scope="module")
def wide_table(mysql_engine):
    """3,000 rows of incompressible 100 KB (LONGBLOB + LONGTEXT); dropped after the module."""
    name = unique_name("wide")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, b LONGBLOB, t LONGTEXT) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:
        for lo in range(0, WIDE_ROWS, 50):  # 5 MB per statement, under max_allowed_packet
            rows = [{"id": i + 1, "b": os.urandom(HALF), "t": os.urandom(HALF // 2).hex()}
                    for i in range(lo, min(WIDE_ROWS, lo + 50))]
            conn.execute(sa.text(f"INSERT INTO {name} VALUES (:id, :b, :t)"), rows)
    with mysql_engine.begin() as conn:
        # Settled statistics: every test plans the same 3 file groups. Unanalyzed, the first plans made
        # just after the inserts had one group, the later ones three, depending on InnoDB's background
        # refresh; three is the more demanding shape (a group finishing while the next one is read).
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()
    yield name
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def _part_sizes(folder) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.glob("*.parquet")}


@pytest.mark.parametrize("reader", ["pymysql", "connectorx"])
def test_wide_rows_stay_under_the_memory_limit_and_parts_roll(mysql_engine, mysql_url, wide_table, tmp_path, reader):
    # Three groups of ~100 MB (see wide_table); the parts roll at 32 MB.
    plan = make_plan(mysql_url, wide_table, rows_per_query=1000, file_size=FILE_SIZE, use_cache=False)
    plan_path = plan.save(tmp_path / "plan.json")
    dest = tmp_path / "out"
    rss, _ = peak_rss_mb(["execute", str(plan_path), "--dest", str(dest), "--source", mysql_url,
                          "--reader", reader, "--memory-limit", str(LIMIT_MB)])
    assert rss < LIMIT_MB, f"peak RSS {rss} MB with {reader}"
    folder = dest / output_folder(plan)
    sizes = _part_sizes(folder)
    assert len(sizes) >= 6, sizes  # ~300 MB of incompressible data at 32 MB per part
    assert max(sizes.values()) <= 1.25 * FILE_SIZE, sizes
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(os.path.basename(e["url"]) for e in manifest["entries"]) == sorted(sizes)
    ledger = json.loads((folder / "_ledger.json").read_text())
    in_ledger = [os.path.basename(p["name"]) for g in ledger["groups"] for p in g["parts"]]
    assert sorted(in_ledger) == sorted(sizes)
    got = duckdb.connect().execute(
        f"SELECT count(*), sum(octet_length(b)), sum(strlen(t)), count(DISTINCT id) FROM read_parquet('{folder}/*.parquet')"
    ).fetchone()
    assert got == (WIDE_ROWS, WIDE_ROWS * HALF, WIDE_ROWS * HALF, WIDE_ROWS)
    assert verify_output(plan, str(dest), source_url=mysql_url, all_columns=True).ok


def test_wide_rows_to_s3_stay_under_the_memory_limit(mysql_url, wide_table, tmp_path, s3_bucket, s3_client):
    plan = make_plan(mysql_url, wide_table, rows_per_query=1000, file_size=FILE_SIZE, use_cache=False)
    assert len(plan.files) == 3  # a group's last upload overlaps reading the next group
    plan_path = plan.save(tmp_path / "plan.json")
    dest = f"s3://{s3_bucket}/exports"
    rss, _ = peak_rss_mb(["execute", str(plan_path), "--dest", dest, "--source", mysql_url, "--reader", "pymysql"])
    assert rss < LIMIT_MB, f"peak RSS {rss} MB to S3"
    listing = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"exports/{output_folder(plan)}/")["Contents"]
    parts = {o["Key"]: o["Size"] for o in listing if o["Key"].endswith(".parquet")}
    assert len(parts) >= 6 and max(parts.values()) <= 1.25 * FILE_SIZE, parts
    assert verify_output(plan, dest, source_url=mysql_url).ok


def test_a_group_that_grew_tenfold_rolls_into_several_parts(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:  # planned: 2,000 rows, keys 0, 10, 20, …
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:i, :v)"),
                     [{"i": 10 * i, "v": os.urandom(60).hex()} for i in range(2000)])
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()
    plan = make_plan(mysql_url, name, rows_per_query=500, file_size=150_000, use_cache=False)
    planned_parts = len(plan.files)
    assert sum(f.est_rows for f in plan.files) == 2000
    with mysql_engine.begin() as conn:  # run time: 20,000 rows in the same key range
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:i, :v)"),
                     [{"i": 10 * i + j, "v": os.urandom(60).hex()} for i in range(2000) for j in range(1, 10)])
    for reader in ("pymysql", "connectorx"):
        dest = tmp_path / reader
        report = execute_plan(plan, str(dest), source_url=mysql_url, reader=reader)
        folder = dest / output_folder(plan)
        sizes = _part_sizes(folder)
        assert report.rows == 20_000 and report.files == len(sizes)
        assert len(sizes) >= 3 * planned_parts, (planned_parts, sizes)
        assert max(sizes.values()) <= 1.25 * plan.strategy.file_size, sizes
        assert verify_output(plan, str(dest), source_url=mysql_url).ok


def test_resume_keeps_rolled_parts_of_done_groups_and_redoes_the_rest(mysql_engine, mysql_url, mysql_table, tmp_path):
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:i, :v)"),
                     [{"i": 5 * i, "v": os.urandom(60).hex()} for i in range(1200)])
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()
    plan = make_plan(mysql_url, name, rows_per_query=300, file_size=25_000, use_cache=False)
    assert len(plan.files) >= 2
    with mysql_engine.begin() as conn:  # every group grows fivefold after planning
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:i, :v)"),
                     [{"i": 5 * i + j, "v": os.urandom(60).hex()} for i in range(1200) for j in range(1, 5)])
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=mysql_url, reader="pymysql", memory_limit_mb=256)
    folder = dest / output_folder(plan)
    ledger = json.loads((folder / "_ledger.json").read_text())
    first = [p["name"] for p in ledger["groups"][0]["parts"]]
    last = ledger["groups"][-1]
    assert len(first) >= 2 and len(last["parts"]) >= 2, "both groups rolled"
    before = {p: (dest / p).stat().st_mtime_ns for p in first}
    # A crash while the last group was being written: its state is running, no manifest yet.
    last["state"] = "running"
    (folder / "_ledger.json").write_text(json.dumps(ledger))
    (folder / "manifest.json").unlink()
    report = execute_plan(plan, str(dest), source_url=mysql_url, reader="pymysql")
    assert report.groups_skipped == len(plan.files) - 1 and report.rows == 6000
    assert {p: (dest / p).stat().st_mtime_ns for p in first} == before  # done group's parts untouched
    assert verify_output(plan, str(dest), source_url=mysql_url).ok
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(os.path.basename(e["url"]) for e in manifest["entries"]) == sorted(_part_sizes(folder))


def test_memory_limit_below_the_reserve_is_refused_in_one_line(tmp_path, sqlite_url):
    from tests.executor.test_run import make_sqlite_table

    make_sqlite_table(sqlite_url, list(range(1, 50)))
    plan = make_plan(sqlite_url, "t", use_cache=False)
    p = subprocess.run([sys.executable, "-m", "sparsesync", "execute", str(plan.save(tmp_path / "p.json")),
                        "--dest", str(tmp_path / "o"), "--source", sqlite_url, "--memory-limit", "100"],
                       capture_output=True, text=True, env=_env())
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--memory-limit 100 MB is too small" in p.stderr and not (tmp_path / "o").exists()


# ---- the pieces -------------------------------------------------------------------------------------------
def test_budget_splits_the_limit_between_workers():
    one, four = MemoryBudget(512, 1), MemoryBudget(512, 4)
    assert one.batch_bytes > four.batch_bytes and one.row_group_bytes > four.row_group_bytes
    assert MemoryBudget(10**6, 1).batch_bytes <= 256 * 1024 * 1024  # never near Arrow's 2 GiB per array


@pytest.mark.parametrize("limit_mb", [256, 512, 1024])
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_s3_uploads_are_reserved_so_data_and_uploads_fit_the_limit(s3_env, tmp_path, limit_mb, workers):
    from sparsesync.errors import UsageError
    from sparsesync.executor.budget import RESERVED_MB, MiB
    from sparsesync.executor.dest import open_sink
    from sparsesync.executor.run import memory_budget

    dest = "s3://bucket-of-the-budget/exports"
    local = memory_budget(limit_mb, workers, str(tmp_path))
    try:
        budget = memory_budget(limit_mb, workers, dest)
    except UsageError as exc:  # refused only where it could not fit, naming a limit that does
        assert limit_mb < 512 and not MemoryBudget(limit_mb, workers, s3=True).fits
        enough = int(exc.hint.split("--memory-limit ")[1].split()[0])
        assert memory_budget(enough, workers, dest).fits
        return
    sink = open_sink(dest, staging=str(tmp_path), upload_threads=budget.upload_threads)
    try:
        assert sink.transfer_config.max_request_concurrency == budget.upload_threads >= 1
        # a worker's finishing group and the group it reads meanwhile may each have a part going up
        assert budget.reserved_bytes >= RESERVED_MB * MiB + sink.memory_bytes(uploads=2 * workers)
        assert budget.reserved_bytes + workers * budget.data_bytes <= limit_mb * MiB
        assert budget.data_bytes < local.data_bytes and budget.batch_bytes <= local.batch_bytes
    finally:
        sink.close()


def test_s3_uploads_stream_the_staged_file_instead_of_holding_parts(s3_env, tmp_path):
    # S3_REQUEST_BYTES counts requests, not chunks: true only while parts go up by file name, whose bodies
    # s3transfer reads from disk as they are sent (a file object or bytes would be held chunk by chunk).
    from s3transfer.upload import UploadFilenameInputManager

    from sparsesync.executor.s3 import S3Sink

    assert not UploadFilenameInputManager.stores_body_in_memory(None, "upload_part")
    assert not UploadFilenameInputManager.stores_body_in_memory(None, "put_object")
    sink = S3Sink("bucket-of-the-budget", "p", staging_dir=tmp_path)
    calls = []

    def upload_file(filename, bucket, key, Config=None):
        calls.append((filename, Config))
        raise RuntimeError("stop here")

    sink.client.upload_file = upload_file
    staged = sink.staging_path("t/part.parquet")
    staged.write_bytes(b"x" * 1000)
    with pytest.raises(RuntimeError):
        sink.commit(staged, "t/part.parquet")
    assert calls == [(str(staged), sink.transfer_config)] and isinstance(calls[0][0], str)
    sink.close()


def test_memory_limit_too_small_for_s3_uploads_is_refused_in_one_line(s3_env, tmp_path, sqlite_url):
    from tests.executor.test_run import make_sqlite_table

    from sparsesync.executor.run import memory_budget

    make_sqlite_table(sqlite_url, list(range(1, 50)))
    plan = make_plan(sqlite_url, "t", use_cache=False)
    p = subprocess.run([sys.executable, "-m", "sparsesync", "execute", str(plan.save(tmp_path / "p.json")),
                        "--dest", "s3://never-contacted/x", "--source", sqlite_url, "--memory-limit", "240"],
                       capture_output=True, text=True, env=_env())
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "--memory-limit 240 MB is too small" in p.stderr and "S3" in p.stderr
    assert memory_budget(240, 1, str(tmp_path)).fits  # a directory destination takes the same limit


def test_rows_are_cut_by_bytes_not_by_count(mysql_url):
    from sparsesync.planner.plan import ColumnSpec

    class P:  # the two things RowWidth reads from a plan
        columns = [ColumnSpec("id", "bigint", "int64", "BIGINT", False), ColumnSpec("b", "longblob", "binary", "VARBYTE")]

        def arrow_schema(self):
            import pyarrow as pa

            return pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("b", pa.binary())])

    rows = [(i, b"x" * (100 if i < 500 else 100_000)) for i in range(1000)]
    asked = []

    def fetch(n):
        asked.append(n)
        out = rows[:n]
        del rows[:n]
        return out

    batches = list(cut_by_bytes(fetch, RowWidth(P()), budget_bytes=1_000_000, max_rows=65536))
    assert sum(len(b) for b in batches) == 1000
    assert all(sum(len(r[1]) for r in b) <= 1_000_000 + 100_000 for b in batches)  # one row past the budget at most
    assert max(asked) <= 1  # a LONGBLOB may hold 16 MB: never fetch more rows than one could fill the budget


def test_connectorx_batches_are_sliced_below_the_byte_cap_before_the_32_bit_cast():
    import pyarrow as pa

    from sparsesync.executor.readers import _byte_slices

    batch = pa.record_batch([pa.array(range(100)), pa.array([b"x" * 1000] * 100, pa.large_binary())], names=["id", "b"])
    pieces = list(_byte_slices(batch, 10_000))
    assert len(pieces) >= 10 and all(p.nbytes <= 12_000 for p in pieces)
    assert pa.Table.from_batches(pieces).column("id").to_pylist() == list(range(100))
    assert list(_byte_slices(batch, 10**9)) == [batch]


def test_config_memory_limit_reaches_the_executor(tmp_path, sqlite_url):
    from tests.executor.test_run import make_sqlite_table

    make_sqlite_table(sqlite_url, list(range(1, 50)))
    plan_path = make_plan(sqlite_url, "t", use_cache=False).save(tmp_path / "p.json")
    cfg = tmp_path / "sparsesync.yaml"
    cfg.write_text("execute: {memory_limit_mb: 150}\n")
    p = subprocess.run([sys.executable, "-m", "sparsesync", "--config", str(cfg), "execute", str(plan_path),
                        "--dest", str(tmp_path / "o"), "--source", sqlite_url], capture_output=True, text=True,
                       env=_env())
    assert p.returncode == 2 and "--memory-limit 150 MB is too small" in p.stderr
    ok = subprocess.run([sys.executable, "-m", "sparsesync", "--config", str(cfg), "execute", str(plan_path),
                         "--dest", str(tmp_path / "o"), "--source", sqlite_url, "--memory-limit", "300"],
                        capture_output=True, text=True, env=_env())
    assert ok.returncode == 0, ok.stderr  # the flag overrides the file
