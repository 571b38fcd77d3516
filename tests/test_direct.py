"""The executor's direct MySQL source (sparsesync.direct): the same URL, quoting, table facts and counts as
the SQLAlchemy path it replaces on the default run, on hostile input and a real MariaDB."""

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sparsesync.direct import DirectSource, LightDialect, UrlParts, is_direct, parse_direct
from sparsesync.errors import DriftError, SourceError
from sparsesync.source import PASSWORD_ENV, parse_direct_url, parse_url, redact

HOSTILE_URLS = [
    "mysql+pymysql://root@127.0.0.1:3306/test",
    "mysql+pymysql://root@localhost/test",
    "mariadb+pymysql://etl:s3cr%40t%3A%2F%3F%23@db.example:3307/shop",
    "mysql+pymysql://u%20ser:p+w%25rd@h/db%2Fx",
    "mysql+pymysql://us:pa ss@h:1/d b",
    "mysql+pymysql://etl:Sup3r@S3cret@db/x",  # a raw @ in the password (sparsesync's own repair)
    "mysql+pymysql://ü:ñ€@[::1]:3306/tëst",
    "mysql+pymysql://etl@h:3306",
    "mysql+pymysql://:only-pw@h/d",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_urls_split_as_sqlalchemy_splits_them(url, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    ours, theirs = parse_direct_url(url), parse_url(url)
    assert ours is not None
    for attr in ("username", "password", "host", "port", "database"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.render_as_string(hide_password=False) == theirs.render_as_string(hide_password=False)
    assert redact(url) == theirs.render_as_string(hide_password=True)
    assert ours.get_backend_name() == theirs.get_backend_name()


def test_password_from_the_environment_as_on_the_sqlalchemy_path(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    url = "mysql+pymysql://etl@h:3306/db"
    assert parse_direct_url(url).password == parse_url(url).password == "from-env"
    assert parse_direct_url("mysql+pymysql://etl:given@h/db").password == "given"


@pytest.mark.parametrize("url", [
    "mysql+pymysql://root@127.0.0.1/test?ssl_ca=/etc/ca.pem",  # TLS and driver options: SQLAlchemy translates them
    "mysql+pymysql://root@127.0.0.1/test?charset=latin1",
    "mysql+mysqldb://root@127.0.0.1/test",
    "mysql://root@127.0.0.1/test",
    "mysql+pymysql://root@/test",  # no host: a socket, SQLAlchemy's business
    "mysql+pymysql://root@h:notaport/test",
    "sqlite:///x.db",
    "postgresql://u@h/db",
])
def test_anything_else_is_left_to_sqlalchemy(url):
    assert parse_direct(url) is None


def test_the_switch_turns_the_direct_path_off(monkeypatch):
    monkeypatch.setenv("SPARSESYNC_SOURCE_VIA", "sqlalchemy")
    assert parse_direct_url("mysql+pymysql://root@127.0.0.1/test") is None


NAMES = ["id", "select", "a`b", "a%b", "a%%b", "x\ny", "DROP TABLE t; --", "ü", "`", "%"]


@pytest.mark.parametrize("name", NAMES)
def test_quoting_is_the_mysql_dialects(name):
    real = sa.create_engine("mysql+pymysql://u@h/db").dialect.identifier_preparer
    ours = LightDialect.identifier_preparer
    # SQLAlchemy leaves plain lower-case names bare; quoted, both escape alike.
    expected = real.quote(name)
    if not expected.startswith("`"):
        expected = f"`{expected}`"
    assert ours.quote(name) == expected


# ---- on MariaDB -----------------------------------------------------------------------------------------------
@pytest.fixture
def direct(mysql_url):
    src = DirectSource(parse_direct_url(mysql_url), mysql_url).check()
    yield src
    src.dispose()


@pytest.mark.mysql
@pytest.mark.parametrize("ddl, key", [
    ("CREATE TABLE `{name}` (id BIGINT UNSIGNED PRIMARY KEY, j JSON, d DECIMAL(30,4), t TIME(3), b BIT(9))", None),
    ("CREATE TABLE `{name}` (id BIGINT NULL, v TEXT, KEY (id))", "id"),
    ("CREATE TABLE `{name}` (pk INT PRIMARY KEY, `a%b` BIGINT NOT NULL, UNIQUE KEY u (`a%b`))", "a%b"),
    ("CREATE TABLE `{name}` (id INT, v INT, PRIMARY KEY (id, v))", "id"),
])
def test_table_facts_match_sqlalchemy_reflection(mysql_engine, direct, ddl, key):
    from sparsesync.planner.introspect import introspect

    name = f"dir%x`{uuid.uuid4().hex[:8]}"  # % and ` in the name: quoting and the drivers' % formatting
    quoted = "`" + name.replace("`", "``") + "`"
    with mysql_engine.connect() as conn:
        cur = conn.connection.cursor()  # no parameters: no % formatting
        cur.execute(ddl.replace("`{name}`", quoted))
    try:
        ours, theirs = introspect(direct, name, key=key), introspect(mysql_engine, name, key=key)
    finally:
        with mysql_engine.connect() as conn:
            conn.connection.cursor().execute(f"DROP TABLE {quoted}")
    assert ours == theirs and ours.table == name
    assert direct.__dict__["_engine"] is None  # the facts came without a SQLAlchemy Engine


@pytest.mark.mysql
def test_a_backtick_in_the_key_name_is_read_from_information_schema(mysql_engine, direct):
    # SQLAlchemy's reflection parses SHOW CREATE TABLE and loses this index (it then calls the key unindexed);
    # information_schema names it exactly.
    from sparsesync.planner.introspect import introspect

    name = f"dirbt_{uuid.uuid4().hex[:8]}"
    with mysql_engine.connect() as conn:
        conn.connection.cursor().execute(
            f"CREATE TABLE `{name}` (pk INT PRIMARY KEY, `a``b` BIGINT NOT NULL, UNIQUE KEY u (`a``b`))")
    try:
        info = introspect(direct, name, key="a`b")
    finally:
        with mysql_engine.connect() as conn:
            conn.connection.cursor().execute(f"DROP TABLE `{name}`")
    assert (info.key, info.key_unique, info.key_signed) == ("a`b", True, True)


@pytest.mark.mysql
def test_refusals_read_the_same(mysql_engine, mysql_table, direct):
    from sparsesync.errors import KeyColumnError
    from sparsesync.planner.introspect import introspect

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, n BIGINT, s VARCHAR(9))", prefix="dirref")
    for kwargs in ({"key": "n"}, {"key": "s"}, {"key": "nope"}):
        errors = []
        for engine in (direct, mysql_engine):
            with pytest.raises(KeyColumnError) as exc:
                introspect(engine, name, **kwargs)
            errors.append((exc.value.message, exc.value.hint))
        assert errors[0] == errors[1]
    errors = []
    for engine in (direct, mysql_engine):
        with pytest.raises(SourceError) as exc:
            introspect(engine, name.upper())  # information_schema matches names case-insensitively; we must not
        errors.append(exc.value.message)
    assert errors[0] == errors[1] and "not found" in errors[0]


@pytest.mark.mysql
def test_counts_match_and_a_dropped_connection_is_replaced(mysql_engine, mysql_table, direct):
    from sparsesync.executor.checksum import Span, span_checksums, span_counts_direct
    from sparsesync.planner.api import make_plan

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT NULL, KEY (id))", prefix="dircnt")
    with mysql_engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO `{name}` VALUES (:i)"), [{"i": None if i % 10 == 0 else i} for i in range(500)])
    plan = make_plan(mysql_engine, name, key="id", rows_per_query=100, use_cache=False)
    spans = [Span.of_range(r) for r in plan.ranges] + [Span(None, 50), Span(2**63 + 5, None), Span(450, None)]
    ours = span_counts_direct(direct, plan, spans)
    assert ours == span_checksums(mysql_engine, plan, spans, counts_only=True)
    assert sum(c.rows for c in ours[:len(plan.ranges)]) == 500
    # A kept connection the server dropped (idle timeout, KILL) is replaced, not used.
    with direct.connection() as conn:
        victim = conn.thread_id()
    with mysql_engine.begin() as c:
        c.exec_driver_sql(f"KILL {victim}")
    assert span_counts_direct(direct, plan, spans) == ours


@pytest.mark.mysql
def test_a_hostile_password_reaches_both_readers_and_never_a_message(mysql_engine, mysql_table, mysql_url, tmp_path,
                                                                      monkeypatch):
    from sparsesync.executor.run import execute_plan
    from sparsesync.planner.api import make_plan

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(9))", prefix="dirpw")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{name}` VALUES (1, 'a'), (2, 'b'), (70000, 'c')")
    plan = make_plan(mysql_engine, name, use_cache=False)
    user, pw = f"ss_{uuid.uuid4().hex[:8]}", "p@ss:w/rd%?# +"  # (PyMySQL sends passwords as latin-1)
    base = make_url(mysql_url)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, pw))
        conn.exec_driver_sql(f"GRANT SELECT ON `{base.database}`.* TO '{user}'@'%%'", ())
    try:
        url = base.set(username=user, password=pw).render_as_string(hide_password=False)
        monkeypatch.delenv(PASSWORD_ENV, raising=False)
        for reader in ("connectorx", "pymysql"):
            from sparsesync.executor.readers import connectorx_available

            if reader == "connectorx" and not connectorx_available():
                continue
            report = execute_plan(plan, str(tmp_path / reader), source_url=url, reader=reader)
            assert report.rows == 3 and report.reader == reader
        wrong = base.set(username=user, password=pw + "x").render_as_string(hide_password=False)
        with pytest.raises(SourceError) as exc:
            execute_plan(plan, str(tmp_path / "wrong"), source_url=wrong)
        assert "cannot connect" in exc.value.message and pw not in str(exc.value) and "p@ss" not in str(exc.value)
    finally:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP USER '{user}'@'%%'", ())


@pytest.mark.mysql
def test_drift_is_refused_on_the_direct_path(mysql_engine, mysql_table, mysql_url, tmp_path):
    from sparsesync.executor.run import execute_plan
    from sparsesync.planner.api import make_plan

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, v VARCHAR(9))", prefix="dirdrift")
    plan = make_plan(mysql_engine, name, use_cache=False)
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE `{name}` MODIFY v VARCHAR(10)")
    with pytest.raises(DriftError, match="retyped v varchar\\(9\\) → varchar\\(10\\)"):
        execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


def test_is_direct_touches_no_engine():
    src = DirectSource(UrlParts("mysql+pymysql", username="u", host="127.0.0.1", port=1, database="d"))
    assert is_direct(src) and src.dialect.name == "mysql" and src._engine is None
    assert not is_direct(sa.create_engine("sqlite://"))


@pytest.mark.mysql
def test_once_an_engine_is_made_its_pool_serves_alone(mysql_engine, mysql_table, direct):
    """A path that needs SQLAlchemy (--reader pymysql) makes the real Engine: the direct connections kept idle
    are closed and later statements use the Engine's pool, so the source never holds two sets of idle
    connections (a Dask worker under sync's --connections counted one too many)."""
    from sparsesync.executor.checksum import Span, span_counts_direct
    from sparsesync.planner.api import make_plan

    name = mysql_table("CREATE TABLE `{name}` (id BIGINT PRIMARY KEY)", prefix="dirpool")
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{name}` VALUES (1), (2), (3)")
    plan = make_plan(mysql_engine, name, use_cache=False)
    assert direct.fetch_all("SELECT 1") == [(1,)] and len(direct.__dict__["_idle"]) == 1
    thread_ids = [direct.__dict__["_idle"][0].thread_id()]
    engine = direct.engine
    assert direct.__dict__["_idle"] == []
    assert [c.rows for c in span_counts_direct(direct, plan, [Span(None, None)])] == [3]
    assert direct.__dict__["_idle"] == [] and engine.pool.checkedin() >= 1
    with mysql_engine.connect() as conn:  # the first direct connection is gone from the server
        live = {r[0] for r in conn.exec_driver_sql("SELECT ID FROM information_schema.PROCESSLIST").all()}
    assert thread_ids[0] not in live
