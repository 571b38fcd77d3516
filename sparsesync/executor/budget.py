"""Memory bounded by bytes: how ``--memory-limit`` becomes batch and row-group sizes, and how wide rows are.

A run holds, per worker, one reader batch in flight (twice over for pymysql: driver tuples and their Arrow
copy; a few batches for connectorx, which reads ahead), the writer's gathered row group and its encoding,
and the previous group's finishing work. What the interpreter, pyarrow, DuckDB and the drivers need is set
aside first (:data:`RESERVED_MB`), and for an S3 destination also the S3 client and every upload in flight
(:func:`s3_reserved_bytes`); the rest is split between workers.
Batch sizes follow the widest value seen so far per column, so a table of 100 KB rows is read in a few
hundred rows per batch and a table of narrow rows in ``batch_rows``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import pyarrow as pa
from sparsesync.lazy import lazy_module

pc = lazy_module("pyarrow.compute")  # imported on first use: an empty table never needs it

MiB = 1024 * 1024
RESERVED_MB = 192  # measured: `sparsesync execute` with every library loaded peaks near 170 MB on a tiny table
MIN_DATA = 32 * MiB
# An S3 destination on top of RESERVED_MB, measured with `sparsesync execute` on a 50-row table: 181 MB to a
# directory, 204 MB to S3 (boto3, botocore's S3 model and its connection pool).
S3_CLIENT_MB = 24
# One S3 request in flight: boto3 streams a staged file from disk (s3transfer's filename uploads never hold a
# part in memory, whatever multipart_chunksize is), botocore reads it in 1 MiB blocks for the SHA-256 and the
# checksum, urllib3 sends 16 KiB at a time. Measured 1.8-2.8 MB per concurrent request (32 MB PutObject,
# 200 MB multipart with 4 threads, one and two uploads at once).
S3_REQUEST_BYTES = 3 * MiB
S3_MAX_THREADS = 4  # requests per upload when the budget has room: more gains little on one part at a time
# Far below Arrow's 2 GiB limit of one string/binary array (32-bit offsets), so no batch ever reaches it.
MAX_BATCH_BYTES = 256 * MiB
# A value's size before any was seen, for types without a small declared bound (MEDIUM/LONG TEXT/BLOB, JSON).
UNBOUNDED_GUESS = 64 * 1024
# What one such value can really be: MySQL's max_allowed_packet default (pymysql fetches this many at most).
UNBOUNDED_MAX = 16 * MiB
# A column not seen yet and guessed at this many bytes or more is worth one probe of real widths (readers)
PROBE_MIN_GUESS = 4096

_BOUNDED = {"tinytext": 255, "tinyblob": 255, "text": 65535, "blob": 65535}
_SIZED = re.compile(r"^\s*(?:national\s+)?(?:n?var)?(?:char|binary|character(?:\s+varying)?)\s*\((\d+)\)", re.I)


def s3_reserved_bytes(uploads: int, threads: int) -> int:
    """Bytes an S3 destination needs besides the row data: its client, and ``uploads`` file uploads at once
    with ``threads`` requests each (see :data:`S3_REQUEST_BYTES`)."""
    return S3_CLIENT_MB * MiB + max(1, uploads) * max(1, threads) * S3_REQUEST_BYTES


@dataclass(frozen=True)
class MemoryBudget:
    """Byte sizes derived from a memory limit (MB) shared by ``workers`` parallel file groups.

    ``s3`` says the parts go to S3: each worker uploads its own parts, up to :attr:`uploads` of them at once,
    and the client and those uploads are reserved before the data is split, so a run to S3 gets smaller
    batches than one to a directory instead of going over the limit by the uploads. Upload threads
    (:attr:`upload_threads`) shrink before the data does when the limit is tight.
    """

    limit_mb: int = 512
    workers: int = 1
    s3: bool = False

    @property
    def uploads(self) -> int:
        """S3 uploads at once: two per worker, as a group's last part goes up on the finishing thread while a
        part of the next group, read meanwhile, may roll and go up too (executor.run ``serial``)."""
        return 2 * max(1, self.workers)

    @property
    def upload_threads(self) -> int:
        """Concurrent requests per S3 upload: :data:`S3_MAX_THREADS`, fewer where they would push a worker's
        data below :data:`MIN_DATA` (0 when the destination is not S3)."""
        if not self.s3:
            return 0
        for threads in range(S3_MAX_THREADS, 1, -1):
            if self._data_for(RESERVED_MB * MiB + s3_reserved_bytes(self.uploads, threads)) >= MIN_DATA:
                return threads
        return 1

    @property
    def reserved_bytes(self) -> int:
        """Bytes set aside before the row data: the libraries, and the S3 client and uploads when writing to S3."""
        extra = s3_reserved_bytes(self.uploads, self.upload_threads) if self.s3 else 0
        return RESERVED_MB * MiB + extra

    def _data_for(self, reserved: int) -> int:
        """Each worker's share of the limit once ``reserved`` bytes are set aside."""
        return (self.limit_mb * MiB - reserved) // max(1, self.workers)

    @property
    def data_bytes(self) -> int:
        """Bytes each worker may hold as row data (limit minus the reserve, split between workers)."""
        return max(MIN_DATA, self._data_for(self.reserved_bytes))

    @property
    def fits(self) -> bool:
        """Whether reserve and every worker's data add up to at most the limit (False only where
        :data:`MIN_DATA` had to be granted anyway: a small limit shared by many workers)."""
        return self.reserved_bytes + max(1, self.workers) * self.data_bytes <= self.limit_mb * MiB

    @property
    def batch_bytes(self) -> int:
        """Target Arrow bytes of one reader batch."""
        return max(MiB, min(MAX_BATCH_BYTES, self.data_bytes // 10))

    @property
    def row_group_bytes(self) -> int:
        """Arrow bytes the writer gathers before encoding one row group."""
        return max(MiB, self.data_bytes // 8)


def declared_max_bytes(spec) -> int | None:
    """Upper bound of one value's bytes from the declared MySQL type; ``None`` for fixed-width types."""
    t = spec.source_type.strip().lower()
    ty = spec.pa_type
    if not (pa.types.is_string(ty) or pa.types.is_binary(ty) or pa.types.is_large_string(ty)
            or pa.types.is_large_binary(ty)):
        return None
    m = _SIZED.match(t)
    if m:
        return int(m.group(1)) * (1 if "binary" in t else 4)
    name = t.split("(")[0].strip()
    if name in _BOUNDED:
        return _BOUNDED[name]
    if name.startswith(("enum", "set", "decimal", "numeric")):
        return 4 * len(t)
    return UNBOUNDED_MAX


class RowWidth:
    """Bytes per row of a plan's schema: fixed widths plus, per text/binary column, the widest value seen.

    Shared by the sessions of one reader (updates are max() of ints; a lost race only delays growth).
    """

    def __init__(self, plan) -> None:
        schema = plan.arrow_schema()
        self.var: list[int] = []
        self.fixed = 0
        self.declared: dict[int, int] = {}
        for i, (spec, f) in enumerate(zip(plan.columns, schema)):
            bound = declared_max_bytes(spec)
            if bound is None:
                self.fixed += max(1, (f.type.bit_width if _has_width(f.type) else 64) // 8)
            else:
                self.var.append(i)
                self.declared[i] = bound
        self.seen: dict[int, int] = {}
        self._lock = threading.Lock()

    def observe(self, batch: pa.RecordBatch) -> None:
        """Remember the widest value per text/binary column of ``batch``."""
        for i in self.var:
            col = batch.column(i)
            if col.null_count == len(col):
                continue
            widest = pc.max(pc.binary_length(col)).as_py() or 0
            if widest > self.seen.get(i, -1):
                with self._lock:
                    self.seen[i] = max(self.seen.get(i, 0), widest)

    def note(self, widths: dict[int, int]) -> None:
        """Remember widest values measured elsewhere (a probe query): column index → bytes."""
        with self._lock:
            for i, widest in widths.items():
                self.seen[i] = max(self.seen.get(i, 0), int(widest))

    def guessed(self, at_least: int = PROBE_MIN_GUESS) -> list[int]:
        """Text/binary columns not seen yet whose guessed width is ``at_least`` bytes: the ones that make a
        first batch small (an unbounded column is guessed at :data:`UNBOUNDED_GUESS`)."""
        return [i for i in self.var if i not in self.seen and min(self.declared[i], UNBOUNDED_GUESS) >= at_least]

    def estimate(self) -> int:
        """Bytes a row may take: twice the widest value seen per column, a guess before any was seen."""
        total = self.fixed
        for i in self.var:
            guess = min(self.declared[i], UNBOUNDED_GUESS)
            total += 2 * self.seen[i] if i in self.seen else guess
        return max(1, total)

    def worst(self) -> int:
        """Bytes a row can take at most by its declared types (unbounded text/binary: :data:`UNBOUNDED_MAX`)."""
        return max(1, self.fixed + sum(self.declared.values()))

    def rows_for(self, budget_bytes: int, max_rows: int) -> int:
        """Rows per batch so a batch stays near ``budget_bytes``."""
        return max(1, min(max_rows, budget_bytes // self.estimate()))


def _has_width(ty: pa.DataType) -> bool:
    try:
        return ty.bit_width > 0
    except ValueError:
        return False


def row_bytes(row, var: list[int], fixed: int) -> int:
    """Approximate bytes of one driver row: the fixed part plus the lengths of its text/binary values."""
    n = fixed
    for i in var:
        v = row[i]
        if v is not None:
            try:
                n += len(v)
            except TypeError:  # a value the driver hands over as an object (a Decimal for a DECIMAL as text)
                n += len(str(v))
    return n


def cut_by_bytes(fetch, width: RowWidth, budget_bytes: int, max_rows: int):
    """Group driver rows from ``fetch(n)`` into lists of about ``budget_bytes`` (and at most ``max_rows``).

    ``fetch`` is a DB-API ``fetchmany``; it is asked for at most as many rows as could fill the budget if
    every one were as wide as its declared types allow, so one fetch can never overshoot by much.
    """
    chunk = max(1, min(max_rows, budget_bytes // width.worst()))
    var, fixed = width.var, width.fixed
    rows: list = []
    size = 0
    while True:
        got = fetch(min(chunk, max_rows - len(rows)))
        if not got:
            break
        for row in got:
            size += row_bytes(row, var, fixed)
        rows.extend(got)
        if size >= budget_bytes or len(rows) >= max_rows:
            yield rows
            rows, size = [], 0
    if rows:
        yield rows
