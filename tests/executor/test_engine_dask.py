"""The Dask engine on a real LocalCluster of 2 worker processes, real MariaDB and the loopback S3 server.

One cluster serves the whole module (starting one costs seconds). Its workers get their credentials the
way production workers do: from their own environment (the nanny's ``env``), never from the task graph.
The source is read as a MariaDB user with a password, so the secrets test has a password to look for.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from sparsesync.executor.run import execute_plan, output_folder
from sparsesync.executor.s3 import STAGING_PREFIX
from sparsesync.executor.sink import STAGING_MARK
from sparsesync.planner.api import make_plan
from sparsesync.source import PASSWORD_ENV
from tests.conftest import unique_name
from tests.executor.test_run import ARTIFACTS, MYSQL_DDL, fill_mysql, sparse_keys

distributed = pytest.importorskip("distributed")
from sparsesync.executor.engine_dask import DaskOptions  # noqa: E402

pytestmark = [pytest.mark.mysql, pytest.mark.s3]

AWS_SECRET = f"dask10-aws-secret-{uuid.uuid4().hex}"
PREFIX = "exports/dask"


# ---- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secret_user(mysql_engine):
    """A MariaDB user with a password and SELECT on the test database: ``(user, password)``."""
    user, password = f"d10_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    database = mysql_engine.url.database  # SPARSESYNC_TEST_MYSQL_URL's database, not always `test`
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{password}'")
        conn.exec_driver_sql(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%%'")
    yield user, password
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")


@pytest.fixture(scope="module")
def user_url(mysql_url, secret_user) -> str:
    """The test server's URL as the password user (password included: what a user would pass to --source)."""
    user, password = secret_user
    return sa.engine.make_url(mysql_url).set(username=user, password=password).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def worker_env(s3_server, secret_user, tmp_path_factory) -> dict:
    """The environment a deployed worker would have: AWS settings for moto and the source password."""
    home = tmp_path_factory.mktemp("aws")
    return {
        "AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        PASSWORD_ENV: secret_user[1],
    }


@pytest.fixture(scope="module")
def dask_client(worker_env):
    """A LocalCluster of 2 worker processes (1 thread each) and a client on it, for the whole module."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR, env=worker_env)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def s3_dask_env(s3_env, monkeypatch):
    """The driver's AWS settings: moto, with this module's distinctive secret."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    return s3_env


@pytest.fixture(scope="module")
def shapes(mysql_engine, mysql_url):
    """Fixture tables and their plans: {shape: (table, plan, keys)}; dropped at the end of the module."""
    made = {}
    specs = {
        "sparse": (sparse_keys(3000, seed=21), 250, 8_000),  # dense run, sparse stretch, far outliers
        "dense-one-file": (list(range(1, 1501)), 500, 10**9),  # several ranges, one file group
        "empty": ([], 1000, 10**9),
    }
    for shape, (keys, rpq, fsize) in specs.items():
        name = unique_name("d10")
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(MYSQL_DDL.format(name=name))
        if keys:
            fill_mysql(mysql_engine, name, keys)
        _analyze(mysql_engine, name)
        plan = make_plan(mysql_url, name, rows_per_query=rpq, file_size=fsize, use_cache=False)
        made[shape] = (name, plan, keys)
    yield made
    with mysql_engine.begin() as conn:
        for name, _, _ in made.values():
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def _analyze(engine, name: str) -> None:
    """Fresh table statistics, so the planner's bytes-per-row estimate (hence the file groups) is real."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").fetchall()


# ---- helpers --------------------------------------------------------------------------------------------------
def _manifest_parts(folder: Path) -> list[tuple[str, int]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return [(Path(e["url"]).name, pq.read_metadata(e["url"]).num_rows) for e in manifest["entries"]]


def _rows(folder: Path, key: str) -> list[tuple]:
    manifest = json.loads((folder / "manifest.json").read_text())
    paths = [e["url"] for e in manifest["entries"]]
    if not paths:
        return []
    listing = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    return duckdb.sql(f'SELECT * FROM read_parquet({listing}) ORDER BY "{key}"').fetchall()


def _schema(folder: Path):
    manifest = json.loads((folder / "manifest.json").read_text())
    return [pq.read_schema(e["url"]).remove_metadata() for e in manifest["entries"]]


def _s3_keys(s3_client, bucket: str) -> set[str]:
    keys = set()
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def _s3_keys_read_back(s3_client, bucket: str, plan, tmp_path: Path) -> tuple[list[int], dict]:
    folder_key = f"{PREFIX}/{output_folder(plan)}"
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=f"{folder_key}/manifest.json")["Body"].read())
    local = []
    for i, e in enumerate(manifest["entries"]):
        path = tmp_path / f"dl-{uuid.uuid4().hex[:6]}-{i}.parquet"
        s3_client.download_file(bucket, e["url"].removeprefix(f"s3://{bucket}/"), str(path))
        local.append(str(path))
    if not local:
        return [], manifest
    listing = "[" + ", ".join(f"'{p}'" for p in local) + "]"
    keys = [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet({listing}) ORDER BY id").fetchall()]
    return keys, manifest


# ---- 1. same output as the local engine -----------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["sparse", "dense-one-file", "empty"])
def test_dask_output_equals_local(shape, shapes, user_url, dask_client, tmp_path):
    name, plan, keys = shapes[shape]
    assert len(plan.files) > 2 or shape != "sparse"
    local = execute_plan(plan, str(tmp_path / "local"), source_url=user_url, workers=2)
    dask = execute_plan(plan, str(tmp_path / "dask"), source_url=user_url, dask=DaskOptions(client=dask_client))
    assert local.engine == "local" and dask.engine == "dask" and dask.scheduler.startswith("LocalCluster(2")
    if shape != "empty":  # the cluster's 2 worker threads read the groups, not --workers (issue 17, finding 8)
        summary = "\n".join(dask.summary_lines())
        assert dask.workers == 2 and "2 worker thread(s)" in summary and "workers 1" not in summary, summary
    assert dask.rows == local.rows == len(keys) and dask.status == "done" and dask.verified == "counts"
    lf, df = tmp_path / "local" / output_folder(plan), tmp_path / "dask" / output_folder(plan)
    assert _manifest_parts(df) == _manifest_parts(lf)  # same part names, same rows each, same order
    assert _rows(df, "id") == _rows(lf, "id")
    assert [r[0] for r in _rows(df, "id")] == sorted(keys)
    assert _schema(df) == _schema(lf)
    assert {p.name for p in df.iterdir()} == {p for p, _ in _manifest_parts(df)} | ARTIFACTS
    saved = json.loads((df / "_report.json").read_text())
    assert saved["engine"] == "dask" and saved["scheduler"].startswith("LocalCluster")


def test_dask_to_s3_and_resume_is_noop(shapes, user_url, dask_client, s3_dask_env, s3_bucket, s3_client, tmp_path):
    name, plan, keys = shapes["sparse"]
    dest = f"s3://{s3_bucket}/{PREFIX}"
    report = execute_plan(plan, dest, source_url=user_url, dask=DaskOptions(client=dask_client))
    got, manifest = _s3_keys_read_back(s3_client, s3_bucket, plan, tmp_path)
    assert got == sorted(keys) and report.files == len(manifest["entries"]) and len(plan.files) > 2
    folder_key = f"{PREFIX}/{output_folder(plan)}"
    parts = {e["url"].removeprefix(f"s3://{s3_bucket}/") for e in manifest["entries"]}
    assert _s3_keys(s3_client, s3_bucket) == parts | {f"{folder_key}/{a}" for a in ARTIFACTS}
    again = execute_plan(plan, dest, source_url=user_url, dask=DaskOptions(client=dask_client))
    assert again.status == "already-complete"


def test_killed_driver_resumes_from_ledger(shapes, user_url, dask_client, tmp_path):
    """Groups the ledger has as done are not redone; a group left `running` by a dead driver is redone."""
    name, plan, keys = shapes["sparse"]
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=user_url, dask=DaskOptions(client=dask_client))
    folder = dest / output_folder(plan)
    # What a driver killed mid-run leaves: a manifest-less folder, the last group `running`, its part gone.
    (folder / "manifest.json").unlink()
    ledger = json.loads((folder / "_ledger.json").read_text())
    last = ledger["groups"][-1]
    for p in last["parts"]:
        (dest / p["name"]).unlink()
    last.update(state="running", parts=[], rows=0, bytes=0, range_rows={})
    (folder / "_ledger.json").write_text(json.dumps(ledger))
    report = execute_plan(plan, str(dest), source_url=user_url, dask=DaskOptions(client=dask_client))
    assert report.groups_skipped == len(plan.files) - 1 and report.groups_redone == 1
    assert [r[0] for r in _rows(folder, "id")] == sorted(keys)


def test_driver_killed_after_last_group_finishes_without_a_cluster(shapes, user_url, dask_client, tmp_path):
    """Every group done but no manifest (driver killed just before it): the re-run only writes the load files,
    without reaching any cluster (the scheduler given here does not exist)."""
    name, plan, keys = shapes["sparse"]
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=user_url, dask=DaskOptions(client=dask_client))
    folder = dest / output_folder(plan)
    (folder / "manifest.json").unlink()
    report = execute_plan(plan, str(dest), source_url=user_url,
                          dask=DaskOptions(scheduler="tcp://127.0.0.1:9", shared_fs=True))
    assert report.status == "done" and report.groups_skipped == len(plan.files)
    assert [r[0] for r in _rows(folder, "id")] == sorted(keys)


# ---- 2. a worker SIGKILLed while it writes a part ------------------------------------------------------------
def _slow_writes(delay_s: float) -> int:
    """Run on every worker: make each batch written take ``delay_s`` longer, so a kill lands mid-part."""
    from sparsesync.executor import writer

    if not getattr(writer.PartWriter.write, "_slowed", False):
        original = writer.PartWriter.write

        def write(self, batch):
            time.sleep(delay_s)
            return original(self, batch)

        write._slowed = True
        writer.PartWriter.write = write
    return os.getpid()


@pytest.fixture(scope="module")
def kill_table(mysql_engine, mysql_url):
    name = unique_name("d10k")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(MYSQL_DDL.format(name=name))
    keys = sparse_keys(6000, seed=5)
    fill_mysql(mysql_engine, name, keys)
    _analyze(mysql_engine, name)
    plan = make_plan(mysql_url, name, rows_per_query=500, file_size=10_000, use_cache=False)
    yield plan, keys
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def _both_workers_up(client, timeout: float = 180) -> None:
    """Wait until the cluster has its 2 workers again after a kill.

    The nanny restarts a killed worker once; if that start fails (a worker that cannot come up on a loaded
    machine) the cluster drops that worker for good, so waiting longer cannot help. Then have the cluster
    start the missing one afresh (``scale`` to the 2 it was made with), and wait once more.
    """
    try:
        client.wait_for_workers(2, timeout=timeout)
        return
    except TimeoutError:
        pass
    client.cluster.scale(2)
    client.wait_for_workers(2, timeout=timeout)


def _staged_by(staging: Path, pids: set[int]) -> int | None:
    """The pid of a worker with a part staged (being written) right now, if any."""
    for root in staging.glob(f"{STAGING_PREFIX}*"):
        pid = int(root.name.removeprefix(STAGING_PREFIX).split("-", 1)[0])
        if pid in pids and any(root.rglob(f"*{STAGING_MARK}")):
            return pid
    return None


@pytest.mark.parametrize("trial", range(5))
def test_worker_sigkilled_mid_part_exactly_once(trial, kill_table, user_url, dask_client, s3_dask_env, s3_bucket,
                                                s3_client, tmp_path):
    plan, keys = kill_table
    assert len(plan.files) >= 6
    _both_workers_up(dask_client)  # the one killed by the trial before
    pids = set(dask_client.run(_slow_writes, 0.03).values())
    staging = tmp_path / "staging"
    staging.mkdir()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = execute_plan(plan, f"s3://{s3_bucket}/{PREFIX}", source_url=user_url, batch_rows=40,
                                             staging=str(staging), dask=DaskOptions(client=dask_client))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    driver = threading.Thread(target=run)
    driver.start()
    victim = None
    deadline = time.monotonic() + 60
    # Let the first groups finish on some trials so the kill lands at different points of the run.
    skip = trial % 3
    while victim is None and driver.is_alive() and time.monotonic() < deadline:
        pid = _staged_by(staging, pids)
        if pid is not None and skip == 0:
            victim = pid
        elif pid is not None:
            skip -= 1
            time.sleep(0.25)
        time.sleep(0.005)
    assert victim is not None, "no worker was caught writing a part"
    os.kill(victim, signal.SIGKILL)
    driver.join(180)
    assert not driver.is_alive()
    if "error" in outcome:  # the run may stop (a task that died too often): a re-run must finish it
        outcome["report"] = execute_plan(plan, f"s3://{s3_bucket}/{PREFIX}", source_url=user_url,
                                         staging=str(staging), dask=DaskOptions(client=dask_client))
    report = outcome["report"]
    got, manifest = _s3_keys_read_back(s3_client, s3_bucket, plan, tmp_path)
    assert got == sorted(keys)  # every row exactly once
    assert report.rows == len(keys) and report.verified == "counts"
    folder_key = f"{PREFIX}/{output_folder(plan)}"
    parts = {e["url"].removeprefix(f"s3://{s3_bucket}/") for e in manifest["entries"]}
    assert _s3_keys(s3_client, s3_bucket) == parts | {f"{folder_key}/{a}" for a in ARTIFACTS}
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert not list(staging.rglob(f"*{STAGING_MARK}"))  # the dead worker's staged part was removed
    assert victim not in set(dask_client.run(os.getpid).values())  # the kill took: a new process replaced it


# ---- 3. secrets stay out of the task graph --------------------------------------------------------------------
def test_no_secret_in_task_graph(shapes, secret_user, user_url, dask_client, s3_dask_env, s3_bucket, monkeypatch):
    from distributed.protocol import serialize
    from distributed.protocol.pickle import dumps

    password = secret_user[1]
    name, plan, keys = shapes["sparse"]
    submitted: list[bytes] = []
    graph: list[bytes] = []
    real_submit = dask_client.submit

    def spy(func, *args, **kwargs):
        submitted.append(dumps((func, args, kwargs)))
        submitted.append(pickle.dumps(serialize((args, kwargs), serializers=("pickle",))))
        return real_submit(func, *args, **kwargs)

    def dump_graph(dask_scheduler=None):
        return [pickle.dumps(ts.run_spec) for key, ts in dask_scheduler.tasks.items() if "sparsesync" in str(key)]

    def on_progress(ev) -> None:
        if ev.kind == "group" and not graph:  # mid-run: the scheduler still holds the tasks in flight
            graph.extend(dask_client.run_on_scheduler(dump_graph))

    monkeypatch.setattr(dask_client, "submit", spy)
    report = execute_plan(plan, f"s3://{s3_bucket}/{PREFIX}", source_url=user_url, progress=on_progress,
                          dask=DaskOptions(client=dask_client))
    assert report.rows == len(keys)  # the workers did connect: with the password from their environment
    assert len(submitted) == 2 * (len(plan.files) + 1) and graph
    for blob in submitted + graph:
        assert password.encode() not in blob and AWS_SECRET.encode() not in blob
    assert any(secret_user[0].encode() in b for b in submitted)  # the spy sees the URL (minus password) the tasks carry
    text = repr(dask_client.scheduler_info(n_workers=-1))
    assert password not in text and AWS_SECRET not in text


# ---- refusals and the command line ------------------------------------------------------------------------------
def test_local_dir_with_remote_scheduler_is_refused(shapes, tmp_path):
    _, plan, _ = shapes["sparse"]
    plan_file = plan.save(tmp_path / plan.default_filename())
    proc = subprocess.run(
        [sys.executable, "-m", "sparsesync", "execute", str(plan_file), "--dest", str(tmp_path / "out"),
         "--engine", "dask", "--scheduler", "tcp://user:pw@127.0.0.1:1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "local directory" in lines[0] and "--shared-fs" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_dask_options_refused_with_local_engine(shapes, tmp_path):
    _, plan, _ = shapes["sparse"]
    plan_file = plan.save(tmp_path / plan.default_filename())
    proc = subprocess.run(
        [sys.executable, "-m", "sparsesync", "execute", str(plan_file), "--dest", str(tmp_path / "out"),
         "--shared-fs"], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "--engine dask" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_engine_dask_local_cluster(shapes, user_url, secret_user, tmp_path):
    """The whole command: `--engine dask --workers 2` starts its own LocalCluster; the report names it."""
    _, plan, keys = shapes["sparse"]
    plan_file = plan.save(tmp_path / plan.default_filename())
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "sparsesync", "execute", str(plan_file), "--dest", str(tmp_path / "out"),
         "--source", user_url, "--engine", "dask", "--workers", "2"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "engine dask on LocalCluster(2 workers)" in proc.stdout
    assert secret_user[1] not in proc.stdout + proc.stderr
    folder = tmp_path / "out" / output_folder(plan)
    assert [r[0] for r in _rows(folder, "id")] == sorted(keys)
    assert json.loads((folder / "_report.json").read_text())["engine"] == "dask"


# ---- sync on the cluster ----------------------------------------------------------------------------------------
def test_sync_table_runs_its_groups_on_dask(mysql_engine, mysql_url, user_url, dask_client, tmp_path):
    """``sync`` with the Dask engine: the first image and a changed-span re-export equal the source."""
    from sparsesync.sync.table import SyncOptions, sync_table
    from tests.sync.conftest import image_rows, source_rows

    name = unique_name("d10s")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(MYSQL_DDL.format(name=name))
    try:
        fill_mysql(mysql_engine, name, list(range(1, 2001)))
        _analyze(mysql_engine, name)
        opts = SyncOptions(rows_per_query=200, file_size_mb=0.004, reader="pymysql",
                           dask=DaskOptions(client=dask_client))
        first = sync_table(user_url, name, tmp_path, opts, raise_errors=True)
        assert (first.status, first.rows_read) == ("ok", 2000)
        assert image_rows(tmp_path, name, "id, v") == source_rows(mysql_engine, name, "id, v")
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {name} SET v = 'changed' WHERE id IN (7, 1900)")
        again = sync_table(user_url, name, tmp_path, opts, raise_errors=True)
        assert again.kind == "changed" and again.rows_read < 2000
        assert image_rows(tmp_path, name, "id, v") == source_rows(mysql_engine, name, "id, v")
        reports = list(tmp_path.glob(f"{name}/*/_report.json"))
        assert reports and all(json.loads(p.read_text())["engine"] == "dask" for p in reports)
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def test_sync_many_on_dask_holds_the_connection_budget(mysql_engine, mysql_url, user_url, secret_user, dask_client,
                                                       tmp_path):
    """``sync --engine dask --connections N``: the driver's connections and the tasks' together stay ≤ N
    (sampled from the server's processlist), and a budget below one table's need is refused in one line."""
    from sparsesync.errors import UsageError
    from sparsesync.sync.many import sync_many
    from sparsesync.sync.table import SyncOptions
    from tests.sync.dbkit import ProcesslistSampler
    from tests.sync.conftest import image_rows, source_rows

    names = [unique_name("d10m") for _ in range(2)]
    with mysql_engine.begin() as conn:
        for name in names:
            conn.exec_driver_sql(MYSQL_DDL.format(name=name))
    try:
        for i, name in enumerate(names):
            fill_mysql(mysql_engine, name, list(range(1, 1501 + 500 * i)))
            _analyze(mysql_engine, name)
        opts = SyncOptions(rows_per_query=200, file_size_mb=0.004, reader="pymysql", workers=1,
                           dask=DaskOptions(client=dask_client, connections=1))
        with pytest.raises(UsageError, match="needs 2 source connections at once"):
            sync_many(user_url, names, str(tmp_path), opts, connections=1)
        with ProcesslistSampler(mysql_url, secret_user[0]) as sampler:
            summary = sync_many(user_url, names, str(tmp_path), opts, connections=2)
        assert [t["status"] for t in summary.tables] == ["ok", "ok"]
        assert sampler.samples and max(sampler.samples) <= 2, sampler.at_peak
        for name in names:
            assert image_rows(tmp_path, name, "id, v") == source_rows(mysql_engine, name, "id, v")
    finally:
        with mysql_engine.begin() as conn:
            for name in names:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
