"""Connecting to a source database and describing it without secrets.

Shared by planner and executor: both need an Engine, and both must never let a password or token
leave this module (plans, logs and reports carry a :class:`SourceIdentity` only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from .errors import SourceError, UsageError

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


def resolve_url(url: str | None) -> str:
    """Return the URL given, else ``$SPARSESYNC_SOURCE_URL``; refuse when neither is set."""
    if url:
        return url
    env = os.environ.get(SOURCE_URL_ENV)
    if env:
        return env
    raise UsageError(
        "no source URL given",
        hint=f"pass SOURCE_URL (e.g. mysql+pymysql://user@host:3306/db) or set {SOURCE_URL_ENV}",
    )


def parse_url(url: str) -> URL:
    """Parse a SQLAlchemy URL; a bad one becomes a one-line :class:`UsageError` without the password."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UsageError(
            f"cannot parse source URL {redact(url)!r}",
            hint="use the SQLAlchemy form dialect+driver://user:password@host:port/database",
        ) from exc
    if parsed.password is None and os.environ.get(PASSWORD_ENV) and parsed.get_backend_name() != "sqlite":
        parsed = parsed.set(password=os.environ[PASSWORD_ENV])
    return parsed


def redact(url: str | URL) -> str:
    """The URL with its password masked, safe for any message."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
        return parsed.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparseable: show nothing after the scheme
        text = str(url)
        return text.split("://", 1)[0] + "://…" if "://" in text else "…"


def identity_of(url: str | URL) -> SourceIdentity:
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


def create_engine(url: str | URL, **kwargs) -> Engine:
    """Create an Engine and check that the server answers; failures become :class:`SourceError`."""
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
        engine = sa.create_engine(parsed, **kwargs)
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


def url_for_identity(identity: SourceIdentity, driver: str | None = None) -> URL:
    """Rebuild a URL from a plan's identity (the password comes from ``$SPARSESYNC_SOURCE_PASSWORD``)."""
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
