"""Two ``execute`` of one plan and destination at once: one is refused naming the holder, the other is exact.

The first run is a real process that pauses inside its export (its progress callback waits on stdin)
while holding the lock; the second is the real CLI. Then the first finishes and its output is read back
with DuckDB and compared with the source, row by row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import duckdb
import pytest

from sparsesync.executor.run import output_folder
from sparsesync.planner.api import make_plan
from tests.executor.test_run import MYSQL_DDL, fill_mysql, source_keys, sparse_keys
from tests.executor.test_lock import ROOT

_HOLDER = textwrap.dedent("""
    import sys
    from sparsesync.executor.run import execute_plan
    from sparsesync.planner.plan import load_plan

    def progress(ev):
        if ev.kind == "batch" and not progress.paused:
            progress.paused = True
            print("held", flush=True)
            sys.stdin.readline()  # the test lets us go on

    progress.paused = False
    report = execute_plan(load_plan(sys.argv[1]), sys.argv[2], source_url=sys.argv[3], reader="pymysql",
                          progress=progress)
    print(f"{report.status} {report.rows}", flush=True)
""")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": ROOT}


def manifest_parts(dest: str, plan, s3_client, tmp_path) -> list[str]:
    """Local paths of the manifest's parts (downloaded into ``tmp_path`` first when on S3)."""
    folder = output_folder(plan)
    if not dest.startswith("s3://"):
        with open(os.path.join(dest, folder, "manifest.json")) as fh:
            return [e["url"] for e in json.load(fh)["entries"]]
    bucket, prefix = dest[5:].split("/", 1)
    body = s3_client.get_object(Bucket=bucket, Key=f"{prefix}/{folder}/manifest.json")["Body"].read()
    paths = []
    for i, e in enumerate(json.loads(body)["entries"]):
        local = str(tmp_path / f"dl-{i:05d}.parquet")
        s3_client.download_file(bucket, e["url"].removeprefix(f"s3://{bucket}/"), local)
        paths.append(local)
    return paths


@pytest.mark.mysql
@pytest.mark.parametrize("where", ["local", "s3"])
def test_second_execute_of_the_same_plan_is_refused_and_the_first_is_exact(
    where, mysql_engine, mysql_url, mysql_table, tmp_path, request
):
    name = mysql_table(MYSQL_DDL)
    keys = sparse_keys(3000, seed=21)
    fill_mysql(mysql_engine, name, keys)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {name}")  # real row sizes: several file groups
    plan = make_plan(mysql_url, name, rows_per_query=300, file_size=20_000, use_cache=False)
    assert len(plan.files) > 1
    plan_file = plan.save(tmp_path / "plans" / plan.default_filename())
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        s3_client = request.getfixturevalue("s3_client")
        dest = f"s3://{bucket}/exports"
    else:
        s3_client, dest = None, str(tmp_path / "out")

    first = subprocess.Popen([sys.executable, "-c", _HOLDER, str(plan_file), dest, mysql_url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        assert first.stdout.readline().strip() == "held"
        second = subprocess.run(
            [sys.executable, "-m", "sparsesync", "execute", str(plan_file), "--dest", dest, "--source", mysql_url],
            capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120,
        )
        assert second.returncode == 8, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith("sparsesync: error: another run holds")
        assert f"pid {first.pid} on host" in lines[0] and f"execute plan {plan.plan_id}" in lines[0]
        assert "Traceback" not in second.stderr and second.stdout == ""

        out, err = first.communicate("\n", timeout=120)
        assert first.returncode == 0, err
        assert out.strip().splitlines()[-1] == f"done {len(keys)}"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    listing = "[" + ", ".join(f"'{p}'" for p in manifest_parts(dest, plan, s3_client, tmp_path)) + "]"
    got = [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet({listing}) ORDER BY id").fetchall()]
    assert got == source_keys(mysql_engine, name)
    # The lock is gone with its run: the same command now finds a finished run.
    again = subprocess.run(
        [sys.executable, "-m", "sparsesync", "execute", str(plan_file), "--dest", dest, "--source", mysql_url],
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120,
    )
    assert again.returncode == 0, again.stderr
