"""Passwords with reserved characters: parsed correctly, or refused without echoing any part of them.

A raw ``@`` in the password (``root:Sup3r@S3cret@host/db``) used to end up as part of the host, so the
error line showed ``S3cret@host``. The CLI runs as a real process against the real MariaDB server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy.engine import make_url

from sparsesync.errors import UsageError
from sparsesync.logs import redact_text
from sparsesync.source import create_engine, identity_of, parse_url, redact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sparsesync", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})}, timeout=120)


def test_a_raw_at_sign_stays_in_the_password():
    url = parse_url("mysql+pymysql://root:Sup3r@S3cret@@db.example:3307/shop")
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "root", "Sup3r@S3cret@", "db.example", 3307, "shop")
    assert identity_of("mysql+pymysql://root:Sup3r@S3cret@db.example/shop").host == "db.example"
    assert redact("mysql+pymysql://root:Sup3r@S3cret@db.example/shop") == "mysql+pymysql://root:***@db.example/shop"
    assert "S3cret" not in redact_text("connecting to mysql+pymysql://root:Sup3r@S3cret@db.example/shop failed")


@pytest.mark.parametrize("url", [
    "mysql+pymysql://root:Sup3r@S3c:ret@db.example/shop",  # '@' then ':' — cannot be told apart
    "mysql+pymysql://root:Sup3r@S3c/ret@db.example/shop",  # '@' then '/'
])
def test_an_ambiguous_password_is_refused_without_any_part_of_it(url):
    with pytest.raises(UsageError) as err:
        parse_url(url)
    line = err.value.one_line()
    assert "%40" in line
    for piece in ("Sup3r", "S3c", "ret"):
        assert piece not in line and piece not in str(err.value.__cause__ or "")


@pytest.mark.mysql
def test_a_real_user_whose_password_holds_at_signs_connects(mysql_engine, mysql_url):
    user, password = f"sps_{uuid.uuid4().hex[:8]}", "Sup3r@S3cret@x"
    with mysql_engine.begin() as conn:
        for host in ("%%", "localhost"):
            conn.exec_driver_sql(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
            conn.exec_driver_sql(f"GRANT SELECT ON `{make_url(mysql_url).database}`.* TO '{user}'@'{host}'")
    try:
        base = make_url(mysql_url)
        raw = f"mysql+pymysql://{user}:{password}@{base.host}:{base.port or 3306}/{base.database}"
        engine = create_engine(raw)  # connects: the whole password reached the server
        engine.dispose()
    finally:
        with mysql_engine.begin() as conn:
            for host in ("%%", "localhost"):
                conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")


@pytest.mark.mysql
def test_cli_wrong_password_with_at_sign_never_shows_any_part_of_it(mysql_url, tmp_path):
    base = make_url(mysql_url)
    raw = f"mysql+pymysql://root:Sup3r@S3cret@{base.host}:{base.port or 3306}/{base.database}"
    res = _cli("plan", raw, "no_such_table_x", "-o", str(tmp_path / "p.json"))
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsesync: error: cannot connect to")
    assert f"@{base.host}:" in lines[0]
    for piece in ("Sup3r", "S3cret"):
        assert piece not in res.stderr and piece not in res.stdout

    ambiguous = f"mysql+pymysql://root:Sup3r@S3c:ret@{base.host}/{base.database}"
    res = _cli("plan", ambiguous, "t", "-o", str(tmp_path / "p.json"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    for piece in ("Sup3r", "S3c", "ret@"):
        assert piece not in res.stderr
    assert not (tmp_path / "p.json").exists()
