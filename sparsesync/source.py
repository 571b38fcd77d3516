"""Connecting to a source database and describing it without secrets.

Shared by planner and executor: both need an Engine, and both must never let a password or token
leave this module (plans, logs and reports carry a :class:`SourceIdentity` only).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache

from typing import TYPE_CHECKING

from .errors import SourceError, UsageError

if TYPE_CHECKING:  # SQLAlchemy is imported where it is used: the executor's default path does without it
    from sqlalchemy.engine import URL, Engine

SOURCE_URL_ENV = "SPARSESYNC_SOURCE_URL"
PASSWORD_ENV = "SPARSESYNC_SOURCE_PASSWORD"


@dataclass(frozen=True)
class SourceIdentity:
    """Where the rows come from, minus anything secret."""

    dialect: str
    host: str | None
    port: int | None
    database: str | None
    username: str | None = None

    def describe(self) -> str:
        """Short human form, e.g. ``mysql://root@127.0.0.1:3306/test``."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.database or ''}"
        user = f"{self.username}@" if self.username else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.dialect}://{user}{self.host or ''}{port}/{self.database or ''}"

    def cache_key(self) -> str:
        """Stable identity used to key cached histograms."""
        return self.describe()


def resolve_url(url: str | None, *, required: bool = True) -> str | None:
    """The source URL of a command (``plan``, ``run``, ``execute --source``, ``sync``): one rule for all.

    The URL given, else ``$SPARSESYNC_SOURCE_URL``; with neither, refused (or ``None`` when not
    ``required``: ``execute`` then rebuilds the URL from the plan). A given URL that names no password
    gets ``$SPARSESYNC_SOURCE_PASSWORD`` when it is parsed (:func:`with_password`), or, when that is not
    set, the password of ``$SPARSESYNC_SOURCE_URL`` if that names the same account (user, host, port):
    ``export SPARSESYNC_SOURCE_URL=mysql+pymysql://etl:secret@db/shop`` then
    ``sparsesync run mysql+pymysql://etl@db/shop orders`` connects as ``plan`` does. Another account's
    password is never sent to a server.
    """
    env = os.environ.get(SOURCE_URL_ENV)
    if url:
        return url if not env or os.environ.get(PASSWORD_ENV) else _password_from(url, env)
    if env:
        return env
    if not required:
        return None
    raise UsageError(
        "no source URL given",
        hint=f"pass SOURCE_URL (e.g. mysql+pymysql://user@host:3306/db) or set {SOURCE_URL_ENV}",
    )


def _parse_plain(url: str):
    """``url`` parsed without any password from the environment (the direct parser first: no SQLAlchemy import)."""
    from .direct import parse_direct

    parsed = parse_direct(url)
    if parsed is None:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    return _password_with_at(parsed)


def _password_from(url: str, env_url: str) -> str:
    """``url`` with the password of ``env_url`` when ``url`` names none and both name the same account."""
    try:
        given, env = _parse_plain(url), _parse_plain(env_url)
    except Exception:  # noqa: BLE001 - a bad URL is refused, in one line, where it is parsed for use
        return url
    if given.password is not None or env.password is None:
        return url

    def account(u):
        backend = u.get_backend_name()
        family = "mysql" if backend in ("mysql", "mariadb") else backend
        port = u.port or (3306 if family == "mysql" else None)
        return family, (u.host or "").lower(), port, u.username

    if given.get_backend_name() == "sqlite" or account(given) != account(env):
        return url
    return given.set(password=env.password).render_as_string(hide_password=False)


def parse_url(url: str) -> URL:
    """Parse a SQLAlchemy URL; a bad one becomes a one-line :class:`UsageError` without the password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UsageError(
            f"cannot parse source URL {redact(url)!r}",
            hint="use the SQLAlchemy form dialect+driver://user:password@host:port/database "
            "(percent-encode @ : / ? # in the password, e.g. @ as %40)",
        ) from None  # the chained exception would echo the URL
    return with_password(_password_with_at(parsed))


def with_password(parsed):
    """``$SPARSESYNC_SOURCE_PASSWORD`` as the password of a URL that names none (not for SQLite)."""
    if parsed.password is None and os.environ.get(PASSWORD_ENV) and parsed.get_backend_name() != "sqlite":
        parsed = parsed.set(password=os.environ[PASSWORD_ENV])
    return parsed


def parse_direct_url(url: str):
    """``url`` parsed for :class:`sparsesync.direct.DirectSource` (as :func:`parse_url` parses it), or
    ``None`` when SQLAlchemy must serve it (another driver, query options, …)."""
    from .direct import parse_direct, usable

    parts = parse_direct(url) if usable() else None
    return None if parts is None else with_password(_password_with_at(parts))


def _password_with_at(parsed: "URL") -> "URL":
    """Undo SQLAlchemy's split of a password holding a raw ``@``, or refuse without echoing any of it.

    SQLAlchemy ends the password at its first ``@``: ``root:Sup3r@S3cret@db/x`` gives password ``Sup3r``
    and host ``S3cret@db``, which would then be shown (and connected to) as the host. A host never holds
    an ``@``, so everything up to the last ``@`` of that host belongs to the password. A raw ``@``
    followed by ``:``, ``/`` or ``?`` cannot be told apart from the URL's own separators: refused.
    """
    host = parsed.host or ""
    if parsed.password is not None and "@" in host:
        extra, _, real_host = host.rpartition("@")
        return parsed.set(password=f"{parsed.password}@{extra}", host=real_host)
    if parsed.password is not None and "@" in (parsed.database or ""):
        raise UsageError(
            "the source URL's password seems to hold a raw @ followed by : / or ? (nothing of it is shown here)",
            hint="percent-encode the password's reserved characters (@ as %40, : as %3A, / as %2F, ? as %3F) "
            f"or pass it in ${PASSWORD_ENV}",
        )
    return parsed


def redact(url: "str | URL") -> str:
    """The URL with its password masked, safe for any message."""
    try:
        if isinstance(url, str):
            from .direct import parse_direct

            parsed = parse_direct(url)  # renders as SQLAlchemy's URL does, without importing it
            if parsed is None:
                from sqlalchemy.engine import make_url

                parsed = make_url(url)
            url = _password_with_at(parsed)
        return url.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparseable: show nothing after the scheme
        text = str(url)
        return text.split("://", 1)[0] + "://…" if "://" in text else "…"


def identity_of(url: "str | URL") -> SourceIdentity:
    """The secret-free identity of a source URL."""
    parsed = parse_url(url) if isinstance(url, str) else url
    dialect = parsed.get_backend_name()
    return SourceIdentity(
        dialect=dialect,
        host=parsed.host,
        port=parsed.port or (3306 if dialect in ("mysql", "mariadb") and parsed.host else None),
        database=parsed.database,
        username=parsed.username,
    )


def create_engine(url: "str | URL", **kwargs) -> "Engine":
    """Create an Engine and check that the server answers; failures become :class:`SourceError`."""
    import sqlalchemy as sa
    from sqlalchemy.exc import NoSuchModuleError

    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        # SQLite silently creates a missing file; a typo in the path must not produce an empty source.
        if db and db != ":memory:" and not db.startswith("file:") and not os.path.isfile(db):
            raise SourceError(
                f"SQLite database file {db!r} does not exist",
                hint="check the path in the URL (sqlite:///relative/path.db or sqlite:////absolute/path.db)",
            )
    try:
        # pool_pre_ping: a pooled connection a network blip or KILL ended is replaced, not handed out dead
        engine = sa.create_engine(parsed, **{"pool_pre_ping": True, **kwargs})
        if parsed.get_driver_name() == "pymysql":
            sa.event.listen(engine, "do_connect", pymysql_do_connect)
    except NoSuchModuleError as exc:
        raise UsageError(
            f"unknown database dialect in {redact(parsed)!r}",
            hint="supported: mysql+pymysql://, mariadb+pymysql://, sqlite:///path, postgresql://",
        ) from exc
    except ImportError as exc:
        raise UsageError(f"the driver for {redact(parsed)!r} is not installed: {exc}") from exc
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise SourceError(
            f"cannot connect to {redact(parsed)}: {short_db_error(exc)}",
            hint="check host, port, user, password and database",
        ) from exc
    return engine


_TLS_LOCK = threading.Lock()
_TLS_DEFAULT: list = []  # PyMySQL's "preferred TLS" context, built once per process


def pymysql_do_connect(dialect, conn_rec, cargs, cparams):
    """PyMySQL's own connection, except that its default TLS context is shared by the process.

    PyMySQL ≥ 1.2 tries TLS on every connection that names no TLS option ("preferred": used if the
    server offers it, no certificate check) and builds a fresh ``ssl.create_default_context()`` for
    each, which loads the system CA store: ~50 ms of CPU per connection on a 2-core machine, paid by
    the drift check, each count connection, each pymysql range session. An SSLContext is made to be
    shared by many connections, so the same settings are built once. Explicit TLS options
    (``ssl_ca``…, ``ssl_disabled``) still go through PyMySQL unchanged.
    """
    return dbapi_connect(dialect, cargs, cparams)


def dbapi_connect(dialect, cargs, cparams):
    """A new DBAPI connection as the engine would make it (PyMySQL with the shared TLS context), for a
    ``do_connect`` listener of its own (sync's connection budget), which replaces :func:`pymysql_do_connect`."""
    if dialect.driver == "pymysql":
        return _SharedTLSConnection()(*cargs, **cparams)
    return dialect.connect(*cargs, **cparams)


@lru_cache(maxsize=1)
def _SharedTLSConnection():  # noqa: N802 - a class, built on first use so pymysql is imported only then
    import pymysql.connections

    class SharedTLSConnection(pymysql.connections.Connection):
        def _create_ssl_ctx(self, sslp):
            if isinstance(sslp, dict) and not sslp:  # the "preferred" default, no option given
                with _TLS_LOCK:
                    if not _TLS_DEFAULT:
                        _TLS_DEFAULT.append(super()._create_ssl_ctx(sslp))
                    return _TLS_DEFAULT[0]
            return super()._create_ssl_ctx(sslp)

    return SharedTLSConnection


def short_db_error(exc: BaseException) -> str:
    """The driver's own message, one line, no SQL echo and no parameters."""
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        text = f"({args[0]}) {args[1]}"
    else:
        text = str(orig).split("\n", 1)[0]
    return text.strip()


def is_mysql(engine_or_dialect) -> bool:
    """True for MySQL and MariaDB, whatever the driver."""
    name = getattr(getattr(engine_or_dialect, "dialect", engine_or_dialect), "name", engine_or_dialect)
    return name in ("mysql", "mariadb")


def quoted_table(dialect, table: str, schema: str | None = None) -> str:
    """``schema.table`` quoted by the dialect, for the few statements built as text (not Core)."""
    prep = dialect.identifier_preparer
    return f"{prep.quote_schema(schema)}.{prep.quote(table)}" if schema else prep.quote(table)


def text_name(dialect, name: str) -> str:
    """``name`` quoted by ``dialect`` for SQL sent without parameters (see :func:`single_percents`)."""
    return single_percents(dialect, dialect.identifier_preparer.quote(name))


def text_table(dialect, table: str, schema: str | None = None) -> str:
    """``schema.table`` quoted by ``dialect`` for SQL sent without parameters (see :func:`single_percents`)."""
    return single_percents(dialect, quoted_table(dialect, table, schema))


def single_percents(dialect, quoted: str) -> str:
    """A dialect-quoted identifier as the server must see it, for SQL that no ``%`` formatting touches
    (connectorx) or that ``sa.text`` compiles (which doubles ``%`` again): drivers with a ``%`` paramstyle
    get ``%`` doubled by the dialect's quoting, which is undone here."""
    return quoted.replace("%%", "%") if dialect.paramstyle in ("format", "pyformat") else quoted


def direct_url_for_identity(identity: SourceIdentity):
    """:func:`url_for_identity` for :class:`sparsesync.direct.DirectSource`, or ``None`` where SQLAlchemy
    must serve the source (not MySQL, no host, the direct path switched off or PyMySQL missing)."""
    from .direct import UrlParts, usable

    if identity.dialect not in ("mysql", "mariadb") or not identity.host or not usable():
        return None
    return with_password(UrlParts("mysql+pymysql", username=identity.username, host=identity.host,
                                  port=identity.port, database=identity.database))


def url_for_identity(identity: SourceIdentity, driver: str | None = None) -> "URL":
    """Rebuild a URL from a plan's identity (the password comes from ``$SPARSESYNC_SOURCE_PASSWORD``)."""
    from sqlalchemy.engine import URL

    if identity.dialect == "sqlite":
        return URL.create("sqlite", database=identity.database)
    drivername = identity.dialect
    if driver:
        drivername = f"{identity.dialect}+{driver}"
    elif identity.dialect in ("mysql", "mariadb"):
        drivername = "mysql+pymysql"
    return URL.create(
        drivername,
        username=identity.username,
        password=os.environ.get(PASSWORD_ENV),
        host=identity.host,
        port=identity.port,
        database=identity.database,
    )
