"""Source URL handling: secrets never leave sparsesync.source."""

from __future__ import annotations

import pytest

from sparsesync.errors import SourceError, UsageError
from sparsesync.source import create_engine, identity_of, redact, resolve_url, url_for_identity


def test_redact_masks_password():
    text = redact("mysql+pymysql://etl:s3cr3t@db.example:3306/shop")
    assert "s3cr3t" not in text
    assert "etl" in text and "db.example" in text


def test_identity_has_no_password():
    ident = identity_of("mysql+pymysql://etl:s3cr3t@db.example/shop")
    assert "s3cr3t" not in repr(ident)
    assert ident.port == 3306 and ident.database == "shop" and ident.dialect == "mysql"
    assert "s3cr3t" not in ident.cache_key()


def test_resolve_url_prefers_argument_then_env(monkeypatch):
    monkeypatch.setenv("SPARSESYNC_SOURCE_URL", "sqlite:///env.db")
    assert resolve_url("sqlite:///arg.db") == "sqlite:///arg.db"
    assert resolve_url(None) == "sqlite:///env.db"
    monkeypatch.delenv("SPARSESYNC_SOURCE_URL")
    with pytest.raises(UsageError, match="no source URL"):
        resolve_url(None)


def test_bad_url_is_one_line_without_password():
    with pytest.raises(UsageError) as info:
        create_engine("not a url at all")
    assert "\n" not in info.value.one_line()


def test_unknown_dialect():
    with pytest.raises(UsageError, match="unknown database dialect"):
        create_engine("nosuchdb://u:pw@h/db")


def test_wrong_password_is_source_error_without_password(mysql_url):
    from sqlalchemy.engine import make_url

    url = make_url(mysql_url).set(password="definitely-wrong-pw")
    with pytest.raises(SourceError) as info:
        create_engine(url)
    line = info.value.one_line()
    assert "definitely-wrong-pw" not in line
    assert "cannot connect" in line


def test_url_for_identity_takes_password_from_env(monkeypatch):
    ident = identity_of("mysql+pymysql://etl@db/shop")
    monkeypatch.setenv("SPARSESYNC_SOURCE_PASSWORD", "pw1")
    url = url_for_identity(ident)
    assert url.password == "pw1" and url.host == "db" and url.drivername == "mysql+pymysql"
    assert url_for_identity(identity_of("sqlite:///x.db")).database == "x.db"


def test_missing_sqlite_file_is_refused_and_not_created(tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(SourceError, match="does not exist"):
        create_engine(f"sqlite:///{path}")
    assert not path.exists()


def test_pymysql_connections_share_one_preferred_tls_context(mysql_url):
    """PyMySQL ≥ 1.2 builds a TLS context per connection when no TLS option is given (~50 ms each);
    ours builds the same "preferred" context once per process and every connection reuses it."""
    import ssl

    import sqlalchemy as sa

    from sparsesync.source import create_engine

    engine = create_engine(mysql_url, poolclass=sa.pool.NullPool)
    try:
        ctxs = []
        for _ in range(3):
            raw = engine.raw_connection()
            try:
                ctxs.append(raw.dbapi_connection.ctx)
            finally:
                raw.close()
    finally:
        engine.dispose()
    assert all(c is ctxs[0] for c in ctxs)
    # PyMySQL's own settings for "preferred": no CA given, so no verification — unchanged by the sharing
    assert ctxs[0].verify_mode == ssl.CERT_NONE and ctxs[0].check_hostname is False


def test_explicit_tls_options_are_left_to_pymysql(mysql_url):
    """A URL naming TLS options gets PyMySQL's own handling: ssl_disabled gives no context at all."""
    import sqlalchemy as sa

    from sparsesync.source import create_engine

    url = sa.engine.make_url(mysql_url).update_query_dict({"ssl_disabled": "true"})
    engine = create_engine(url)
    try:
        raw = engine.raw_connection()
        try:
            assert getattr(raw.dbapi_connection, "ctx", None) is None
        finally:
            raw.close()
    finally:
        engine.dispose()
