"""One rule for the source URL of ``plan``, ``run`` and ``execute`` (issue 17, finding 3).

The Quick start exports ``SPARSESYNC_SOURCE_URL`` with the password, then runs
``sparsesync run mysql+pymysql://etl@db:3306/shop orders``: the URL given names no password, so it must
take the one of the same account from the environment, as ``plan`` does; and ``run TABLE`` alone works
like ``plan TABLE``. A real MariaDB account with a password (tests/sync/dbkit.py).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from sparsesync.cli import _register, app
from sparsesync.source import resolve_url

from .sync.dbkit import database  # noqa: F401 - fixture

_register()

ENV_URL = "mysql+pymysql://etl:s3cr%40t@db.example:3306/shop"


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("SPARSESYNC_SOURCE_URL", "SPARSESYNC_SOURCE_PASSWORD", "SPARSESYNC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("given, want", [
    ("mysql+pymysql://etl@db.example:3306/shop", ENV_URL),           # same account: its password
    ("mysql+pymysql://etl@DB.example/other_db", "mysql+pymysql://etl:s3cr%40t@DB.example/other_db"),  # default port
    ("mysql+pymysql://root@db.example:3306/shop", None),             # another user: never its password
    ("mysql+pymysql://etl@evil.example:3306/shop", None),            # another host
    ("mysql+pymysql://etl@db.example:3307/shop", None),              # another port
    ("mysql+pymysql://etl:mine@db.example:3306/shop", None),         # names its own password: kept
])
def test_a_given_url_takes_the_password_of_the_same_account_only(clean_env, given, want):
    clean_env.setenv("SPARSESYNC_SOURCE_URL", ENV_URL)
    assert resolve_url(given) == (want or given)
    assert resolve_url(None) == ENV_URL
    clean_env.setenv("SPARSESYNC_SOURCE_PASSWORD", "other")  # it wins: the URL is then completed when parsed
    assert resolve_url(given) == given


def test_no_url_at_all_is_one_line(clean_env):
    res = CliRunner().invoke(app, ["run", "orders", "--dest", "./nowhere"])
    assert res.exit_code == 2 and "no source URL given" in res.output and "Traceback" not in res.output


@pytest.mark.mysql
def test_run_as_the_quick_start_says_with_a_password_account(database, clean_env, tmp_path):  # noqa: F811
    database.fixture("dense", 600, "orders")
    u = make_url(database.url)
    assert u.password
    without = f"mysql+pymysql://{u.username}@{u.host}:{u.port or 3306}/{u.database}"  # (URL.set(password=None) keeps it)
    assert make_url(without).password is None
    clean_env.setenv("SPARSESYNC_SOURCE_URL", database.url)
    clean_env.chdir(tmp_path)
    runner = CliRunner()

    plan = runner.invoke(app, ["plan", "orders", "--no-cache", "-o", str(tmp_path / "p.json")])
    assert plan.exit_code == 0, plan.output
    # The Quick start's line: a URL without its password, the password in SPARSESYNC_SOURCE_URL.
    res = runner.invoke(app, ["run", without, "orders", "--dest", str(tmp_path / "a"), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "600 rows" in res.output
    # `run TABLE` alone, as `plan TABLE`.
    res = runner.invoke(app, ["run", "orders", "--dest", str(tmp_path / "b"), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "600 rows" in res.output
    # `execute --source` with the same password-less URL.
    res = runner.invoke(app, ["execute", str(tmp_path / "p.json"), "--dest", str(tmp_path / "c"), "--source", without])
    assert res.exit_code == 0, res.output
    for path in [tmp_path / "p.json", *(tmp_path / "plans").glob("*.json")]:
        assert database.password not in path.read_text()
        assert json.loads(path.read_text())["source"]["table"] == "orders"
    assert database.password not in res.output

    # Another account's URL never gets that password: refused by the server, one line.
    other = without.replace(f"//{u.username}@", "//ss_nobody@")
    res = runner.invoke(app, ["run", other, "orders", "--dest", str(tmp_path / "d"), "--no-cache"])
    assert res.exit_code == 3 and "Traceback" not in res.output and database.password not in res.output
