"""Array jobs end to end: ``execute --shard 1/3, 2/3, 3/3`` as concurrent CLI processes on MariaDB, one
SIGKILLed mid-run, ``finalize`` refused, the killed shard re-run (it resumes), then ``finalize``.

Into a local directory and into S3 (moto on loopback). The output must hold every source row exactly once
(DuckDB read-back of keys and values), the manifest exactly the parts, and nothing stray (no staging file,
no multipart upload, no orphan part).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from sparsesync.executor.run import output_folder
from sparsesync.executor.shard import Shard, shard_groups
from sparsesync.executor.sink import STAGING_MARK
from sparsesync.planner.api import make_plan
from tests.executor.test_run import MYSQL_DDL, fill_mysql, sparse_keys

CLI = [sys.executable, "-c", "from sparsesync.cli import main; main()"]
VICTIM = 2
SHARD_ARTIFACTS = {f"_ledger.shard-{i}-of-3.json" for i in (1, 2, 3)} | {f"_report.shard-{i}-of-3.json" for i in (1, 2, 3)}
FINAL_ARTIFACTS = {"manifest.json", "copy.sql", "create_table.sql", "_report.json"}


def _env():
    env = dict(os.environ)
    env.pop("SPARSESYNC_SOURCE_URL", None)
    return env


class LocalDest:
    def __init__(self, tmp_path, plan):
        self.url = str(tmp_path / "out")
        self.folder = tmp_path / "out" / output_folder(plan)

    def names(self) -> set[str]:
        return {p.name for p in self.folder.iterdir()} if self.folder.is_dir() else set()

    def get(self, name: str) -> bytes | None:
        p = self.folder / name
        return p.read_bytes() if p.is_file() else None

    def part_files(self, manifest, tmp_path) -> list[str]:
        for e in manifest["entries"]:
            assert e["meta"]["content_length"] == os.path.getsize(e["url"])
        return [e["url"] for e in manifest["entries"]]

    def uploads_in_progress(self) -> list:
        return []

    def locks(self) -> list[str]:
        return [p.name for p in self.folder.parent.iterdir() if p.name.endswith(".lock")]


class S3Dest:
    def __init__(self, client, bucket, plan):
        self.client, self.bucket = client, bucket
        self.url = f"s3://{bucket}/exports/nightly"
        self.prefix = f"exports/nightly/{output_folder(plan)}/"

    def names(self) -> set[str]:
        keys = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys.update(o["Key"] for o in page.get("Contents", []))
        assert all(k.startswith(self.prefix) or k.endswith(".lock") for k in keys), keys
        return {k.removeprefix(self.prefix) for k in keys if k.startswith(self.prefix)}

    def get(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def part_files(self, manifest, tmp_path) -> list[str]:
        local = []
        for i, e in enumerate(manifest["entries"]):
            key = e["url"].removeprefix(f"s3://{self.bucket}/")
            assert key.startswith(self.prefix)
            assert e["meta"]["content_length"] == self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
            path = tmp_path / f"dl-{i:05d}.parquet"
            self.client.download_file(self.bucket, key, str(path))
            local.append(str(path))
        return local

    def uploads_in_progress(self) -> list:
        return self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])

    def locks(self) -> list[str]:
        resp = self.client.list_objects_v2(Bucket=self.bucket)
        return [o["Key"] for o in resp.get("Contents", []) if o["Key"].endswith(".lock")]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request, tmp_path):
    if request.param == "local":
        return lambda plan: LocalDest(tmp_path, plan)
    client, bucket = request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket")
    return lambda plan: S3Dest(client, bucket, plan)


def _done_groups(raw: bytes | None) -> int:
    try:
        return sum(1 for g in json.loads(raw)["groups"] if g["state"] == "done") if raw else 0
    except ValueError:
        return 0


def test_three_shards_one_killed_and_rerun_then_finalize(mysql_engine, mysql_url, mysql_table, tmp_path, where):
    name = mysql_table(MYSQL_DDL, prefix="shard")
    keys = sparse_keys(9000, seed=10)
    fill_mysql(mysql_engine, name, keys)
    with mysql_engine.begin() as conn:  # fresh statistics: bytes/row, hence the grouping, is stable
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()
    plan = make_plan(mysql_url, name, rows_per_query=100, file_size=4_000)
    victim_groups = shard_groups(plan, Shard(VICTIM, 3))
    assert len(victim_groups) >= 10, "many small groups per shard, so the kill lands between and inside groups"
    plan_path = plan.save(tmp_path / "plan.json")
    dest = where(plan)
    staging = tmp_path / "staging"
    staging.mkdir()
    with mysql_engine.connect() as conn:
        want = conn.exec_driver_sql(f"SELECT id, v, CAST(n AS CHAR), b FROM {name} ORDER BY id").all()
    want = [(r[0], r[1], r[2], bytes(r[3])) for r in want]

    def shard_cmd(i: int) -> list[str]:
        return CLI + ["execute", str(plan_path), "--dest", dest.url, "--source", mysql_url, "--reader", "pymysql",
                      "--shard", f"{i}/3", "--staging", str(staging)]

    def finalize() -> subprocess.CompletedProcess:
        return subprocess.run(CLI + ["finalize", str(plan_path), "--dest", dest.url, "--source", mysql_url],
                              env=_env(), capture_output=True, text=True, timeout=300)

    procs = {i: subprocess.Popen(shard_cmd(i), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (1, 2, 3)}
    victim_ledger = f"_ledger.shard-{VICTIM}-of-3.json"
    deadline = time.monotonic() + 240
    half = len(victim_groups) // 2
    while _done_groups(dest.get(victim_ledger)) < half:  # kill halfway through its groups: mid-run, not at start
        assert procs[VICTIM].poll() is None, "the victim shard ended before it could be killed"
        assert time.monotonic() < deadline, "the victim shard wrote no group within 240 s"
        time.sleep(0.01)
    procs[VICTIM].send_signal(signal.SIGKILL)
    procs[VICTIM].wait()
    done_at_kill = _done_groups(dest.get(victim_ledger))
    assert done_at_kill < len(victim_groups), "the kill landed after the victim's last group"
    for i in (1, 3):
        out, err = procs[i].communicate(timeout=300)
        assert procs[i].returncode == 0, err
        assert f"shard {i}/3:" in out

    refused = finalize()  # the killed shard is missing: one line naming its groups, nothing written
    print(refused.stderr.strip())
    assert refused.returncode == 11, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"shard {VICTIM}/3 (" in refused.stderr and "shard 1/3" not in refused.stderr and "shard 3/3" not in refused.stderr
    assert f"#{victim_groups[done_at_kill]}" in refused.stderr  # a shard does its groups in order: the first not done
    assert not (dest.names() & FINAL_ARTIFACTS)

    rerun = subprocess.run(shard_cmd(VICTIM), env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(dest.get(f"_report.shard-{VICTIM}-of-3.json"))
    assert report["groups_skipped"] >= done_at_kill >= 1, "the re-run resumed: groups done before the kill were kept"
    assert sorted(report["shard"]["done_now"] + report["shard"]["skipped"]) == victim_groups

    final = finalize()
    assert final.returncode == 0, final.stderr
    assert f"{len(keys):,} rows" in final.stdout and "COUNT(*) per range matched the source" in final.stdout

    manifest = json.loads(dest.get("manifest.json"))
    files = dest.part_files(manifest, tmp_path)
    listing = "[" + ", ".join(f"'{p}'" for p in files) + "]"
    got = duckdb.sql(f"SELECT id, v, CAST(n AS VARCHAR), b FROM read_parquet({listing}) ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2], bytes(r[3])) for r in got] == want  # every row exactly once, values equal
    parts = {e["url"].rsplit("/", 1)[1] for e in manifest["entries"]}
    assert dest.names() == parts | SHARD_ARTIFACTS | FINAL_ARTIFACTS  # the manifest lists exactly the parts
    assert dest.uploads_in_progress() == []
    assert not [p for p in staging.rglob("*") if STAGING_MARK in p.name]
    assert dest.locks() == []  # every lock released, the killed shard's taken over by its re-run and released
    print(f"victim shard {VICTIM}/3: {len(victim_groups)} groups, {done_at_kill} done when killed; {len(plan.files)} in all")
