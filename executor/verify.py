"""Verify an export: read the Parquet output back with DuckDB and compare it with the source, per range.

For every key range of the plan both sides yield ``(rows, sum(hash), xor(hash))`` — an
order-independent checksum. By default the hash is of the key alone (the source streams keys only);
``all_columns`` hashes each row's values instead (the source is read through the same reader as the
export, so values are compared after the same type conversion). A range with fewer output rows is
*missing* rows, one with more holds *duplicates*, equal counts with different checksums *differ*.

DuckDB computes the same ``hash()`` on both sides, so the comparison never depends on Python's hash
or on how a driver renders values.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from planner.plan import Plan
from sparsesync.errors import SourceError, VerifyError
from sparsesync.source import quoted_table, short_db_error

from . import redshift
from .dest import is_local, open_sink

_HUGE_HI = 2**100  # stands for +∞ of the open tail inside DuckDB's HUGEINT


@dataclass
class RangeCheck:
    """One range compared: counts and checksums of source and output."""

    index: int
    source_rows: int
    output_rows: int
    verdict: str  # ok | missing | duplicated | differ


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
    problems: list[RangeCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.differ or self.stray_files)

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
        parts = []
        if self.missing:
            parts.append(f"ranges missing rows: {_ids(self.missing)}")
        if self.duplicated:
            parts.append(f"ranges with duplicated rows: {_ids(self.duplicated)}")
        if self.differ:
            parts.append(f"ranges whose {'values' if self.mode == 'all-columns' else 'keys'} differ: {_ids(self.differ)}")
        if self.stray_files:
            parts.append(f"files not in the manifest: {', '.join(self.stray_files[:5])}")
        return (
            f"{self.table}: output does NOT match the source ({self.source_rows:,} source rows, "
            f"{self.output_rows:,} output rows): " + "; ".join(parts)
        )


def _ids(xs: list[int]) -> str:
    return ", ".join(f"#{i}" for i in xs[:10]) + (f" (+{len(xs) - 10} more)" if len(xs) > 10 else "")


def verify_output(
    plan: Plan,
    dest,
    *,
    source_url: str | None = None,
    all_columns: bool = False,
    engine: Engine | None = None,
    reader: str = "auto",
    raise_on_mismatch: bool = True,
) -> VerifyReport:
    """Compare the finished output of ``plan`` in ``dest`` with the source, range by range.

    Raises :class:`VerifyError` naming the missing, duplicated or differing ranges (unless
    ``raise_on_mismatch`` is false, then the report says so).
    """
    import duckdb

    from .run import connect_source, output_folder

    sink = open_sink(dest)
    folder = output_folder(plan)
    data = sink.get_bytes(f"{folder}/{redshift.MANIFEST}")
    if data is None:
        raise VerifyError(
            f"no finished run of plan {plan.plan_id} in {sink.url(folder)} (manifest.json missing)",
            hint="run `sparsesync execute` first (or let it resume)", table=plan.source.table,
        )
    entries = json.loads(data)["entries"]
    report = VerifyReport(plan_id=plan.plan_id, table=plan.source.table, mode="all-columns" if all_columns else "keys")
    report.files = len(entries)
    listed = {e["url"] for e in entries}
    report.stray_files = [
        sink.url(rel) for rel in sink.list(folder) if rel.endswith(".parquet") and sink.url(rel) not in listed
    ]
    own_engine = engine is None
    engine = engine or connect_source(plan, source_url)
    tmp = None
    try:
        if is_local(sink):
            paths = [e["url"] for e in entries]
        else:  # remote parts: download through the sink (no DuckDB credentials/endpoint setup needed)
            tmp = Path(tempfile.mkdtemp(prefix="sparsesync-verify-"))
            paths = []
            rel_of = {sink.url(rel): rel for rel in sink.list(folder)}
            for i, e in enumerate(entries):
                rel = rel_of.get(e["url"])
                blob = None if rel is None else sink.get_bytes(rel)
                if blob is None:
                    raise VerifyError("a part listed in the manifest is gone", table=plan.source.table, file=e["url"])
                p = tmp / f"part-{i:05d}.parquet"
                p.write_bytes(blob)
                paths.append(str(p))
        con = duckdb.connect()
        try:
            _ranges_table(con, plan)
            cols = [c.name for c in plan.columns]
            out = _output_sums(con, paths, plan.source.key, cols if all_columns else None)
            if all_columns:
                src = _source_sums_all(con, engine, plan, reader)
            else:
                src = _source_sums_keys(con, engine, plan)
        finally:
            con.close()
    finally:
        if own_engine:
            engine.dispose()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    for r in plan.ranges:
        s = src.get(r.index, (0, 0, 0))
        o = out.get(r.index, (0, 0, 0))
        report.source_rows += s[0]
        report.output_rows += o[0]
        report.ranges_checked += 1
        if s == o:
            continue
        verdict = "missing" if o[0] < s[0] else "duplicated" if o[0] > s[0] else "differ"
        getattr(report, verdict).append(r.index)
        report.problems.append(RangeCheck(r.index, s[0], o[0], verdict))
    if raise_on_mismatch and not report.ok:
        raise VerifyError(report.summary(), hint="re-run `sparsesync execute --overwrite`", table=plan.source.table)
    return report


def _ranges_table(con, plan: Plan) -> None:
    con.execute("CREATE TEMP TABLE ranges (idx INTEGER, lo HUGEINT, hi HUGEINT)")
    rows = [(r.index, str(r.lo), str(_HUGE_HI if r.hi is None else r.hi)) for r in plan.ranges]
    con.executemany("INSERT INTO ranges VALUES (?, CAST(? AS HUGEINT), CAST(? AS HUGEINT))", rows)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _hash_expr(key: str, cols: list[str] | None) -> str:
    if cols is None:
        return f"hash(CAST({_q(key)} AS HUGEINT))"
    return "hash(" + ", ".join(_q(c) for c in cols) + ")"


def _aggregate(con, relation_sql: str, key: str, cols: list[str] | None) -> dict[int, tuple[int, int, int]]:
    sql = (
        f"SELECT r.idx, count(*), CAST(sum(o.h) AS VARCHAR), CAST(bit_xor(o.h) AS VARCHAR) "
        f"FROM (SELECT CAST({_q(key)} AS HUGEINT) AS k, {_hash_expr(key, cols)} AS h FROM {relation_sql}) o "
        "JOIN ranges r ON o.k >= r.lo AND o.k < r.hi GROUP BY r.idx"
    )
    return {int(i): (int(n), int(s), int(x)) for i, n, s, x in con.execute(sql).fetchall()}


def _output_sums(con, paths: list[str], key: str, cols: list[str] | None) -> dict[int, tuple[int, int, int]]:
    if not paths:
        return {}
    listing = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    return _aggregate(con, f"read_parquet({listing})", key, cols)


def _key_array(keys: list[int]) -> pa.Array:
    # decimal128(38,0) holds every BIGINT and BIGINT UNSIGNED key; DuckDB casts it to HUGEINT exactly.
    return pa.array([Decimal(k) for k in keys], type=pa.decimal128(38, 0))


def _source_sums_keys(con, engine: Engine, plan: Plan) -> dict[int, tuple[int, int, int]]:
    """Stream the source's keys (one ordered query, key column only) into DuckDB and aggregate per range."""
    src = plan.source
    prep = engine.dialect.identifier_preparer
    table = quoted_table(engine.dialect, src.table, src.schema)
    key = prep.quote(src.key)
    con.execute(f"CREATE TEMP TABLE src_keys ({_q(src.key)} HUGEINT)")
    try:
        with engine.connect().execution_options(stream_results=True, yield_per=50_000) as conn:
            result = conn.execute(sa.text(f"SELECT {key} FROM {table}"))
            for chunk in result.partitions(50_000):
                arrow = pa.table({src.key: _key_array([int(row[0]) for row in chunk])})
                con.register("chunk", arrow)
                con.execute(f"INSERT INTO src_keys SELECT CAST({_q(src.key)} AS HUGEINT) FROM chunk")
                con.unregister("chunk")
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot read the source keys: {short_db_error(exc)}", table=src.table) from exc
    return _aggregate(con, "src_keys", src.key, None)


def _source_sums_all(con, engine: Engine, plan: Plan, reader_kind: str) -> dict[int, tuple[int, int, int]]:
    """Read every range through the export's reader and aggregate row hashes per range."""
    from .readers import make_reader

    cols = [c.name for c in plan.columns]
    sums: dict[int, tuple[int, int, int]] = {}
    rdr = make_reader(engine, plan, kind=reader_kind, snapshot=True)
    with rdr.session() as s:
        for r in plan.ranges:
            batches = [b for b in s.read_range(r) if b.num_rows]
            if not batches:
                continue
            con.register("chunk", pa.Table.from_batches(batches, schema=plan.arrow_schema()))
            got = _aggregate(con, "chunk", plan.source.key, cols)
            con.unregister("chunk")
            n, sm, x = got.get(r.index, (0, 0, 0))
            extra = sum(v[0] for k, v in got.items() if k != r.index)
            if extra:  # a reader returning keys outside the range it was asked for is a bug worth naming
                raise VerifyError(f"the reader returned {extra} rows outside range #{r.index}", table=plan.source.table)
            sums[r.index] = (n, sm, x)
    return sums
