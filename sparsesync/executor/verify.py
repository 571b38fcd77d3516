"""Verify an export: compare the Parquet output with the SOURCE, per planned range, independently of the
export's reader.

For every range (the NULL-key range included) the source server computes ``COUNT(*)`` and an aggregate
checksum in SQL (:func:`sparsesync.executor.checksum.span_checksums`), and DuckDB computes the same checksum over
the Parquet parts (:func:`sparsesync.executor.checksum.parquet_span_checksums`). By default the checksum covers the
key only; ``all_columns`` covers every value (see :mod:`sparsesync.executor.checksum` for the canonical forms).
A range with fewer output rows is *missing* rows, one with more holds *duplicates*, equal counts with
different checksums *differ*.

Memory stays bounded: DuckDB scans the parts by row groups keeping one aggregate per range, and parts
on S3 are streamed to a private temporary file one at a time (never held in memory).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from sparsesync.planner.plan import Plan
from sparsesync.errors import DestinationError, VerifyError

from . import redshift
from .checksum import EMPTY_CHECKSUM, SpanChecksum, parquet_span_checksums, span_checksums, spans_of_plan
from .dest import is_local, open_sink


@dataclass
class RangeCheck:
    """One range compared: counts of source and output, and what differs."""

    index: int
    source_rows: int
    output_rows: int
    verdict: str  # ok | missing | duplicated | differ
    where: str = ""  # "[lo, hi)" or "key IS NULL"


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_output`."""

    plan_id: str
    table: str
    mode: str  # keys | all-columns
    files: int = 0
    source_rows: int = 0
    output_rows: int = 0
    ranges_checked: int = 0
    missing: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    differ: list[int] = field(default_factory=list)
    stray_files: list[str] = field(default_factory=list)
    stray_rows: int = 0  # output rows whose key lies in no planned range
    unplanned_null_rows: int = 0  # source rows with a NULL key that the plan (made before 1.1) has no range for
    problems: list[RangeCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.differ or self.stray_files or self.stray_rows
                    or self.unplanned_null_rows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        if self.ok:
            return (
                f"{self.table}: output matches the source ({self.mode}): {self.output_rows:,} rows in "
                f"{self.files} file(s), {self.ranges_checked} ranges"
            )
        where = {p.index: p.where for p in self.problems}
        parts = []
        if self.missing:
            parts.append(f"ranges missing rows: {_ids(self.missing, where)}")
        if self.duplicated:
            parts.append(f"ranges with duplicated rows: {_ids(self.duplicated, where)}")
        if self.differ:
            what = "values" if self.mode == "all-columns" else "keys"
            parts.append(f"ranges whose {what} differ: {_ids(self.differ, where)}")
        if self.stray_files:
            parts.append(f"files not in the manifest: {', '.join(self.stray_files[:5])}")
        if self.stray_rows:
            parts.append(f"{self.stray_rows:,} output row(s) in no planned range")
        if self.unplanned_null_rows:
            parts.append(f"{self.unplanned_null_rows:,} source row(s) with a NULL key are in no range of this plan "
                         "(re-plan: plans since format 1.1 read them)")
        return (
            f"{self.table}: output does NOT match the source ({self.source_rows:,} source rows, "
            f"{self.output_rows:,} output rows): " + "; ".join(parts)
        )


def _ids(xs: list[int], where: dict[int, str]) -> str:
    shown = ", ".join(f"#{i} {where.get(i, '')}".rstrip() for i in xs[:10])
    return shown + (f" (+{len(xs) - 10} more)" if len(xs) > 10 else "")


def verify_output(
    plan: Plan,
    dest,
    *,
    source_url: str | None = None,
    all_columns: bool = False,
    engine: Engine | None = None,
    reader: str | None = None,
    raise_on_mismatch: bool = True,
) -> VerifyReport:
    """Compare the finished output of ``plan`` in ``dest`` with the source, range by range.

    ``reader`` is accepted for compatibility and ignored: the source side is computed by the server.
    Raises :class:`VerifyError` naming the missing, duplicated or differing ranges (unless
    ``raise_on_mismatch`` is false, then the report says so).
    """
    sink = open_sink(dest)
    try:
        return _verify_in(sink, plan, source_url=source_url, all_columns=all_columns, engine=engine,
                          raise_on_mismatch=raise_on_mismatch)
    finally:
        # One we opened is ours to close (an S3 sink holds a client's connections and a staging dir);
        # a sink object the caller passed stays the caller's.
        close = getattr(sink, "close", None) if sink is not dest else None
        if close is not None:
            close()


def _verify_in(sink, plan: Plan, *, source_url, all_columns, engine, raise_on_mismatch) -> VerifyReport:
    from .run import connect_source, output_folder

    folder = output_folder(plan)
    data = sink.get_bytes(f"{folder}/{redshift.MANIFEST}")
    if data is None:  # nothing to compare yet: the destination lacks the run (exit 8), no mismatch (9)
        raise DestinationError(
            f"no finished run of plan {plan.plan_id} in {sink.url(folder)} (manifest.json missing)",
            hint="run `sparsesync execute` first (or let it resume)", table=plan.source.table,
        )
    try:
        entries = json.loads(data)["entries"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DestinationError("manifest.json is unreadable", hint="re-run `sparsesync execute --overwrite`",
                          table=plan.source.table, file=sink.url(f"{folder}/{redshift.MANIFEST}")) from exc
    report = VerifyReport(plan_id=plan.plan_id, table=plan.source.table, mode="all-columns" if all_columns else "keys")
    report.files = len(entries)
    rel_of = {sink.url(rel): rel for rel in sink.list(folder)}
    listed = {e["url"] for e in entries}
    report.stray_files = [url for url, rel in rel_of.items() if rel.endswith(".parquet") and url not in listed]
    spans = spans_of_plan(plan)
    columns = None if all_columns else [plan.source.key]

    own_engine = engine is None
    engine = engine or connect_source(plan, source_url)
    try:
        src = span_checksums(engine, plan, spans, columns=columns)
        extra = spans_of_plan(plan, unplanned=True)[len(spans):]
        if extra:
            report.unplanned_null_rows = span_checksums(engine, plan, extra, counts_only=True)[0].rows
    finally:
        if own_engine:
            engine.dispose()
    out, report.stray_rows = _output_checksums(plan, sink, entries, rel_of, spans, columns)

    for r, s, o in zip(plan.ranges, src, out):
        report.source_rows += s.rows
        report.output_rows += o.rows
        report.ranges_checked += 1
        if (s.rows, s.checksum) == (o.rows, o.checksum):
            continue
        verdict = "missing" if o.rows < s.rows else "duplicated" if o.rows > s.rows else "differ"
        getattr(report, verdict).append(r.index)
        report.problems.append(RangeCheck(r.index, s.rows, o.rows, verdict, r.describe()))
    if raise_on_mismatch and not report.ok:
        raise VerifyError(report.summary(), hint="re-run `sparsesync execute --overwrite`", table=plan.source.table)
    return report


def _output_checksums(plan, sink, entries, rel_of, spans, columns) -> tuple[list[SpanChecksum], int]:
    """DuckDB's checksums over every part of the manifest, one part at a time for remote parts."""
    import duckdb

    total = [SpanChecksum(sp, 0, EMPTY_CHECKSUM) for sp in spans]
    stray = 0
    con = duckdb.connect()
    tmp = None
    try:
        # DuckDB streams Parquet row groups; cap what it may hold so verify stays small next to an export.
        con.execute("SET memory_limit = '512MB'")
        con.execute("SET threads = 2")
        if is_local(sink):
            batches = [[e["url"] for e in entries]]
        else:
            tmp = Path(tempfile.mkdtemp(prefix="sparsesync-verify-"))  # 0700: private to this user
            batches = [[e["url"]] for e in entries]
        for urls in batches:
            if not urls:
                continue
            paths = urls if tmp is None else [_fetch(plan, sink, rel_of, urls[0], tmp / "part.parquet")]
            listing = "[" + ", ".join(redshift.sql_string(str(p), "duckdb") for p in paths) + "]"
            try:
                got, n = parquet_span_checksums(con, f"read_parquet({listing})", plan, spans, columns=columns)
            except duckdb.Error as exc:
                raise VerifyError(f"cannot read the output: {str(exc).splitlines()[0][:200]}",
                                  hint="re-run `sparsesync execute --overwrite`", table=plan.source.table,
                                  file=urls[0] if len(urls) == 1 else None) from exc
            total = [a.merge(b) for a, b in zip(total, got)]
            stray += n
            if tmp is not None:
                Path(paths[0]).unlink(missing_ok=True)
    finally:
        con.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return total, stray


def _fetch(plan: Plan, sink, rel_of: dict[str, str], url: str, path: Path) -> Path:
    """Stream one remote part to ``path`` in 1 MiB chunks: never the whole part in memory."""
    rel = rel_of.get(url)
    if rel is None:
        raise VerifyError("a part listed in the manifest is gone", hint="re-run `sparsesync execute --overwrite`",
                          table=plan.source.table, file=url)
    try:
        body = sink.client.get_object(Bucket=sink.bucket, Key=sink.key(rel))["Body"]
        with open(path, "wb") as f:
            for chunk in body.iter_chunks(1 << 20):
                f.write(chunk)
    except Exception as exc:  # noqa: BLE001 - botocore/S3 transfer errors: one line naming the part
        raise DestinationError(f"cannot download a part to verify it: {str(exc).splitlines()[0][:200]}",
                               hint="check the S3 credentials and that the object exists", table=plan.source.table,
                               file=url) from exc
    return path
