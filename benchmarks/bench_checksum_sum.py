"""The span checksum's aggregate: ``SUM(h)`` modulo 2^64 (issue 16: identical rows no longer cancel) against the
``BIT_XOR(h)`` it replaced, paired on the same table in the same invocation.

Per repeat, in alternating order (so drift in machine load hits both alike), the same grouped statement as
:func:`sparsesync.executor.checksum.span_checksums` sends — one pass over the rows, the plan's ranges as
spans — with only the aggregate over ``h`` changed:

(b) key checksum (``verify``), (c) all-column checksum (``verify --all-columns``, ``sync --detect checksum``),
and DuckDB's all-column twin over the exported Parquet parts (``sum`` against ``bit_xor`` over the same ``h``).

Reported: the median of each and the median of the per-repeat ratios SUM / BIT_XOR.

Run:  .venv/bin/python -m benchmarks.bench_checksum_sum [--rows 1000000] [--repeat 3]
The table ``bench_cksum_*`` (the executor benchmark's 10 mixed columns) is dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bench_checksum import DEFAULT_URL, _machine, _timed
from benchmarks.bench_executor import drop_table, make_table


def server_statements(engine, plan, spans, columns, agg: str):
    """The grouped checksum statements of executor.checksum with ``agg`` (``SUM`` or ``BIT_XOR``) over ``h``."""
    from sparsesync.executor.checksum import _columns, _mysql_field, grouped_statements
    from sparsesync.source import text_name, text_table

    d = engine.dialect
    specs = _columns(plan, columns)
    row = "CONCAT_WS('|', " + ", ".join(_mysql_field(c, text_name(d, c.name)) for c in specs) + ")"
    h = f"CAST(CONV(SUBSTRING(MD5({row}), 1, 16), 16, 10) AS UNSIGNED)"
    qkey = text_name(d, plan.source.key)
    top = 2**63 - 1 if plan.source.key_signed else 2**64 - 1
    return [(f"SELECT {s.bucket}, COUNT(*), {agg}({h}) FROM {text_table(d, plan.source.table, plan.source.schema)} "
             f"WHERE {s.where} GROUP BY 1", s.params) for s in grouped_statements(qkey, spans, top)]


def run_server(engine, stmts) -> int:
    rows = 0
    with engine.connect() as conn:
        for sql, params in stmts:
            rows += sum(int(r[1]) for r in conn.execute(sa.text(sql), params))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/checksum-sum.md")
    args = ap.parse_args()

    import duckdb

    from sparsesync.executor.checksum import _register_duckdb, duckdb_row_hash, span_checksums, spans_of_plan
    from sparsesync.executor.run import execute_plan, output_folder
    from sparsesync.planner.api import make_plan

    engine = sa.create_engine(args.url)
    name = f"bench_cksum_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="sparsesync-bench-cksum-sum-"))
    keys = ("keys_sum", "keys_xor", "all_sum", "all_xor", "duckdb_sum", "duckdb_xor")
    times: dict[str, list[float]] = {k: [] for k in keys}
    started = dt.datetime.now(dt.timezone.utc)
    try:
        print(f"creating {name} with {args.rows:,} rows …", flush=True)
        make_table(engine, name, args.rows)
        plan = make_plan(engine, name, use_cache=False)
        spans = spans_of_plan(plan)
        stmts = {f"{c}_{a}": server_statements(engine, plan, spans, cols, agg)
                 for c, cols in (("keys", [plan.source.key]), ("all", None))
                 for a, agg in (("sum", "SUM"), ("xor", "BIT_XOR"))}
        # The benchmark's SUM statement is the one span_checksums sends: same per-span result.
        with engine.connect() as conn:
            sql, params = stmts["all_sum"][0]
            got = {int(r[0]): (int(r[1]), int(r[2]) % 2**64) for r in conn.execute(sa.text(sql), params)}
        ref = span_checksums(engine, plan, spans)
        assert all(got.get(i, (0, 0)) == (c.rows, int(c.checksum, 16)) for i, c in enumerate(ref))
        dest = tmp / "out"
        execute_plan(plan, str(dest), engine=engine, verify=False)
        parts = sorted(str(p) for p in (dest / output_folder(plan)).glob("*.parquet"))
        listing = "[" + ", ".join(f"'{p}'" for p in parts) + "]"
        con = duckdb.connect()
        _register_duckdb(con)
        h = duckdb_row_hash(list(plan.columns))

        def duck(agg):
            return lambda: con.execute(f"SELECT count(*), {agg}(h) FROM (SELECT {h} AS h FROM read_parquet({listing}))").fetchall()

        runs = {k: (lambda s=s: run_server(engine, s)) for k, s in stmts.items()}
        runs["duckdb_sum"], runs["duckdb_xor"] = duck("sum"), duck("bit_xor")
        for rep in range(args.repeat):
            order = list(keys) if rep % 2 == 0 else [k.replace("_sum", "_tmp").replace("_xor", "_sum").replace("_tmp", "_xor")
                                                   for k in keys]
            for what in order:
                t, _ = _timed(runs[what])
                times[what].append(t)
            print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        con.close()
    finally:
        drop_table(engine, name)
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {c: statistics.median([a / b for a, b in zip(times[f"{c}_sum"], times[f"{c}_xor"])])
             for c in ("keys", "all", "duckdb")}
    labels = {"keys": "(b) server key checksum (verify)", "all": "(c) server all-column checksum (verify --all-columns, sync --detect checksum)",
              "duckdb": "(d) DuckDB all-column twin over the Parquet parts"}
    lines = [
        "# Span checksum aggregate: SUM(h) mod 2^64 against BIT_XOR(h)",
        "",
        f"Command: `python -m benchmarks.bench_checksum_sum --rows {args.rows} --repeat {args.repeat}`  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC. Machine: {_machine()}; MariaDB on 127.0.0.1. The machine (2 vCPU) is "
        "shared with six other engineers' test runs: times are noisy; both aggregates run in the same invocation, "
        "alternating order per repeat, and the ratio is taken per repeat (median shown).",
        "",
        f"Table: {args.rows:,} rows, 10 columns (the executor benchmark's); plan of {len(plan.ranges)} ranges, the "
        "same grouped statement as `span_checksums` with only the aggregate changed (checked: the SUM statement "
        "returns exactly span_checksums' values).",
        "",
        "| what | SUM median s | BIT_XOR median s | SUM / BIT_XOR (median of per-repeat ratios) |",
        "|---|---|---|---|",
    ]
    for c in ("keys", "all", "duckdb"):
        lines.append(f"| {labels[c]} | {med[c + '_sum']:.2f} | {med[c + '_xor']:.2f} | {ratio[c]:.2f} |")
    lines += ["", "Per repeat (s): " + "; ".join(f"{k}: " + ", ".join(f"{x:.2f}" for x in v) for k, v in times.items())]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
