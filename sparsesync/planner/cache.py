"""DuckDB cache of density histograms, so re-planning a table costs one MIN/MAX probe.

Location: ``--cache PATH``, else ``$XDG_CACHE_HOME/sparsesync/histograms.duckdb``, else
``~/.cache/sparsesync/histograms.duckdb``. One row per (source identity, table, key, schema hash), with the ``rows_per_query`` its buckets
were measured for (a finer re-plan rescans; see :mod:`sparsesync.planner.api`):
the source identity is :meth:`SourceIdentity.cache_key` (dialect, user, host, port, database — never a
password; SQLite by absolute resolved path), and a schema change gives a new schema hash, so a stale
shape is never reused. A file DuckDB cannot open (not a lock) is renamed aside once, with a notice.

Bucket arrays are ``HUGEINT[]`` (±1.7·10^38): keys of ±2^63 and 2^64−1, and grid bounds one bucket past
them, survive the round trip. The file is opened, read or written, and closed at once; DuckDB locks
the file per process, so a concurrent planner that finds it locked retries briefly and then plans
without the cache (:class:`CacheUnavailable`), never failing the plan and never corrupting the file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .histogram import Bucket, Histogram

SCHEMA_VERSION = 2
# v2 adds rows_per_query (the granularity the buckets were measured for); v1 rows are ignored.
_TABLE = "histograms_v2"


class CacheUnavailable(Exception):
    """The cache file could not be opened (locked by another process, unreadable, corrupt)."""


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/sparsesync/histograms.duckdb``, else ``~/.cache/sparsesync/histograms.duckdb``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparsesync" / "histograms.duckdb"


@dataclass(frozen=True)
class CacheKey:
    """What a cached histogram is valid for."""

    source: str  # SourceIdentity.cache_key(): no password
    table: str  # schema-qualified when a schema was given
    key: str
    schema_hash: str


@dataclass(frozen=True)
class CachedHistogram:
    """A histogram as stored, with when it was measured and how long that took."""

    histogram: Histogram
    measured_at: datetime
    seconds: float
    rows_per_query: int | None = None  # granularity the buckets were measured for; None: unknown

    def age_hours(self, now: datetime | None = None) -> float:
        now = now or datetime.now(timezone.utc)
        return (now - self.measured_at).total_seconds() / 3600


class HistogramCache:
    """Load and store histograms in one DuckDB file; every call opens and closes the file."""

    def __init__(self, path: str | os.PathLike | None = None, *, lock_retries: int = 5, retry_wait: float = 0.1) -> None:
        self.path = Path(path) if path else default_cache_path()
        self.lock_retries = lock_retries
        self.retry_wait = retry_wait
        self.notices: list[str] = []  # one-off events worth a warning in the plan (a file moved aside)
        self._moved = False

    def _move_aside(self, exc: Exception) -> bool:
        """Rename a file DuckDB cannot open to ``<name>.corrupt-<UTC time>`` once, so later plans start a
        fresh cache instead of warning forever; True when moved (the caller then retries)."""
        if self._moved or not self.path.is_file():
            return False
        aside = self.path.with_name(f"{self.path.name}.corrupt-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
        try:
            os.replace(self.path, aside)
            wal = self.path.with_name(self.path.name + ".wal")
            if wal.exists():
                os.replace(wal, aside.with_name(aside.name + ".wal"))
        except OSError:
            return False
        self._moved = True
        self.notices.append(
            f"histogram cache {self.path} could not be opened ({str(exc).splitlines()[0]}); moved aside to "
            f"{aside.name} and a new cache started"
        )
        return True

    def _connect(self):
        import duckdb

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheUnavailable(f"cannot create cache directory {self.path.parent}: {exc}") from exc
        last: Exception | None = None
        for attempt in range(self.lock_retries + 1):
            try:
                con = duckdb.connect(str(self.path))
                con.execute(
                    f"""CREATE TABLE IF NOT EXISTS {_TABLE} (
                        source VARCHAR, tbl VARCHAR, key_col VARCHAR, schema_hash VARCHAR,
                        method VARCHAR, exact BOOLEAN, unique_key BOOLEAN, width HUGEINT,
                        min_key HUGEINT, max_key HUGEINT, total_rows HUGEINT, queries INTEGER,
                        measured_at TIMESTAMPTZ, seconds DOUBLE,
                        lo HUGEINT[], hi HUGEINT[], cnt HUGEINT[], mn HUGEINT[], mx HUGEINT[], ex BOOLEAN[],
                        notes VARCHAR[], rows_per_query BIGINT,
                        PRIMARY KEY (source, tbl, key_col, schema_hash))"""
                )
                return con
            except Exception as exc:  # noqa: BLE001 - duckdb raises IOException on a held lock
                last = exc
                if "lock" not in str(exc).lower():  # corrupt or unreadable: waiting will not help
                    if self._move_aside(exc):
                        continue
                    break
                if attempt < self.lock_retries:
                    time.sleep(self.retry_wait * (attempt + 1))
        raise CacheUnavailable(f"histogram cache {self.path} unavailable: {str(last).splitlines()[0]}")

    def load(self, ck: CacheKey) -> CachedHistogram | None:
        """The cached histogram for ``ck``, or None."""
        con = self._connect()
        try:
            row = con.execute(
                f"""SELECT method, exact, unique_key, width::VARCHAR, min_key::VARCHAR, max_key::VARCHAR,
                       queries, measured_at, seconds, lo::VARCHAR[], hi::VARCHAR[], cnt::VARCHAR[],
                       mn::VARCHAR[], mx::VARCHAR[], ex, notes, rows_per_query
                    FROM {_TABLE} WHERE source = ? AND tbl = ? AND key_col = ? AND schema_hash = ?""",
                [ck.source, ck.table, ck.key, ck.schema_hash],
            ).fetchone()
        except Exception as exc:  # noqa: BLE001
            raise CacheUnavailable(f"histogram cache {self.path} unreadable: {str(exc).splitlines()[0]}") from exc
        finally:
            con.close()
        if row is None:
            return None
        method, exact, unique, width, mn_key, mx_key, queries, measured_at, seconds, lo, hi, cnt, mn, mx, ex, notes, rpq = row
        buckets = [
            Bucket(int(a), int(b), int(c), int(d), int(e), bool(f)) for a, b, c, d, e, f in zip(lo, hi, cnt, mn, mx, ex)
        ]
        hist = Histogram(
            method=method,
            buckets=buckets,
            min_key=None if mn_key is None else int(mn_key),
            max_key=None if mx_key is None else int(mx_key),
            total_rows=sum(b.count for b in buckets),
            width=None if width is None else int(width),
            queries=int(queries or 0),
            exact=bool(exact),
            notes=list(notes or []),
            unique_key=bool(unique),
        )
        if measured_at.tzinfo is None:
            measured_at = measured_at.replace(tzinfo=timezone.utc)
        return CachedHistogram(hist, measured_at, float(seconds or 0.0), None if rpq is None else int(rpq))

    def store(
        self, ck: CacheKey, hist: Histogram, *, seconds: float, measured_at: datetime | None = None,
        rows_per_query: int | None = None,
    ) -> None:
        """Insert or replace the histogram for ``ck`` (measured for ``rows_per_query``) in one transaction."""
        measured_at = measured_at or datetime.now(timezone.utc)
        b = hist.buckets

        def arr(values) -> list[str]:
            return [str(int(v)) for v in values]

        con = self._connect()
        try:
            con.execute("BEGIN")
            con.execute(
                f"DELETE FROM {_TABLE} WHERE source = ? AND tbl = ? AND key_col = ? AND schema_hash = ?",
                [ck.source, ck.table, ck.key, ck.schema_hash],
            )
            con.execute(
                f"""INSERT INTO {_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?::VARCHAR::HUGEINT, ?::VARCHAR::HUGEINT,
                    ?::VARCHAR::HUGEINT, ?::VARCHAR::HUGEINT, ?, ?, ?,
                    ?::VARCHAR[]::HUGEINT[], ?::VARCHAR[]::HUGEINT[], ?::VARCHAR[]::HUGEINT[],
                    ?::VARCHAR[]::HUGEINT[], ?::VARCHAR[]::HUGEINT[], ?::BOOLEAN[], ?::VARCHAR[], ?)""",
                [
                    ck.source, ck.table, ck.key, ck.schema_hash, hist.method, hist.exact, hist.unique_key,
                    None if hist.width is None else str(hist.width),
                    None if hist.min_key is None else str(hist.min_key),
                    None if hist.max_key is None else str(hist.max_key),
                    str(hist.total_rows), hist.queries, measured_at, float(seconds),
                    arr(x.lo for x in b), arr(x.hi for x in b), arr(x.count for x in b),
                    arr(x.min_key for x in b), arr(x.max_key for x in b), [bool(x.exact) for x in b],
                    list(hist.notes), rows_per_query,
                ],
            )
            con.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001
            try:
                con.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - nothing to roll back
                pass
            raise CacheUnavailable(f"histogram cache {self.path} not written: {str(exc).splitlines()[0]}") from exc
        finally:
            con.close()

    def entries(self) -> list[tuple[str, str, str, str, str, datetime]]:
        """(source, table, key, schema_hash, method, measured_at) of every cached histogram."""
        con = self._connect()
        try:
            return con.execute(
                f"SELECT source, tbl, key_col, schema_hash, method, measured_at FROM {_TABLE} ORDER BY 1, 2, 3"
            ).fetchall()
        finally:
            con.close()
