"""The executor's MySQL/MariaDB source without SQLAlchemy: PyMySQL directly, SQLAlchemy only when asked for.

Why: importing SQLAlchemy is the largest single start-up cost of ``execute`` (0.2–0.4 s of CPU, more than
pyarrow), and the default run (connectorx reader, one or more workers, per-range consistency) needs from
the source only a handful of statements besides the range reads: the drift check (information_schema and
``MIN``/``MAX`` of the key), the tail count and the after-run ``COUNT(*)`` per range. Those run here over
PyMySQL connections; the identifiers are quoted as SQLAlchemy's MySQL dialect quotes them and keys are
validated ints, so the statements are the same.

:class:`DirectSource` stands in for an Engine. Anything it does not do itself (``connect()``,
``raw_connection()``, a dialect attribute other than the few below…) is forwarded to a real SQLAlchemy
Engine created on first use, so every other path (``--reader pymysql``, ``--consistency snapshot``, Dask,
``--dry-run``) works as before. Only plain ``mysql+pymysql://`` / ``mariadb+pymysql://`` URLs with a host and
no query options (TLS settings, charset…) take this path; anything else goes to SQLAlchemy as it always did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import quote, unquote

from .errors import SourceError

DIRECT_DRIVERS = ("mysql+pymysql", "mariadb+pymysql")

# SQLAlchemy's own URL pattern (sqlalchemy.engine.url._parse_url), so both parsers split a URL alike;
# tests/test_direct.py compares the two on hostile URLs.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


@dataclass(frozen=True)
class UrlParts:
    """A parsed source URL with the attributes and methods of SQLAlchemy's ``URL`` that sparsesync uses."""

    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: dict = dataclasses.field(default_factory=dict)

    def set(self, **kw) -> "UrlParts":
        return dataclasses.replace(self, **kw)

    def get_backend_name(self) -> str:
        return self.drivername.split("+", 1)[0]

    def get_driver_name(self) -> str:
        return self.drivername.split("+", 1)[1] if "+" in self.drivername else ""

    def render_as_string(self, hide_password: bool = True) -> str:
        """As ``URL.render_as_string`` (same escaping), so connectorx reads the same credentials."""
        s = self.drivername + "://"
        if self.username is not None:
            s += quote(self.username, safe=" +")
            if self.password is not None:
                s += ":" + ("***" if hide_password else quote(str(self.password), safe=" +"))
            s += "@"
        if self.host is not None:
            s += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            s += f":{self.port}"
        if self.database is not None:
            s += "/" + quote(self.database, safe=" +/")
        if self.query:
            raise ValueError("a direct source URL carries no query options")
        return s

    def __str__(self) -> str:
        return self.render_as_string()


def parse_direct(url: str) -> UrlParts | None:
    """``url`` as :class:`UrlParts` when the direct path can serve it, else ``None`` (SQLAlchemy's turn).

    Served: ``mysql+pymysql`` / ``mariadb+pymysql``, a host, no query string (whether PyMySQL is installed
    is :func:`usable`'s question). A URL this pattern cannot split is left to SQLAlchemy too, which refuses it
    with the usual message.
    """
    m = _URL.match(url)
    if m is None or m.group("name") not in DIRECT_DRIVERS or m.group("query") is not None:
        return None
    host = m.group("ipv4host") or m.group("ipv6host")
    port = m.group("port")
    if not host or (port and not port.isdigit()):
        return None
    return UrlParts(
        drivername=m.group("name"),
        username=None if m.group("username") is None else unquote(m.group("username")),
        password=None if m.group("password") is None else unquote(m.group("password")),
        host=host,
        port=int(port) if port else None,
        database=None if m.group("database") is None else unquote(m.group("database")),
    )


# ---- quoting, as SQLAlchemy's MySQL dialect does it for a pyformat driver -----------------------------------
class _Preparer:
    """Backtick quoting (a backtick doubled) with ``%`` doubled, as the pymysql dialect's preparer: callers
    that send text without parameters undo the doubling with :func:`sparsesync.source.single_percents`."""

    @staticmethod
    def quote(name: str) -> str:
        return "`" + name.replace("`", "``").replace("%", "%%") + "`"

    quote_schema = quote


class LightDialect:
    """What the executor reads of ``engine.dialect`` on the direct path; anything else is the real one's."""

    driver = "pymysql"
    paramstyle = "pyformat"
    identifier_preparer = _Preparer()

    def __init__(self, source: "DirectSource") -> None:
        self._source = source
        self.name = source.url.get_backend_name()

    @property
    def is_mariadb(self) -> bool:
        return self._source.is_mariadb

    def __getattr__(self, attr: str):
        return getattr(self._source.engine.dialect, attr)


# ---- the source ----------------------------------------------------------------------------------------------
class DirectSource:
    """An Engine stand-in for one MySQL/MariaDB source over PyMySQL (see the module docstring)."""

    def __init__(self, url: UrlParts, text: str | None = None) -> None:
        self.__dict__["_lock"] = threading.Lock()
        self.__dict__["_engine"] = None
        self.__dict__["_idle"] = []
        self.__dict__["_text"] = text
        self.__dict__["url"] = url
        self.__dict__["dialect"] = LightDialect(self)
        self.__dict__["is_mariadb"] = False

    # -- connections -----------------------------------------------------------------------------------
    def _open(self):
        from .source import _SharedTLSConnection

        u = self.url
        kw: dict[str, Any] = {"host": u.host, "user": u.username or "", "password": u.password or "",
                              "charset": "utf8mb4", "autocommit": True}  # autocommit: each statement sees now
        if u.port:
            kw["port"] = u.port
        if u.database:
            kw["database"] = u.database
        conn = _SharedTLSConnection()(**kw)
        self.__dict__["is_mariadb"] = "mariadb" in (conn.get_server_info() or "").lower()
        return conn

    def check(self) -> "DirectSource":
        """Connect once (the connection is kept for the next statement); a failure is a one-line SourceError."""
        from .source import redact, short_db_error

        try:
            conn = self._open()
        except Exception as exc:  # noqa: BLE001 - the driver's error, one line, no password
            raise SourceError(f"cannot connect to {redact(self.url)}: {short_db_error(exc)}",
                              hint="check host, port, user, password and database") from exc
        self._idle.append(conn)
        return self

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A PyMySQL connection in autocommit mode: a kept idle one that still answers, else a new one.

        Once a real Engine exists (a path needed one), its pool serves instead, so the source never holds
        two sets of idle connections (a connection budget counts every one; executor.dask_task)."""
        if self._engine is not None:
            conn = self._engine.raw_connection()
            try:
                yield conn
            finally:
                conn.close()  # back to the pool, its transaction rolled back
            return
        conn = None
        with self._lock:
            while self._idle and conn is None:
                cand = self._idle.pop()
                try:
                    cand.ping(reconnect=False)
                    conn = cand
                except Exception:  # noqa: BLE001 - dropped while idle: open another
                    with contextlib.suppress(Exception):
                        cand.close()
        conn = conn or self._open()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            with self._lock:
                keep = ok and self._engine is None  # an Engine made meanwhile pools from now on
                if keep:
                    self._idle.append(conn)
            if not keep:
                with contextlib.suppress(Exception):
                    conn.close()

    def fetch_all(self, sql: str, args=None) -> list[tuple]:
        """Rows of one statement (``args``: PyMySQL's ``%s`` / ``%(name)s`` parameters, or none)."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    # -- the Engine it stands in for ------------------------------------------------------------------------
    @property
    def engine(self):
        """The real SQLAlchemy Engine for this source, created (and SQLAlchemy imported) on first use."""
        with self._lock:
            if self._engine is None:
                from .source import create_engine

                # From here on the Engine's pool serves every statement (see connection()); the kept direct
                # connections close first, so the source never has both open at once.
                idle, self.__dict__["_idle"] = self._idle, []
                for conn in idle:
                    with contextlib.suppress(Exception):
                        conn.close()
                self.__dict__["_engine"] = create_engine(self._text or self.url.render_as_string(hide_password=False))
            return self._engine

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.engine, attr)

    def dispose(self) -> None:
        """Close the kept connections and the Engine, if one was made."""
        with self._lock:
            idle, self.__dict__["_idle"] = self._idle, []
            engine, self.__dict__["_engine"] = self._engine, None
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()
        if engine is not None:
            engine.dispose()


def is_direct(engine) -> bool:
    """True for a :class:`DirectSource` (without touching a real Engine's attributes)."""
    return isinstance(engine, DirectSource)


def sa_dialect(engine):
    """The SQLAlchemy dialect of ``engine`` for compiling Core statements (a DirectSource's real Engine's:
    :class:`LightDialect` only quotes)."""
    return engine.engine.dialect if is_direct(engine) else engine.dialect


def fetch_all(engine, sql: str) -> list[tuple]:
    """Rows of ``sql`` on a DirectSource or a SQLAlchemy Engine, sent as is: no parameters (keys as validated
    int literals), identifiers quoted by ``engine.dialect`` and passed through ``single_percents``.

    On an Engine the statement goes to a DBAPI cursor without parameters, the one call no driver applies
    ``%`` formatting to (``exec_driver_sql`` does for pyformat drivers, with SQLAlchemy 2.1's empty dict)."""
    if is_direct(engine):
        return engine.fetch_all(sql)
    with engine.connect() as conn:
        cur = conn.connection.cursor()
        try:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()


def usable() -> bool:
    """Whether the direct path may serve: PyMySQL is installed, and ``SPARSESYNC_SOURCE_VIA=sqlalchemy`` does
    not switch it off (a switch for comparisons and for a server where it misbehaves; the run is the same)."""
    if os.environ.get("SPARSESYNC_SOURCE_VIA", "").strip().lower() == "sqlalchemy":
        return False
    try:
        import pymysql  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["DirectSource", "UrlParts", "parse_direct", "is_direct", "sa_dialect", "fetch_all", "usable", "LightDialect"]
