"""Deterministic benchmark tables with known key shapes, in MySQL/MariaDB and SQLite.

Each shape reproduces a key pattern seen in production (see the roadmap): ``dense`` auto-increment with
scattered deletes, ``uniform_sparse`` (a table fed by a shared global sequence, ~2 % density),
``prealert`` (dense head + long sparse tail, one key in ~500), ``bursty`` (dense clusters separated by
huge gaps), ``purged`` (dense with purged ranges), ``outliers`` (dense + a few keys near 2^63) and
``snowflake`` (64-bit time-ordered ids).

Keys are generated with numpy from gaps (``cumsum`` of random gaps), so generation is O(rows) whatever
the key span. Because the fixture builds its keys, it knows its TRUE sparse regions: half-open key
intervals whose density (rows per key) is below 0.10 by construction. Detection is scored against them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sparsesync.errors import SourceError, UsageError
from sparsesync.source import create_engine, is_mysql, short_db_error

SHAPES = ("dense", "uniform_sparse", "prealert", "bursty", "purged", "outliers", "snowflake")
SPARSE_THRESHOLD = 0.10
INT64_MAX = 2**63 - 1
STATUSES = ("new", "paid", "shipped", "cancelled", "refunded")
SNOWFLAKE_EPOCH_MS = 1_700_000_000_000  # 2023-11-14: keys land near 7.1e18, inside signed BIGINT
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut "
    "aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum "
    "dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui "
    "officia deserunt mollit anim id est laborum. Ünïcödé ✓ 日本語 "
) * 4


@dataclass(frozen=True)
class Fixture:
    """A generated key set and what is true about it.

    ``keys`` is a sorted int64 array of unique keys; ``sparse_truth`` lists half-open ``[lo, hi)``
    intervals (Python ints, ``hi`` may be 2^63) with density < 0.10 by construction. ``table`` is set
    once the rows are written to a database.
    """

    shape: str
    rows: int
    seed: int
    keys: np.ndarray = field(repr=False)
    sparse_truth: tuple[tuple[int, int], ...]
    table: str | None = None

    @property
    def min_key(self) -> int:
        return int(self.keys[0])

    @property
    def max_key(self) -> int:
        return int(self.keys[-1])

    def key_set(self) -> set[int]:
        """The exact set of keys as Python ints."""
        return set(int(k) for k in self.keys.tolist())


def _gaps_to_keys(start: int, gaps: np.ndarray) -> np.ndarray:
    return start + np.cumsum(gaps.astype(np.int64))


def _geometric_gaps(rng: np.random.Generator, density: float, n: int) -> np.ndarray:
    """Gaps ≥ 1 with mean 1/density: keys spaced like a sequence with (1 − density) of ids unused."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    return rng.geometric(min(1.0, density), size=n).astype(np.int64)


def generate(shape: str, rows: int, seed: int = 0) -> Fixture:
    """Keys and true sparse regions of ``shape`` with ``rows`` rows; the same seed gives the same keys."""
    if shape not in SHAPES:
        raise UsageError(f"unknown fixture shape {shape!r}", hint=f"choose one of: {', '.join(SHAPES)}")
    if rows < 10:
        raise UsageError(f"--rows must be at least 10, got {rows}")
    # The shape's name goes into the seed so two shapes with one seed are independent streams.
    rng = np.random.default_rng([seed, SHAPES.index(shape)])
    truth: list[tuple[int, int]] = []
    if shape == "dense":
        keys = _gaps_to_keys(0, _geometric_gaps(rng, 0.95, rows))
    elif shape == "uniform_sparse":
        keys = _gaps_to_keys(0, _geometric_gaps(rng, 0.02, rows))
        truth.append((int(keys[0]), int(keys[-1]) + 1))
    elif shape == "prealert":
        head_n = int(rows * 0.8)
        head = _gaps_to_keys(0, _geometric_gaps(rng, 0.97, head_n))
        # Tail: one key in ~500 (uniform gaps 250..750, so the tail never has a dense patch).
        tail = int(head[-1]) + np.cumsum(rng.integers(250, 751, size=rows - head_n, dtype=np.int64))
        keys = np.concatenate([head, tail])
        truth.append((int(head[-1]) + 1, int(keys[-1]) + 1))
    elif shape == "bursty":
        n_clusters = max(4, min(64, rows // 2000))
        sizes = np.full(n_clusters, rows // n_clusters, dtype=np.int64)
        sizes[: rows - int(sizes.sum())] += 1
        parts, pos = [], 0
        for i, size in enumerate(sizes):
            if i:
                pos += int(rng.integers(10**7, 10**9))  # the gap between bursts
            part = _gaps_to_keys(pos, _geometric_gaps(rng, 0.8, int(size)))
            parts.append(part)
            pos = int(part[-1])
        keys = np.concatenate(parts)
        truth = [(int(a[-1]) + 1, int(b[0])) for a, b in zip(parts, parts[1:])]
    elif shape == "purged":
        gaps = _geometric_gaps(rng, 0.97, rows)
        n_purges = max(2, min(20, rows // 5000))
        purge_len = max(2000, rows // 10)
        at = np.sort(rng.choice(np.arange(rows // 20, rows - rows // 20), size=n_purges, replace=False))
        gaps[at] += purge_len
        keys = _gaps_to_keys(0, gaps)
        truth = [(int(keys[i - 1]) + 1, int(keys[i])) for i in at.tolist()]
    elif shape == "outliers":
        dense = _gaps_to_keys(0, _geometric_gaps(rng, 0.97, rows - 2))
        keys = np.concatenate([dense, np.array([4 * 10**18, INT64_MAX], dtype=np.int64)])
        truth.append((int(dense[-1]) + 1, INT64_MAX + 1))
    else:  # snowflake: timestamp ms << 22 | worker << 12 | sequence
        ts = SNOWFLAKE_EPOCH_MS + np.cumsum(_geometric_gaps(rng, 0.05, rows))  # ~20 rows/s, strictly rising
        worker = rng.integers(0, 1024, size=rows, dtype=np.int64)
        seq = rng.integers(0, 4, size=rows, dtype=np.int64)
        keys = (ts << 22) | (worker << 12) | seq
        truth.append((int(keys[0]), int(keys[-1]) + 1))
    keys = np.asarray(keys, dtype=np.int64)
    return Fixture(shape=shape, rows=rows, seed=seed, keys=keys, sparse_truth=tuple(truth))


def _row_values(fx: Fixture, mysql: bool) -> list[tuple]:
    """Realistic columns derived from the seed: ints, decimals, datetimes, enums, JSON, text, NULLs."""
    rng = np.random.default_rng([fx.seed, 1000 + SHAPES.index(fx.shape)])
    n = fx.rows
    account = rng.integers(1, 100_000, size=n).tolist()
    cents = rng.integers(0, 100_000_000, size=n).tolist()
    amount_null = (rng.random(n) < 0.05).tolist()
    secs = np.sort(rng.integers(0, 3 * 365 * 86400, size=n)).tolist()
    dt_null = (rng.random(n) < 0.02).tolist()
    status = rng.integers(0, len(STATUSES), size=n).tolist()
    json_null = (rng.random(n) < 0.10).tolist()
    note_len = rng.integers(0, 300, size=n).tolist()
    note_off = rng.integers(0, 300, size=n).tolist()
    note_null = (rng.random(n) < 0.15).tolist()
    base = datetime(2022, 1, 1)
    out = []
    for i, k in enumerate(fx.keys.tolist()):
        c = cents[i]
        amount = None if amount_null[i] else f"{c // 100}.{c % 100:02d}"
        created = None if dt_null[i] else (base + timedelta(seconds=secs[i])).strftime("%Y-%m-%d %H:%M:%S")
        payload = None if json_null[i] else f'{{"n": {i}, "acct": {account[i]}, "tags": ["t{c % 7}", "x"], "ok": {"true" if c % 2 else "false"}}}'
        note = None if note_null[i] else _LOREM[note_off[i] : note_off[i] + note_len[i]]
        out.append((k, account[i], amount, created, STATUSES[status[i]], payload, note))
    return out


def _ddl(table: str, mysql: bool) -> str:
    if mysql:
        enum = ", ".join(f"'{s}'" for s in STATUSES)
        return (
            f"CREATE TABLE `{table}` (id BIGINT NOT NULL PRIMARY KEY, account_id INT NOT NULL, "
            f"amount DECIMAL(12,2) NULL, created_at DATETIME NULL, status ENUM({enum}) NOT NULL, "
            f"payload JSON NULL, note TEXT NULL) ENGINE=InnoDB"
        )
    return (
        f'CREATE TABLE "{table}" (id INTEGER NOT NULL PRIMARY KEY, account_id INTEGER NOT NULL, '
        f"amount DECIMAL(12,2), created_at DATETIME, status VARCHAR(16) NOT NULL, payload JSON, note TEXT)"
    )


def _log_off(conn, off: bool) -> bool:
    """``SET SESSION sql_log_off``; False when the account may not (then the INSERTs are just logged)."""
    try:
        conn.exec_driver_sql(f"SET SESSION sql_log_off = {1 if off else 0}")
        return True
    except sa.exc.DBAPIError:
        return False


def _engine(source: str | Engine) -> tuple[Engine, bool]:
    if isinstance(source, Engine):
        return source, False
    return create_engine(source), True


def default_table_name(shape: str, rows: int, seed: int) -> str:
    """``fx_<shape>_<rows>_s<seed>``: one name per distinct fixture."""
    return f"fx_{shape}_{rows}_s{seed}"


def create_fixture(
    source: str | Engine,
    shape: str,
    rows: int,
    *,
    seed: int = 0,
    table: str | None = None,
    replace: bool = True,
    batch: int = 5000,
) -> Fixture:
    """Generate ``shape`` and write it as ``table`` (dropped first when ``replace``); returns the Fixture.

    MySQL: multi-row INSERTs of ``batch`` rows (pymysql rewrites ``executemany`` into one statement per
    batch); SQLite: one transaction. On failure the half-written table is dropped.
    """
    fx = generate(shape, rows, seed)
    table = table or default_table_name(shape, rows, seed)
    if not _NAME_RE.match(table):
        raise UsageError(f"invalid table name {table!r}", hint="use letters, digits and _ (max 64)")
    engine, own = _engine(source)
    mysql = is_mysql(engine)
    q = (lambda s: f"`{s}`") if mysql else (lambda s: f'"{s}"')
    ph = ", ".join(["%s" if mysql else "?"] * 7)
    insert = f"INSERT INTO {q(table)} (id, account_id, amount, created_at, status, payload, note) VALUES ({ph})"
    try:
        values = _row_values(fx, mysql)
        with engine.begin() as conn:
            if replace:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(table)}")
            conn.exec_driver_sql(_ddl(table, mysql))
        try:
            with engine.begin() as conn:
                # Bulk INSERTs stay out of a general log a benchmark may have switched on (megabytes per
                # batch); reset before the pooled connection is reused.
                quiet = mysql and _log_off(conn, True)
                try:
                    for i in range(0, len(values), batch):
                        conn.exec_driver_sql(insert, values[i : i + batch])
                finally:
                    if quiet:
                        _log_off(conn, False)
            if mysql:
                with engine.begin() as conn:  # fresh statistics, as a production table would have
                    conn.exec_driver_sql(f"ANALYZE TABLE {q(table)}")
        except BaseException:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(table)}")
            raise
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"could not create fixture: {short_db_error(exc)}", table=table) from exc
    finally:
        if own:
            engine.dispose()
    return Fixture(fx.shape, fx.rows, fx.seed, fx.keys, fx.sparse_truth, table)


def drop_fixture(source: str | Engine, table: str) -> None:
    """Drop a fixture table if it exists."""
    if not _NAME_RE.match(table):
        raise UsageError(f"invalid table name {table!r}")
    engine, own = _engine(source)
    try:
        q = f"`{table}`" if is_mysql(engine) else f'"{table}"'
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q}")
    finally:
        if own:
            engine.dispose()


def density_outside(fx: Fixture, window: int) -> float:
    """Lowest density of any ``window``-key window lying wholly outside the truth regions (for tests)."""
    keys = fx.keys.astype(object) if fx.max_key > 2**62 else fx.keys
    worst = 1.0
    lo = fx.min_key
    bounds = sorted(fx.sparse_truth) + [(fx.max_key + 1, fx.max_key + 1)]
    for t_lo, t_hi in bounds:
        a = lo
        while a + window <= t_lo:
            n = int(np.searchsorted(keys, a + window, "left") - np.searchsorted(keys, a, "left"))
            worst = min(worst, n / window)
            a += window
        lo = max(lo, t_hi)
    return worst


def rows_in(fx: Fixture, lo: int, hi: int) -> int:
    """How many keys of the fixture lie in ``[lo, hi)``."""
    keys = fx.keys
    hi_c = min(hi, INT64_MAX + 1)
    a = int(np.searchsorted(keys, np.int64(max(lo, -(2**63))), "left"))
    b = len(keys) if hi_c > INT64_MAX else int(np.searchsorted(keys, np.int64(hi_c), "left"))
    return b - a
