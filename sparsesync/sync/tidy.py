"""A tidy image: one file per span, and small parts merged at the destination as the image grows.

Two steps at the end of every sync run, after the export and before the image is swapped (both change
which files hold the rows, never a row: the warehouse needs nothing, see *Warehouse* below):

:func:`split_rolled` — **a span is never bigger than one file.** The writer rolls a file group into
``part-00000.parquet``, ``part-00000-001.parquet``, … once a file reaches ``--file-size``, whatever the plan
estimated. The files of a group hold consecutive key ranges in key order (each range is read ``ORDER BY``
key, ranges in key order), so the group becomes one part per file, cut at the next file's smallest key (its
Parquet footer statistics; the key column is read only when a footer has none). A non-unique key value
whose rows straddle two files keeps those two files in one part (its extra file in ``more``). The group's checksum was
measured for the whole group's span; each piece gets the checksum of its own content, computed with DuckDB
by :func:`sparsesync.executor.checksum.parquet_span_checksums`, the exact twin of the server's. A content
checksum is a correct audit value: the next detection compares the source with what the image really holds
(a write that landed during the export makes them differ, so the span is re-read — as with a checksum
measured before the export). The NULL-key rows are one span whatever their size: their part keeps its extra
files in ``more`` (images written before this step may also hold ``more`` elsewhere; they are read as before).

:func:`merge_small` — **small parts merged as the image grows.** The policy, on the keyed parts in key order
(never the NULL-key part, which stays apart):

1. A part without a file (a span with no rows: an empty open tail after a run with nothing new, a span whose
   rows were all deleted) is folded into its neighbour: the span grows, nothing is read or written, the
   neighbour's checksum stands (no rows are added to it; count, xor and sum of an empty set are neutral).
2. The image may hold at most ``cap = max(1, ⌊1.5 × ⌈image bytes / --file-size⌉⌋)`` keyed parts. Nothing is
   merged while the image is within the cap. When it holds more, the adjacent pair (of parts, or of groups
   already chosen for merging) with the **smallest combined size** is merged — preferring pairs that fit in
   one ``--file-size`` file, and never making a file over ``1.5 × --file-size`` — until the image is
   ``slack = max(1, ⌊cap / 4⌋)`` parts below the cap. The slack is what keeps appends cheap: the next
   ``slack`` appends add parts without merging, and the next merge then finds small parts side by side (small
   with small, as in a log-structured merge) instead of rewriting a full neighbour on every run.
3. Each chosen group of two or more files is rewritten AT THE DESTINATION from the parts themselves (no source
   read) as one new file in the run's folder, ``<table_folder>/<run_id>/part-NNNNN.parquet`` numbered after
   the run's own file groups and listed in no delta ``manifest.json`` (copy-on-write: the old files stay
   until ``gc``), streamed row group by row group through the executor's Parquet writer with the run's
   compression; its checksum is the content checksum of the merged rows (DuckDB, as for a split).

Why the bound holds: merging stops either within the cap, or when every adjacent pair sums to more than
``1.5 F`` (``F = --file-size``). In the second case ``n`` parts hold ``⌊n/2⌋`` disjoint pairs of more than
``1.5 F`` each, so ``B > ⌊n/2⌋ · 1.5 F``; with ``N = ⌈B/F⌉`` and ``n ≥ ⌊1.5 N⌋ + 1`` that gives ``B > N·F``
(checked for N = 1, 2 and ``1.125 N − 0.375 ≥ N`` beyond), a contradiction: the image always ends a run
with at most ``⌊1.5 ⌈B/F⌉⌋`` keyed parts (+ the NULL-key part).

What it costs per run: each merge writes one file of at most ``1.5 F`` (usually far less: the cheapest pair
goes first) and reads its inputs once; a run merges only when the image is over its cap, and then at most
(parts over the cap + slack) times, so a run rewrites at most ``(excess + slack) × 1.5 F`` bytes, and most
runs of an append stream rewrite nothing. ``benchmarks/results/tidy.md`` has the figures for 100 appends.

Warehouse: a merge or split changes no row and no run's ``replaced`` spans or delta manifest; a merged part
is in no run's delta (a lagging warehouse replays the runs' deltas, whose parts stay until ``gc``); a later run
that re-reads a merged span replaces the whole span in the warehouse, as for any span.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Sequence

from . import detect as det
from .state import Part

CAP_FACTOR = 1.5  # parts ≤ CAP_FACTOR × ⌈image bytes / --file-size⌉
MAX_MERGED = 1.5  # a merged file is at most MAX_MERGED × --file-size
MERGED_NAME = "part-{n:05d}.parquet"  # numbered after the run's own file groups (the image schema's file names)


@dataclass
class TidyStats:
    """What a run's tidy step did and what it cost."""

    groups_split: int = 0  # file groups that rolled into several files
    parts_from_splits: int = 0  # the parts they became
    parts_merged: int = 0  # parts (with a file) merged into others
    merged_into: int = 0  # the new files they became
    spans_folded: int = 0  # file-less parts folded into a neighbour
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    parts_after: int = 0  # keyed parts of the image after the run
    cap: int = 0  # the policy's bound for them

    def to_dict(self) -> dict:
        d = dict(vars(self))
        d["seconds"] = round(self.seconds, 3)
        return d

    @property
    def did_anything(self) -> bool:
        return bool(self.groups_split or self.parts_merged or self.spans_folded)

    def describe(self) -> str:
        """One line for the run's notes."""
        bits = []
        if self.groups_split:
            bits.append(f"{self.groups_split} rolled file group(s) split into {self.parts_from_splits} parts")
        if self.parts_merged:
            bits.append(f"{self.parts_merged} small parts merged into {self.merged_into}")
        if self.spans_folded:
            bits.append(f"{self.spans_folded} empty span(s) folded")
        return (f"tidy: {'; '.join(bits) or 'nothing to do'} ({self.bytes_read:,} B read, "
                f"{self.bytes_written:,} B written, {self.seconds:.2f} s; {self.parts_after} parts, cap {self.cap})")


def part_cap(image_bytes: int, file_size: int) -> int:
    """The policy's bound on the keyed parts of an image of ``image_bytes``: ``⌊1.5 × ⌈bytes / F⌉⌋``, ≥ 1."""
    n = -(-max(0, int(image_bytes)) // max(1, int(file_size)))
    return max(1, int(CAP_FACTOR * n))


# ---- reading parts ----------------------------------------------------------------------------------------
class _Files:
    """Local paths of image files: the file itself on a local sink, a private temporary copy from S3."""

    def __init__(self, sink, folder: str, stats: TidyStats) -> None:
        from sparsesync.executor.dest import is_local

        self.sink, self.folder, self.stats, self.local = sink, folder, stats, is_local(sink)
        self._tmp: str | None = None
        self._read: set[str] = set()

    def read(self, rel: str, nbytes: int) -> None:
        """Count a file's bytes as read by this step (once, however often it is used)."""
        if rel not in self._read:
            self._read.add(rel)
            self.stats.bytes_read += int(nbytes)

    def path(self, rel: str) -> str:
        from sparsesync.errors import DestinationError

        full = f"{self.folder}/{rel}"
        if self.local:
            return self.sink.url(full)
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="sparsesync-tidy-")  # 0700: private to this user
        local = os.path.join(self._tmp, rel.replace("/", "__"))
        if os.path.exists(local):
            return local
        try:  # streamed in 1 MiB chunks: never a whole part in memory
            body = self.sink.client.get_object(Bucket=self.sink.bucket, Key=self.sink.key(full))["Body"]
            n = 0
            with open(local, "wb") as fh:
                for chunk in body.iter_chunks(1 << 20):
                    fh.write(chunk)
                    n += len(chunk)
        except Exception as exc:  # noqa: BLE001 - botocore/S3 transfer errors: one line naming the part
            raise DestinationError(f"cannot download a part of the image: {str(exc).splitlines()[0][:200]}",
                                   file=self.sink.url(full),
                                   hint="check the S3 credentials and that the object exists") from exc
        self.read(rel, n)  # a download reads the whole file
        return local

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _key_bounds(path: str, key: str) -> tuple[int, int] | None:
    """``(min, max)`` of the key in a Parquet file, from its footer statistics (the key column if none)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    idx = pf.schema_arrow.get_field_index(key)
    if idx < 0 or pf.metadata.num_rows == 0:
        return None
    lo = hi = None
    for i in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(i).column(idx).statistics
        if st is None or not st.has_min_max:
            lo = hi = None
            break
        a, b = int(st.min), int(st.max)
        lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
    if lo is None:
        import pyarrow.compute as pc

        col = pf.read(columns=[key]).column(0)
        mm = pc.min_max(col).as_py()
        if mm["min"] is None:
            return None
        lo, hi = int(mm["min"]), int(mm["max"])
    return lo, hi


def _content_checksums(plan, paths: Sequence[str], spans) -> tuple[list, int]:
    """DuckDB's twin of the server checksum over ``paths`` for ``spans`` (one pass; ``(checksums, stray)``)."""
    import duckdb

    from sparsesync.executor.checksum import parquet_span_checksums

    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = '512MB'")
        con.execute("SET threads = 2")
        listing = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
        return parquet_span_checksums(con, f"read_parquet({listing})", plan, spans)
    finally:
        con.close()


# ---- 1. splits --------------------------------------------------------------------------------------------
def split_rolled(sink, folder: str, plan, parts: list[Part], stats: TidyStats | None = None) -> list[Part]:
    """Each keyed part whose file group rolled into several files becomes one part per file (module doc)."""
    from sparsesync.executor.checksum import Span

    stats = stats if stats is not None else TidyStats()
    t0 = time.monotonic()
    files = _Files(sink, folder, stats)
    out: list[Part] = []
    try:
        for p in parts:
            if p.nulls or not p.more or p.path is None:
                out.append(p)
                continue
            pieces = p.files
            paths = [files.path(f.path) for f in pieces]
            bounds = [_key_bounds(x, plan.source.key) for x in paths]
            runs = _runs(p, bounds)
            if runs is None:  # not consecutive key ranges (never expected): keep the group as it was written
                out.append(p)
                continue
            spans = [(p.lo if i == 0 else bounds[run[0]][0], p.hi if i == len(runs) - 1 else bounds[runs[i + 1][0]][0])
                     for i, run in enumerate(runs)]
            sums = [None] * len(runs)
            if p.checksum is not None:  # measured (--detect checksum): each piece's own content checksum
                got, stray = _content_checksums(plan, paths, [Span(lo, hi) for lo, hi in spans])
                for f in pieces:
                    files.read(f.path, f.bytes)
                if stray or [c.rows for c in got] != [sum(pieces[j].rows for j in run) for run in runs]:
                    out.append(p)
                    continue
                sums = [det.checksum_text(c.rows, c.checksum) for c in got]
            for i, (run, (lo, hi), c) in enumerate(zip(runs, spans, sums)):
                fs = [pieces[j] for j in run]
                out.append(Part(lo=lo, hi=hi, path=fs[0].path, rows=sum(f.rows for f in fs),
                                bytes=sum(f.bytes for f in fs), run_id=p.run_id, sequence=p.sequence, checksum=c,
                                read_hi=p.read_hi if i == len(runs) - 1 else None, more=tuple(fs[1:])))
            stats.groups_split += 1
            stats.parts_from_splits += len(runs)
    finally:
        files.close()
        stats.seconds += time.monotonic() - t0
    return out


def _runs(p: Part, bounds) -> list[list[int]] | None:
    """A group's files as runs of consecutive files, cut between two files where the next one's smallest key
    is above the last one's largest (a key value whose duplicates straddle two files keeps them together in
    one part). ``None`` when the files are not in key order or a key lies outside the group's span."""
    if any(b is None for b in bounds):
        return None
    if bounds[0][0] < p.lo or (p.hi is not None and bounds[-1][1] >= p.hi):
        return None
    runs = [[0]]
    for j in range(1, len(bounds)):
        if bounds[j][0] < bounds[j - 1][1]:
            return None
        if bounds[j][0] == bounds[j - 1][1]:
            runs[-1].append(j)
        else:
            runs.append([j])
    return runs


# ---- 2. merges --------------------------------------------------------------------------------------------
def slack(cap: int) -> int:
    """How far below the cap a run that has to merge goes: a quarter of it, at least one part."""
    return max(1, cap // 4)


def merge_plan(sizes: Sequence[int], file_size: int) -> list[list[int]]:
    """The policy of the module docstring on part sizes (bytes, 0 = no file), in key order: the groups of
    consecutive indices that become one part each."""
    groups: list[list[int]] = [[i] for i in range(len(sizes))]
    # 1. file-less parts join a neighbour (the left one, or the right one for the first)
    folded: list[list[int]] = []
    for g in groups:
        if sizes[g[0]] == 0 and folded:
            folded[-1].extend(g)
        elif folded and all(sizes[i] == 0 for i in folded[-1]):
            folded[-1].extend(g)
        else:
            folded.append(list(g))
    groups = folded
    total = sum(sizes)
    cap = part_cap(total, file_size)
    limit = MAX_MERGED * file_size

    def size(g):
        return sum(sizes[i] for i in g)

    # Over the cap: merge down to cap − slack, so the next appends find free slots and merge among themselves
    # (small with small) instead of each rewriting a big neighbour (an image that starts at its cap, e.g. a
    # first run's under-filled files, would otherwise rewrite about one file per append run).
    goal = max(1, cap - slack(cap)) if len(groups) > cap else cap
    while len(groups) > goal:
        best = None
        for j in range(len(groups) - 1):
            s = size(groups[j]) + size(groups[j + 1])
            if s > limit:
                continue
            rank = (s > file_size, s)  # pairs that fit one file first, then the smallest
            if best is None or rank < best[0]:
                best = (rank, j)
        if best is None:
            break
        j = best[1]
        groups[j:j + 2] = [groups[j] + groups[j + 1]]
    return groups


def merge_small(sink, folder: str, run_id: str, plan, parts: list[Part], *, file_size: int,
                compression: str = "zstd", sequence: int, stats: TidyStats | None = None) -> list[Part]:
    """The image's parts after the merge policy (module docstring); merged files go to ``<folder>/<run_id>/``."""
    stats = stats if stats is not None else TidyStats()
    t0 = time.monotonic()
    nulls = [p for p in parts if p.nulls]
    keyed = [p for p in parts if not p.nulls]
    groups = merge_plan([p.bytes if p.path else 0 for p in keyed], file_size)
    out: list[Part] = []
    files = _Files(sink, folder, stats)
    n = len(plan.files)  # the run's own parts are part-00000 … part-<groups − 1>
    try:
        for g in groups:
            members = [keyed[i] for i in g]
            if len(members) == 1:
                out.append(members[0])
                continue
            with_files = [p for p in members if p.path is not None]
            first, last = members[0], members[-1]
            span = dict(lo=first.lo, hi=last.hi, read_hi=last.read_hi)
            stats.spans_folded += len(members) - len(with_files)
            if len(with_files) <= 1:  # only file-less spans folded in: no file changes
                keep = with_files[0] if with_files else first
                out.append(replace(keep, **span, more=keep.more, rows=sum(p.rows for p in members),
                                   bytes=sum(p.bytes for p in members)))
                continue
            if any(p.more for p in with_files):  # an old multi-file part: left as it is
                out.extend(members)
                continue
            rel = f"{run_id}/{MERGED_NAME.format(n=n)}"
            n += 1
            merged = _rewrite(sink, folder, rel, plan, with_files, files, compression, stats,
                              checksum=all(p.checksum is not None for p in with_files), span=span)
            stats.parts_merged += len(with_files)
            stats.merged_into += 1
            out.append(replace(merged, run_id=run_id, sequence=sequence))
    finally:
        files.close()
        stats.seconds += time.monotonic() - t0
    stats.parts_after = len(out)
    stats.cap = part_cap(sum(p.bytes for p in out), file_size)
    return out + nulls


def _rewrite(sink, folder, rel, plan, members: list[Part], files: _Files, compression, stats, *, checksum: bool,
             span: dict) -> Part:
    """One new file holding every row of ``members`` (in key order), and its part."""
    import pyarrow.parquet as pq

    from sparsesync.errors import DestinationError
    from sparsesync.executor.checksum import Span
    from sparsesync.executor.writer import PartWriter

    paths = [files.path(p.path) for p in members]
    schemas = [pq.read_schema(x) for x in paths]
    if any(not s.remove_metadata().equals(schemas[0].remove_metadata()) for s in schemas[1:]):
        raise DestinationError("parts of one image have different Arrow schemas", file=sink.url(f"{folder}/{rel}"),
                               hint="re-sync the table with --full")
    schema = schemas[0]
    writer = PartWriter(sink, f"{folder}/{rel}", schema, compression=compression)
    try:
        for x in paths:
            pf = pq.ParquetFile(x)
            for batch in pf.iter_batches(batch_size=65536):
                writer.write(batch)
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    (info,) = written
    rows = sum(p.rows for p in members)
    for p in members:
        files.read(p.path, p.bytes)
    stats.bytes_written += info.size
    c = None
    if checksum:
        got, stray = _content_checksums(plan, paths, [Span(span["lo"], span["hi"])])
        c = det.checksum_text(got[0].rows, got[0].checksum)
        if stray or got[0].rows != rows or info.rows != rows:
            raise DestinationError(f"merging parts into {rel} counted {got[0].rows} rows, expected {rows}",
                                   file=sink.url(f"{folder}/{rel}"), hint="re-sync the table with --full")
    relpath = info.relpath[len(folder) + 1:] if info.relpath.startswith(folder + "/") else info.relpath
    return Part(lo=span["lo"], hi=span["hi"], path=relpath, rows=rows, bytes=info.size, run_id=members[0].run_id,
                sequence=members[0].sequence, checksum=c, read_hi=span["read_hi"])


__all__ = ["TidyStats", "split_rolled", "merge_small", "merge_plan", "part_cap", "slack"]
