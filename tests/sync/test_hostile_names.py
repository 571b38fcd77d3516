"""Tables whose names are not safe folder names — ``../x``, ``a/b``, ``we%ird``, a space, unicode (short and a
64-character one), a dot — go through ``sync``, ``load --into duckdb``, ``gc`` and ``plan``/``execute``/``run``
(local and S3): every file lands under the table's encoded folder inside the destination, ``_state.json``
names that folder, and nothing is refused or reported about lock paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from sparsesync.cli import _register, app
from sparsesync.naming import table_folder

from .dbkit import database, s3_bucket, s3_client, s3_env, s3_server  # noqa: F401 - fixtures

_register()
pytestmark = pytest.mark.mysql

LONG = "é" * 64  # MariaDB's longest table name; its plain %-encoding would be 385 characters
NAMES = ["../x", "a/b", "we%ird", "a b", "名前", LONG, "a.b"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


def make_tables(db, names=NAMES, rows: int = 120) -> None:
    for name in names:
        q = name.replace("%", "%%")  # the driver formats the statement
        db.execute(f"CREATE TABLE `{q}` (id BIGINT PRIMARY KEY, v VARCHAR(20))",
                   f"INSERT INTO `{q}` (id, v) SELECT seq, CONCAT('v', seq) FROM seq_1_to_{rows}")


def source(db, name: str) -> list[tuple]:
    with db.admin.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT id, v FROM `{name.replace('%', '%%')}` ORDER BY id")]


def warehouse(wh: Path, name: str) -> list[tuple]:
    ident = '"' + name.replace('"', '""') + '"'
    con = duckdb.connect(str(wh))
    try:
        return con.execute(f"SELECT id, v FROM {ident} ORDER BY id").fetchall()
    finally:
        con.close()


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_folder_names_fit_a_filesystem_segment():
    for name in NAMES + ["名" * 64, "\U0001F600" * 64, "a b" * 21 + "c"]:
        folder = table_folder(name)
        assert "/" not in folder and folder not in (".", "..") and len(folder.encode()) <= 200
        assert len(f"{folder}-20261204T184556Z-69a18a.json") < 255  # the plan file's name
    assert table_folder(LONG) != table_folder("é" * 63 + "e") and table_folder(LONG).startswith("%%C3%A9")


def test_sync_load_gc_of_hostile_names_locally(database, tmp_path):
    make_tables(database)
    dest, wh = tmp_path / "lake", tmp_path / "wh.duckdb"
    res = invoke("sync", database.url, *NAMES, "--dest", dest, "--reader", "pymysql")
    assert res.exit_code == 0, res.output
    assert "lock" not in res.output.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake"]  # nothing beside the destination
    assert sorted(p.name for p in dest.iterdir()) == sorted([table_folder(n) for n in NAMES] + ["_sync_report.json"])
    for name in NAMES:
        state = json.loads((dest / table_folder(name) / "_state.json").read_text())
        assert state["table"] == name and state["folder"] == table_folder(name)
        manifest = json.loads((dest / table_folder(name) / "current.manifest.json").read_text())
        assert all(e["url"].startswith(str(dest / table_folder(name)) + os.sep) for e in manifest["entries"])
        res = invoke("load", dest, name, "--into", f"duckdb:///{wh}")
        assert res.exit_code == 0, res.output
        assert warehouse(wh, name) == source(database, name)

    # A second run replaces a part of two of them; gc (every table, found by the names their states record)
    # removes the replaced parts, and the warehouse still follows.
    changed = ["../x", LONG]
    first = {n: next(p["path"] for p in json.loads((dest / table_folder(n) / "_state.json").read_text())["parts"]
                     if p["path"]) for n in changed}
    for name in changed:
        database.execute(f"UPDATE `{name}` SET v = 'changed' WHERE id = 7")
    assert invoke("sync", database.url, *changed, "--dest", dest, "--reader", "pymysql").exit_code == 0
    for name in changed:
        assert invoke("load", dest, name, "--into", f"duckdb:///{wh}").exit_code == 0
        assert warehouse(wh, name) == source(database, name)
    res = invoke("gc", dest, "--keep", "0s", "--delete")
    assert res.exit_code == 0, res.output
    for name in NAMES:
        assert f"\n{name}: removed " in "\n" + res.output
    for name in changed:
        assert f"  removed {table_folder(name)}/{first[name]}\n" in res.output
        assert not (dest / table_folder(name) / first[name]).exists()
    assert "lock" not in res.output.replace("stale lock(s)", "").lower()
    for name in NAMES:
        res = invoke("gc", dest, name, "--keep", "1d")  # one table by its name
        assert res.exit_code == 0 and res.output.startswith(f"{name}: would remove 0 part(s)"), res.output
        res = invoke("load", dest, name, "--into", f"duckdb:///{wh}")
        assert res.exit_code == 0 and "up to date" in res.output and warehouse(wh, name) == source(database, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake", "wh.duckdb"]


@pytest.mark.s3
def test_sync_load_gc_of_hostile_names_on_s3(database, s3_bucket, s3_client, tmp_path):
    names = ["../x", "we%ird", "a b", "名前"]
    make_tables(database, names)
    dest, wh = f"s3://{s3_bucket}/lake", tmp_path / "wh.duckdb"
    res = invoke("sync", database.url, *names, "--dest", dest, "--reader", "pymysql")
    assert res.exit_code == 0, res.output
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    folders = {table_folder(n) for n in names}
    assert {k.split("/")[1] for k in keys if k.count("/") >= 2} == folders
    assert all(k.startswith("lake/") for k in keys) and not any("/../" in k or "/a/b/" in k for k in keys)
    for name in names:
        state = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=f"lake/{table_folder(name)}/_state.json")["Body"].read())
        assert state["folder"] == table_folder(name)
        res = invoke("load", dest, name, "--into", f"duckdb:///{wh}")
        assert res.exit_code == 0, res.output
        assert warehouse(wh, name) == source(database, name)
    res = invoke("gc", dest, "--keep", "0s", "--delete")
    assert res.exit_code == 0 and all(f"{n}: removed 0 part(s)" in res.output for n in names), res.output


def test_plan_execute_and_run_of_hostile_names(database, tmp_path, monkeypatch):
    names = ["../x", "a b", LONG]
    make_tables(database, names, rows=50)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSESYNC_SOURCE_URL", database.url)  # execute reads the password from here, never the plan
    res = invoke("plan", database.url, "../x", "--no-cache")
    assert res.exit_code == 0, res.output
    [plan] = list((tmp_path / "plans").iterdir())
    assert plan.name.startswith(table_folder("../x") + "-")
    res = invoke("execute", plan, "--dest", tmp_path / "out")
    assert res.exit_code == 0, res.output
    plan_id = json.loads(plan.read_text())["plan_id"]
    out = tmp_path / "out" / table_folder("../x") / plan_id
    assert (out / "manifest.json").exists() and 'COPY "../x"' in (out / "copy.sql").read_text()
    for name in names[1:]:
        res = invoke("run", database.url, name, "--dest", tmp_path / "out", "--no-cache")
        assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "plans"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(table_folder(n) for n in names)
    plans = sorted(p.name for p in (tmp_path / "plans").iterdir())
    assert len(plans) == 3 and all(any(p.startswith(table_folder(n) + "-") for n in names) for p in plans)
