"""Streaming one file group into Parquet part(s) through a Sink.

Memory stays bounded by bytes: batches are gathered into row groups of at most ``row_group_bytes`` (and
``row_group_rows``) before pyarrow's ``ParquetWriter`` encodes them, and a part rolls over to the next
name (``part-00000-001.parquet``, …) before its bytes on disk plus what is pending would pass
``roll_bytes`` — the plan's ``--file-size`` — whatever the plan estimated. A part is written to the sink's staging path and committed (made visible) only when complete;
its sha256 is computed from the file bytes at close. Every part carries the plan's schema, even an empty
one, so a loader sees one schema for all files of a plan.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from sparsesync.lazy import lazy_module
import pyarrow.parquet as pq

from sparsesync.errors import DestinationError, SparsesyncError, UsageError

pc = lazy_module("pyarrow.compute")  # imported on first use: an empty table never needs it

COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")
DICT_SAMPLE_ROWS = 65536  # rows of a part's first row group that decide which columns get a dictionary


@dataclass(frozen=True)
class PartInfo:
    """A committed Parquet part: relative path, URL, size in bytes, rows, sha256 of the bytes."""

    relpath: str
    url: str
    size: int
    rows: int
    sha256: str


def part_relpath(relpath: str, n: int) -> str:
    """Deterministic name of the n-th part of a group: ``part-00000.parquet``, ``part-00000-001.parquet``, …"""
    if n == 0:
        return relpath
    head, tail = posixpath.split(relpath)
    stem, dot, ext = tail.rpartition(".")
    if not dot:
        stem, ext = tail, ""
    name = f"{stem}-{n:03d}" + (f".{ext}" if ext else "")
    return posixpath.join(head, name) if head else name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dictionary_columns(sample: pa.RecordBatch | pa.Table | None, max_ratio: float = 0.5) -> list[str] | bool:
    """Columns worth dictionary encoding, judged on the start of a part's first row group.

    Parquet writers try a dictionary for every column and fall back to plain encoding once the dictionary
    page overflows; for near-unique columns (keys, hashes, free text) that work is wasted in every row
    group and made the writer ~3× slower in our benchmark. Columns whose sample is mostly distinct get
    plain encoding from the start; the values written are the same either way.
    """
    if sample is None or sample.num_rows < 1000:
        return True
    keep = []
    for name, col in zip(sample.schema.names, sample.columns):
        valid = len(col) - col.null_count
        if valid == 0 or pc.count_distinct(col).as_py() <= max_ratio * valid:
            keep.append(name)
    return keep


class PartWriter:
    """Streams batches of one file group into one or more Parquet parts through a Sink."""

    def __init__(self, sink, relpath: str, schema: pa.Schema, *, compression: str = "zstd",
                 row_group_rows: int = 128 * 1024, roll_rows: int | None = None, roll_bytes: int | None = None,
                 row_group_bytes: int = 64 * 1024 * 1024) -> None:
        if compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compression!r}", hint=f"use one of {', '.join(COMPRESSIONS)}")
        for what, v in (("row_group_rows", row_group_rows), ("roll_rows", roll_rows), ("roll_bytes", roll_bytes),
                        ("row_group_bytes", row_group_bytes)):
            if v is not None and v < 1:
                raise UsageError(f"{what} must be at least 1, got {v}")
        self.sink = sink
        self.relpath = relpath
        self.schema = schema
        self.compression = None if compression == "none" else compression
        self.row_group_rows = row_group_rows
        self.roll_rows = roll_rows
        self.roll_bytes = roll_bytes
        self.row_group_bytes = row_group_bytes
        self._parts: list[PartInfo] = []
        self._writer: pq.ParquetWriter | None = None
        self._file: pa.NativeFile | None = None
        self._staging: Path | None = None
        self._rows = 0  # rows in the open part
        self._pending: list[pa.RecordBatch] = []  # small batches gathered into one row group
        self._pending_rows = 0
        self._pending_bytes = 0  # Arrow (uncompressed) bytes pending
        # Encoded / Arrow bytes of the row groups written so far: predicts what pending rows will take
        # on disk. 1.0 until measured (no compression assumed: the safe side for the size cap).
        self._bytes_in = 0
        self._bytes_out = 0
        self._closed = False

    @property
    def _ratio(self) -> float:
        return self._bytes_out / self._bytes_in if self._bytes_in else 1.0

    def _group_bytes(self) -> int:
        """Arrow bytes gathered before a row group is written: the memory cap, and an eighth of a part."""
        cap = self.row_group_bytes
        if self.roll_bytes is not None:
            cap = min(cap, max(1, int(self.roll_bytes / 8 / max(self._ratio, 1e-3))))
        return cap

    # -- the open part ------------------------------------------------------------------------------------------
    def _open(self) -> None:
        """Open the part's staging file; the Parquet encoder starts with its first row group (``_encoder``)."""
        rel = part_relpath(self.relpath, len(self._parts))
        self._staging = Path(self.sink.staging_path(rel))
        try:
            # Our own file handle: its position is the part's size so far, which decides the roll.
            self._file = pa.OSFile(str(self._staging), "wb")
        except OSError as exc:
            self._discard()
            raise DestinationError(f"cannot write {self._staging}: {exc}", file=rel) from exc
        self._rows = 0

    def _encoder(self, sample: pa.Table | None) -> pq.ParquetWriter:
        """The part's ParquetWriter, created for its first row group so the dictionary choice is judged on
        up to :data:`DICT_SAMPLE_ROWS` rows of it, not on a first batch that may hold a few hundred rows
        (readers start wide tables with small batches; a < 1000-row sample means dictionary everywhere,
        which made encoding ~1.5× slower on the issue-11 table)."""
        if self._writer is None:
            if sample is not None:
                sample = sample.slice(0, DICT_SAMPLE_ROWS)
            try:
                self._writer = pq.ParquetWriter(
                    self._file, self.schema, compression=self.compression,
                    coerce_timestamps="us", allow_truncated_timestamps=False,
                    write_statistics=True, use_dictionary=dictionary_columns(sample),
                )
            except (OSError, pa.ArrowException) as exc:
                raise DestinationError(f"cannot write {self._staging}: {exc}", file=self._staging.name) from exc
        return self._writer

    def _flush(self, full_groups_only: bool = False) -> None:
        """Write gathered batches as row groups of ``row_group_rows``; keep a remainder when asked."""
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        keep = table.num_rows % self.row_group_rows if full_groups_only else 0
        if keep:
            rest = table.slice(table.num_rows - keep)
            table = table.slice(0, table.num_rows - keep)
            self._pending = rest.to_batches()
            self._pending_rows = keep
            self._pending_bytes = rest.nbytes
        else:
            self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        before = self._file.tell()
        encoder = self._encoder(table)
        try:
            encoder.write_table(table, row_group_size=self.row_group_rows)
        except (OSError, pa.ArrowException) as exc:
            raise DestinationError(f"cannot write {self._staging}: {exc}", file=self._staging.name) from exc
        self._bytes_in += table.nbytes
        self._bytes_out += self._file.tell() - before

    def _commit_open(self) -> None:
        """Finish and commit the open part."""
        self._flush()
        rel = part_relpath(self.relpath, len(self._parts))
        try:
            self._encoder(None).close()  # an empty part still gets the schema
            self._file.close()
        except (OSError, pa.ArrowException) as exc:
            raise DestinationError(f"cannot write {self._staging}: {exc}", file=rel) from exc
        self._writer, self._file = None, None
        digest = _sha256(self._staging)
        committed = self.sink.commit(self._staging, rel)
        self._staging = None
        self._parts.append(PartInfo(rel, committed.url, committed.size, self._rows, digest))
        self._rows = 0

    def _discard(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        if self._staging is not None:
            with contextlib.suppress(Exception):
                self.sink.discard(self._staging)
            self._staging = None
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    # -- public ---------------------------------------------------------------------------------------------------
    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch (of exactly ``schema``); rolls to a new part past ``roll_rows`` or ``roll_bytes``."""
        if self._closed:
            raise UsageError("PartWriter.write after close/abort")
        if not batch.schema.equals(self.schema):
            raise DestinationError(
                "batch schema differs from the plan's schema",
                hint=f"got {batch.schema}, expected {self.schema}", file=self.relpath,
            )
        for piece in self._pieces(batch):
            n, nbytes = piece.num_rows, piece.nbytes
            if self._file is not None and self._rows and self._full_after(n, nbytes):
                self._commit_open()  # roll only when more rows follow: never an empty extra part
            if self._file is None:
                self._open()
            self._pending.append(piece)
            self._pending_rows += n
            self._pending_bytes += nbytes
            self._rows += n
            if self._pending_bytes >= self._group_bytes():
                self._flush()
            elif self._pending_rows >= self.row_group_rows:
                self._flush(full_groups_only=True)

    def _full_after(self, rows: int, nbytes: int) -> bool:
        """Would adding ``rows`` rows of ``nbytes`` Arrow bytes take the open part past a roll limit?"""
        if self.roll_rows is not None and self._rows + rows > self.roll_rows:
            return True
        if self.roll_bytes is None:
            return False
        on_disk = self._file.tell() + (self._pending_bytes + nbytes) * self._ratio
        return on_disk > self.roll_bytes

    def _pieces(self, batch: pa.RecordBatch):
        """Slices of ``batch`` small enough that a part can roll between them (by rows and by bytes)."""
        n = batch.num_rows
        if n == 0:
            return
        avg = max(1.0, batch.nbytes / n)
        step = max(1, int(self._group_bytes() / avg))
        offset = 0
        while offset < n:
            take = min(step, n - offset)
            if self.roll_rows is not None:
                room = self.roll_rows - self._rows
                take = min(take, room if room > 0 else self.roll_rows)
            yield batch.slice(offset, take) if (offset or take != n) else batch
            offset += take

    def close(self) -> list[PartInfo]:
        """Commit every part; an empty group yields one valid empty file with the schema."""
        if self._closed:
            return list(self._parts)
        try:
            if self._file is None and not self._parts:
                self._open()
            if self._file is not None:
                self._commit_open()
        except BaseException:
            self._discard()
            self._closed = True
            raise
        self._closed = True
        return list(self._parts)

    def abort(self) -> None:
        """Discard the open staging file; parts already committed by a roll are deleted too."""
        self._discard()
        for p in self._parts:
            with contextlib.suppress(Exception):
                self.sink.delete(p.relpath)
        self._parts = []
        self._closed = True

    @property
    def rows(self) -> int:
        """Rows written so far (all parts)."""
        return sum(p.rows for p in self._parts) + self._rows


__all__ = ["PartWriter", "PartInfo", "part_relpath", "COMPRESSIONS", "SparsesyncError"]
