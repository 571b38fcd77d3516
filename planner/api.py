"""``make_plan``: the planner's one public entry point (introspect → pre-scan → partition → Plan)."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from sqlalchemy.engine import Engine

from sparsesync import __version__
from sparsesync.errors import UsageError
from sparsesync.source import create_engine, identity_of

from . import partition as part
from .histogram import Histogram, KeyTable, exact_histogram
from .introspect import TableInfo, introspect
from .plan import Estimates, Fingerprint, HistogramSummary, Plan, SourceInfo, Strategy
from .typemap import TypeOptions

DEFAULT_ROWS_PER_QUERY = 100_000
DEFAULT_FILE_SIZE_MB = 256
AUTO_EXACT_MAX_ROWS = 5_000_000

# Rough Parquet bytes per value when the engine gives no row length (SQLite): compressed ints are small,
# strings are whatever they are; this only sizes files, it never decides correctness.
_WIDTH_GUESS = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "double": 8, "float": 4, "bool": 1, "date32[day]": 4}


def new_plan_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def make_plan(
    source: str | Engine,
    table: str,
    *,
    key: str | None = None,
    schema: str | None = None,
    rows_per_query: int = DEFAULT_ROWS_PER_QUERY,
    file_size: int = DEFAULT_FILE_SIZE_MB * 1024 * 1024,
    density: str = "auto",
    sparse_threshold: float = part.DEFAULT_SPARSE_THRESHOLD,
    type_options: TypeOptions = TypeOptions(),
    cache_path: str | None = None,
    refresh: bool = False,
) -> Plan:
    """Plan the export of ``table``: reads statistics and key aggregates only, never row data."""
    if rows_per_query < 1:
        raise UsageError(f"--rows-per-query must be a positive integer, got {rows_per_query}")
    if file_size < 1:
        raise UsageError(f"--file-size must be positive, got {file_size}")
    if density not in ("auto", "exact", "sampled"):
        raise UsageError(f"--density must be exact, sampled or auto, got {density!r}")
    engine = source if isinstance(source, Engine) else create_engine(source)
    try:
        info = introspect(engine, table, key=key, schema=schema, options=type_options)
        chosen, reason = choose_density(density, info)
        kt = KeyTable(table=table, key=info.key, schema=schema, signed=info.key_signed)
        with engine.connect() as conn:
            hist = exact_histogram(conn, kt, rows_per_query=rows_per_query, row_estimate=info.row_estimate)
        return build_plan(
            engine, info, kt, hist, chosen=chosen, requested=density, reason=reason,
            rows_per_query=rows_per_query, file_size=file_size, sparse_threshold=sparse_threshold,
        )
    finally:
        if not isinstance(source, Engine):
            engine.dispose()


def choose_density(requested: str, info: TableInfo) -> tuple[str, str]:
    """``auto`` picks exact up to a few million estimated rows (one index scan), sampled above."""
    if requested != "auto":
        return requested, f"requested --density {requested}"
    if info.row_estimate > AUTO_EXACT_MAX_ROWS:
        return "sampled", f"auto: ~{info.row_estimate:,} estimated rows > {AUTO_EXACT_MAX_ROWS:,}, sampling is cheaper than a scan"
    return "exact", f"auto: ~{info.row_estimate:,} estimated rows ≤ {AUTO_EXACT_MAX_ROWS:,}, one exact index scan is cheap"


def bytes_per_row(info: TableInfo) -> tuple[float, str]:
    if info.avg_row_bytes:
        return float(info.avg_row_bytes), "information_schema.TABLES.AVG_ROW_LENGTH"
    guess = sum(_WIDTH_GUESS.get(c.arrow_type, 32) for c in info.columns)
    return float(guess), "declared column types (no engine statistics)"


def build_plan(
    engine: Engine,
    info: TableInfo,
    kt: KeyTable,
    hist: Histogram,
    *,
    chosen: str,
    requested: str,
    reason: str,
    rows_per_query: int,
    file_size: int,
    sparse_threshold: float,
    from_cache: bool = False,
) -> Plan:
    """Assemble the Plan from a histogram; pure apart from reading the clock."""
    now = datetime.now(timezone.utc)
    domain_min, _ = kt.domain
    ranges = part.partition_ranges(hist, rows_per_query, domain_min=domain_min, sparse_threshold=sparse_threshold)
    bpr, bpr_source = bytes_per_row(info)
    files = part.group_files(ranges, bpr, file_size)
    total = sum(r.est_rows for r in ranges)
    ident = identity_of(engine.url)
    warnings = []
    if not info.key_unique:
        warnings.append(f"key {info.key!r} is not unique: a range may hold more than rows_per_query rows")
    summary = HistogramSummary(
        method=hist.method,
        exact=hist.exact,
        buckets=len(hist.buckets),
        total_rows=hist.total_rows,
        bins=part.summary_bins(hist),
        sparse_regions=part.sparse_regions(hist, sparse_threshold),
        gaps=part.gaps(hist, max(rows_per_query, 10 * (hist.width or 1))),
    )
    plan = Plan(
        plan_id=new_plan_id(now),
        created_at=now.isoformat(timespec="seconds"),
        tool_version=__version__,
        source=SourceInfo(
            dialect=ident.dialect,
            table=info.table,
            key=info.key,
            key_signed=info.key_signed,
            host=ident.host,
            port=ident.port,
            database=ident.database,
            schema=info.schema,
            username=ident.username,
        ),
        fingerprint=Fingerprint(
            schema_hash=info.schema_hash,
            min_key=hist.min_key,
            max_key=hist.max_key,
            row_estimate=total,
        ),
        columns=info.columns,
        strategy=Strategy(
            density=chosen,
            density_requested=requested,
            density_reason=reason,
            rows_per_query=rows_per_query,
            file_size=file_size,
            bytes_per_row=round(bpr, 2),
            bytes_per_row_source=bpr_source,
            bucket_width=hist.width,
            prescan_queries=hist.queries,
            sparse_threshold=sparse_threshold,
            from_cache=from_cache,
        ),
        histogram=summary,
        ranges=ranges,
        files=files,
        estimates=Estimates(queries=len(ranges), rows=total, bytes=int(total * bpr), files=len(files)),
        warnings=tuple(warnings),
    )
    return plan.sealed()
