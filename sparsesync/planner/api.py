"""``make_plan``: the planner's one public entry point (introspect → pre-scan → partition → Plan)."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace
from datetime import datetime, timezone

from sqlalchemy.engine import Engine

from sparsesync import __version__
from sparsesync.errors import PlanError, UsageError
from sparsesync.logs import get_logger
from sparsesync.source import SourceIdentity, create_engine, identity_of

from . import partition as part
from .cache import CacheKey, CacheUnavailable, HistogramCache
from .histogram import Histogram, KeyTable, exact_histogram, min_max_count, resolve_outliers, tail_histogram
from .introspect import TableInfo, count_null_keys, introspect
from .plan import Estimates, Fingerprint, HistogramSummary, Plan, SourceInfo, Strategy, check_structure, validate_against_schema
from .typemap import TypeOptions

# Sparse detections (roadmap Phase 4); `monitoring.alert_on_sparse_detection: false` silences them.
_DETECTION_LOG = get_logger("sparsesync.detection")

DEFAULT_ROWS_PER_QUERY = 100_000
DEFAULT_FILE_SIZE_MB = 256
AUTO_EXACT_MAX_ROWS = 5_000_000
# Index entries the sampled pre-scan reads per planned range (levels × sub-intervals × samples, measured
# in benchmarks/bench_planner.py); ``auto`` samples only when that stays well under one scan.
SAMPLED_READS_PER_RANGE = 20_000
CACHE_WARN_AGE_HOURS = 24
# A cached histogram whose total differs from the engine's row count (TABLE_ROWS) by more than this
# factor, and by more than one range, is rescanned: rows changed inside [min, max] unseen by MIN/MAX.
CACHE_ROW_DRIFT = 1.5
MAX_GAPS_LISTED = 100  # the plan lists the widest gaps; histogram.gaps_total counts all

# Rough Parquet bytes per value when the engine gives no row length (SQLite): compressed ints are small,
# strings are whatever they are; this only sizes files, it never decides correctness.
_WIDTH_GUESS = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "double": 8, "float": 4, "bool": 1, "date32[day]": 4}


def source_identity(engine: Engine) -> SourceIdentity:
    """The source's identity for the cache key and the plan: a SQLite file by absolute, resolved path,
    so ``data.db`` in two directories are two sources and the plan executes from any directory."""
    ident = identity_of(engine.url)
    db = ident.database
    if ident.dialect == "sqlite" and db and db != ":memory:" and not db.startswith("file:"):
        ident = replace(ident, database=os.path.realpath(db))
    return ident


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
    use_cache: bool = True,
    spans: list[tuple[int, int | None]] | None = None,
    null_keys: bool = True,
) -> Plan:
    """Plan the export of ``table``: reads statistics and key aggregates only, never row data.

    The density histogram comes from the DuckDB cache (:mod:`sparsesync.planner.cache`, ``cache_path`` or the
    default location) when one exists for this source, table, key and schema hash and the table's
    MIN/MAX key still match; when only the max key grew, only the new tail is scanned. ``refresh``
    rescans; ``use_cache=False`` neither reads nor writes the cache. A locked or unreadable cache adds a
    warning to the plan and the plan is made without it. ``spans`` (sorted disjoint ``[lo, hi)``, the last
    open) keeps only the ranges inside those key spans, and the NULL-key range (in a file of its own) when
    ``null_keys`` (:func:`sparsesync.planner.spans.restrict_to_spans`; a sync run reads only what changed).
    """
    if rows_per_query < 1:
        raise UsageError(f"--rows-per-query must be a positive integer, got {rows_per_query}")
    if file_size < 1:
        raise UsageError(f"--file-size must be positive, got {file_size}")
    if density not in ("auto", "exact", "sampled"):
        raise UsageError(f"--density must be exact, sampled or auto, got {density!r}")
    if not 0 < sparse_threshold <= 1:
        raise UsageError(f"--sparse-threshold must be in (0, 1] rows per key, got {sparse_threshold}")
    engine = source if isinstance(source, Engine) else create_engine(source)
    try:
        info = introspect(engine, table, key=key, schema=schema, options=type_options)
        chosen, reason = choose_density(density, info, rows_per_query)
        kt = KeyTable(table=table, key=info.key, schema=schema, signed=info.key_signed)
        warnings: list[str] = []
        cache = HistogramCache(cache_path) if use_cache else None
        ck = CacheKey(
            source=source_identity(engine).cache_key(),
            table=f"{schema}.{table}" if schema else table,
            key=info.key,
            schema_hash=info.schema_hash,
        )
        with engine.connect() as conn:
            hist, from_cache, note = _histogram(
                conn, kt, info, chosen, rows_per_query=rows_per_query, cache=cache, ck=ck,
                refresh=refresh, warnings=warnings,
            )
            null_rows = count_null_keys(conn, table, info.key, schema) if _key_nullable(engine, info) else None
        if note:
            reason = f"{reason}; {note}"
        plan = build_plan(
            engine, info, kt, hist, chosen=hist.method, requested=density, reason=reason,
            rows_per_query=rows_per_query, file_size=file_size, sparse_threshold=sparse_threshold,
            from_cache=from_cache, warnings=warnings, null_rows=null_rows,
        )
        if spans is not None:
            from .spans import restrict_to_spans

            plan = restrict_to_spans(plan, spans, nulls=null_keys)
        return plan
    finally:
        if not isinstance(source, Engine):
            engine.dispose()


def _key_nullable(engine: Engine, info: TableInfo) -> bool:
    """Whether the key column can hold NULL (then the plan gets a ``key IS NULL`` range)."""
    spec = next(c for c in info.columns if c.name == info.key)
    if not spec.nullable:
        return False
    if engine.dialect.name == "sqlite" and spec.source_type.upper() == "INTEGER":
        # SQLite reports its rowid alias (INTEGER PRIMARY KEY) as nullable, but it never holds NULL.
        import sqlalchemy as sa

        pk = sa.inspect(engine).get_pk_constraint(info.table, info.schema).get("constrained_columns") or []
        return pk != [info.key]
    return True


def scan_histogram(conn, kt: KeyTable, info: TableInfo, method: str, *, rows_per_query: int, min_key=None, max_key=None) -> Histogram:
    """Run the ``exact`` or ``sampled`` pre-scan and list outlier keys."""
    from .sampled import sampled_histogram

    if method == "sampled":
        hist = sampled_histogram(
            conn, kt, rows_per_query=rows_per_query, unique_key=info.key_unique,
            min_key=min_key, max_key=max_key,
        )
    else:
        hist = exact_histogram(
            conn, kt, rows_per_query=rows_per_query, row_estimate=info.row_estimate, min_key=min_key, max_key=max_key,
            unique_key=info.key_unique,
        )
    return resolve_outliers(conn, kt, hist)


def _histogram(conn, kt, info, chosen, *, rows_per_query, cache, ck, refresh, warnings) -> tuple[Histogram, bool, str]:
    """The histogram from the cache (checked with one MIN/MAX probe) or from a scan; stores scans."""
    cached = None
    if cache is not None and not refresh:
        try:
            cached = cache.load(ck)
        except CacheUnavailable as exc:
            warnings.append(f"{exc}; planned without the cache")
            cache = None
    if cache is not None:
        warnings.extend(cache.notices)
        cache.notices.clear()
    note = ""
    if cached is not None:
        why = _cache_unusable(cached, chosen, rows_per_query, info)
        if why:
            cached, note = None, f"cached histogram not used: {why}, full rescan"
    min_key = max_key = None
    hist: Histogram | None = None
    if cached is not None:
        old = cached.histogram
        min_key, max_key, _ = min_max_count(conn, kt, count=False)
        if min_key == old.min_key and max_key == old.max_key:  # also: empty then, empty now
            hist = replace(old, queries=1, notes=list(old.notes))
            note = f"histogram from cache ({cache.path}), measured {cached.measured_at.isoformat(timespec='seconds')}"
            if cached.age_hours() > CACHE_WARN_AGE_HOURS:
                warnings.append(
                    f"histogram cache entry is {cached.age_hours():.0f} h old (measured "
                    f"{cached.measured_at.isoformat(timespec='seconds')}); pass --refresh to rescan"
                )
            hist = resolve_outliers(conn, kt, hist)
            return hist, True, note
        if min_key is not None and old.min_key == min_key and old.max_key is not None and max_key > old.max_key:
            t0 = time.perf_counter()
            hist = tail_histogram(conn, kt, old, max_key, rows_per_query=rows_per_query)
            hist = resolve_outliers(conn, kt, hist)
            hist.queries += 1
            note = f"cached histogram extended: only keys [{old.max_key + 1}, {max_key}] were scanned"
            _store(cache, ck, hist, time.perf_counter() - t0, warnings, rows_per_query)
            return hist, True, note
        note = "cached histogram discarded: the minimum key changed or the maximum shrank, full rescan"
    t0 = time.perf_counter()
    hist = scan_histogram(conn, kt, info, chosen, rows_per_query=rows_per_query, min_key=min_key, max_key=max_key)
    if min_key is not None:
        hist.queries += 1
    if cache is not None:
        _store(cache, ck, hist, time.perf_counter() - t0, warnings, rows_per_query)
    return hist, False, note


def _cache_unusable(cached, chosen: str, rows_per_query: int, info: TableInfo) -> str:
    """Why a cached histogram cannot answer this plan, or ``""``.

    Its buckets were sized for the ``rows_per_query`` it was measured with: at a finer one they may be
    too coarse to cut (ranges far above their estimate), so it is rescanned. And MIN/MAX cannot see rows
    added or deleted inside the key span, but the engine's row count can: beyond ``CACHE_ROW_DRIFT`` ×
    it rescans.
    """
    hist = cached.histogram
    if not (hist.method == chosen or hist.exact):
        return f"it is {hist.method} and {chosen} was asked for"
    if cached.rows_per_query is None or rows_per_query < cached.rows_per_query:
        was = "an unknown" if cached.rows_per_query is None else f"{cached.rows_per_query:,}"
        return f"its buckets were measured for {was} rows per query, finer ({rows_per_query:,}) asked for"
    est, had = info.row_estimate, hist.total_rows
    if est > 0 and abs(est - had) > rows_per_query and max(est, had) > CACHE_ROW_DRIFT * max(1, min(est, had)):
        return f"the engine counts ~{est:,} rows (TABLE_ROWS), the cached histogram {had:,}"
    return ""


def _store(cache, ck, hist, seconds, warnings, rows_per_query) -> None:
    try:
        cache.store(ck, hist, seconds=seconds, rows_per_query=rows_per_query)
    except CacheUnavailable as exc:
        warnings.append(f"{exc}; the plan is complete, the next one will rescan")


def choose_density(requested: str, info: TableInfo, rows_per_query: int = DEFAULT_ROWS_PER_QUERY) -> tuple[str, str]:
    """``auto``: exact (one index scan, cost ∝ rows) unless the table is large and sampling is cheaper.

    Sampling reads about ``SAMPLED_READS_PER_RANGE`` index entries per planned range, so at a small
    ``rows_per_query`` (many ranges) it reads as much as a scan and exact is chosen whatever the size.
    """
    if requested != "auto":
        return requested, f"requested --density {requested}"
    est = info.row_estimate
    sampled_reads = est // max(1, rows_per_query) * SAMPLED_READS_PER_RANGE
    if est > AUTO_EXACT_MAX_ROWS and sampled_reads * 4 <= est:
        return "sampled", (
            f"auto: ~{est:,} estimated rows > {AUTO_EXACT_MAX_ROWS:,} and ~{est // max(1, rows_per_query):,} ranges: "
            "sampling reads far fewer index entries than a scan"
        )
    if est > AUTO_EXACT_MAX_ROWS:
        return "exact", (
            f"auto: ~{est:,} estimated rows, but at --rows-per-query {rows_per_query:,} sampling would read about "
            "as many index entries as one exact scan"
        )
    return "exact", f"auto: ~{est:,} estimated rows ≤ {AUTO_EXACT_MAX_ROWS:,}, one exact index scan is cheap"


# InnoDB's AVG_ROW_LENGTH counts page fill and row headers; compressed Parquet of the same rows is several
# times smaller (0.125× on the 1M-row S3 benchmark table). 0.25 sizes files on the large side of the target
# rather than producing many small ones; it only groups ranges into files, never decides correctness.
PARQUET_TO_INNODB = 0.25


def bytes_per_row(info: TableInfo) -> tuple[float, str]:
    """Estimated Parquet bytes per row, and where the estimate came from."""
    if info.avg_row_bytes:
        return (
            float(info.avg_row_bytes) * PARQUET_TO_INNODB,
            f"information_schema.TABLES.AVG_ROW_LENGTH × {PARQUET_TO_INNODB} (InnoDB row → compressed Parquet)",
        )
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
    warnings: list[str] | None = None,
    null_rows: int | None = None,
) -> Plan:
    """Assemble the Plan from a histogram; pure apart from reading the clock.

    ``null_rows`` (a nullable key column's ``COUNT(*) … IS NULL``) adds the last range, ``key IS NULL``.
    """
    now = datetime.now(timezone.utc)
    domain_min, _ = kt.domain
    ranges = part.partition_ranges(hist, rows_per_query, domain_min=domain_min, sparse_threshold=sparse_threshold)
    if null_rows is not None:
        ranges = part.with_null_range(ranges, null_rows)
    bpr, bpr_source = bytes_per_row(info)
    files = part.group_files(ranges, bpr, file_size)
    total = sum(r.est_rows for r in ranges)
    ident = source_identity(engine)
    warnings = list(warnings or [])
    if hist.outliers:
        shown = ", ".join(str(k) for k in hist.outliers[:5]) + (" …" if len(hist.outliers) > 5 else "")
        warnings.append(f"{len(hist.outliers)} outlier key(s) far beyond the bulk of the keys: {shown}")
    if null_rows is not None:
        warnings.append(
            f"key column {info.key!r} is nullable: {null_rows:,} row(s) with a NULL key now; they (and any added "
            f"later) are read by the last range #{ranges[-1].index} (key IS NULL), in no key order"
        )
    if not info.key_unique:
        warnings.append(f"key {info.key!r} is not unique: a range may hold more than rows_per_query rows")
    heavy = [r for r in ranges if r.label == "heavy"]
    if heavy:
        shown = ", ".join(f"{r.heavy_key} ({r.est_rows:,} rows)" for r in heavy[:5]) + (" …" if len(heavy) > 5 else "")
        warnings.append(
            f"{len(heavy)} key value(s) hold more rows than --rows-per-query {rows_per_query:,} and get a range "
            f"each (label heavy): {shown}"
        )
    all_gaps = part.gaps(hist, max(rows_per_query, 10 * (hist.width or 1)))
    summary = HistogramSummary(
        method=hist.method,
        exact=hist.exact,
        buckets=len(hist.buckets),
        total_rows=hist.total_rows,
        bins=part.summary_bins(hist),
        sparse_regions=part.sparse_regions(hist, sparse_threshold),
        gaps=part.widest(all_gaps, MAX_GAPS_LISTED),
        gaps_total=len(all_gaps),
        outliers=tuple(hist.outliers),
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
            prescan_queries=hist.queries + (null_rows is not None),
            sparse_threshold=sparse_threshold,
            from_cache=from_cache,
        ),
        histogram=summary,
        ranges=ranges,
        files=files,
        estimates=Estimates(queries=len(ranges), rows=total, bytes=int(total * bpr), files=len(files)),
        warnings=tuple(warnings),
    )
    for region in plan.histogram.sparse_regions:  # roadmap Phase 4: sparse detections as events
        _DETECTION_LOG.info(
            "sparse_region", table=info.table, lo=region.lo, hi=region.hi, rows=region.rows,
            density=region.rows / max(1, region.hi - region.lo),
        )
    try:  # the executor refuses a plan that breaks the contract; never hand one out
        check_structure(plan)
    except ValueError as exc:
        raise PlanError(f"internal planner error, refusing to write an inconsistent plan: {exc}", table=info.table) from exc
    plan = plan.sealed()
    # The loader validates every plan against plans/schema.json; never hand out one it would refuse.
    validate_against_schema(plan.to_dict(), origin=f"internal planner error: the plan of {info.table}")
    return plan
