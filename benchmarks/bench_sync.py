"""Incremental sync cost on a 1M-row MariaDB table (issue 9, acceptance 3).

(a) after 10k appends, one sync per detect mode: rows read (target ≤ 1.1× the new rows) and statements
    against the table counted on the server (general log, benchmarks.counters; target ≤ 5);
(b) after updating 1 % of the rows, all within the newest 5 % of keys: rows re-exported by ``checksum``
    and by ``cursor:updated_at`` (target ≤ 10 % of the table);
(c) scattered updates (1 % of rows, uniform over the keys): the checksum sync's time against a full
    export plus a checksum pass measured right before or after it in the same process (the order
    alternates per repetition; target ratio ≤ 1), and the checksum pass's server time against the full
    export's — paired per repetition.

Run:  .venv/bin/python -m benchmarks.bench_sync [--rows 1000000] [--repeat 3] [--rows-per-query 10000]
      [--file-size-mb 0.25]
The table ``bench_sync_*`` is created with MariaDB's sequence engine and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from sparsesync.bench.counters import QueryLog
from sparsesync.bench.harness import machine_info
from sparsesync.executor.dest import open_sink
from sparsesync.sync.detect import span_checksums
from sparsesync.sync.state import load_state, narrowed
from sparsesync.sync.table import SyncOptions, sync_table

DEFAULT_URL = os.environ.get("SPARSESYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

DDL = """CREATE TABLE {name} (
  id BIGINT NOT NULL PRIMARY KEY, a INT NOT NULL, c VARCHAR(32), d DECIMAL(12,2), f DATETIME, i VARCHAR(64),
  updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (updated_at)
) ENGINE=InnoDB"""
FILL = """INSERT INTO {name} (id, a, c, d, f, i, updated_at)
SELECT seq + {base}, MOD(seq, 100000), CONCAT('name-', MOD(seq, 9973)), MOD(seq, 1000000) / 100,
       '2024-01-01' + INTERVAL MOD(seq, 86400) SECOND, MD5(seq), {stamp}
FROM seq_1_to_{n}"""


def sync(url, table, dest, opts, log: QueryLog | None = None) -> dict:
    if log is not None:
        # Other processes' counters switch the global general log off when they finish: switch it on
        # again here and check it stayed on, else the count is not trusted.
        with log.engine.connect() as conn:
            conn.exec_driver_sql("SET GLOBAL general_log = 'ON'")
        log.mark()
    t0 = time.perf_counter()
    r = sync_table(url, table, dest, opts, raise_errors=True)
    out = {"seconds": time.perf_counter() - t0, "rows_read": r.rows_read, "kind": r.kind,
           "spans": r.spans_reexported, "rows_in_image": r.rows_in_image}
    if log is not None:
        # One scan of the (large, shared) general log; the same filter as QueryLog.count.
        stmts = log.statements(table)
        counted = [x for x in stmts if x.lstrip().lower().startswith(("select", "with"))
                   and "information_schema" not in x.lower()]
        out["queries"] = len(counted)
        with log.engine.connect() as conn:
            out["log_stayed_on"] = bool(int(conn.exec_driver_sql("SELECT @@GLOBAL.general_log").scalar()))
        out["statements"] = [x[:140] for x in counted]
    return out


def checksum_pass(engine, dest, table) -> float:
    """One server-side checksum pass over every span of the image (what --detect checksum runs)."""
    from sparsesync.planner.introspect import introspect

    st = load_state(open_sink(str(dest)), table)
    spans = [(p.lo, p.hi) for p in narrowed(st.parts) if not p.nulls]
    spans[-1] = (spans[-1][0], None)
    info = introspect(engine, table)
    t0 = time.perf_counter()
    span_checksums(engine, info, spans)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--appends", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows-per-query", type=int, default=10_000)
    ap.add_argument("--file-size-mb", type=float, default=0.25)
    ap.add_argument("--reader", default="auto")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    engine = sa.create_engine(args.url)
    table = f"bench_sync_{uuid.uuid4().hex[:8]}"
    rnd = random.Random(7)
    n = args.rows
    base = dict(rows_per_query=args.rows_per_query, file_size_mb=args.file_size_mb, reader=args.reader)
    caches = Path(tempfile.mkdtemp(prefix="bench-sync-cache-"))
    # One histogram cache per image, as separate jobs would have: each pays its own tail scan.
    modes = {m: SyncOptions(detect=m, cache_path=str(caches / f"{i}.duckdb"), **base)
             for i, m in enumerate(("none", "checksum", "cursor:updated_at"))}
    res: dict = {"machine": machine_info(), "rows": n, "options": base}
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(DDL.format(name=table))
            conn.exec_driver_sql(FILL.format(name=table, n=n, base=0, stamp="'2020-01-01' + INTERVAL seq SECOND"))
            conn.exec_driver_sql(f"ANALYZE TABLE {table}")
        dests = {m: tmp / m.replace(":", "_") for m in modes}
        res["first"] = {m: sync(args.url, table, dests[m], o) for m, o in modes.items()}
        st = load_state(open_sink(str(dests["checksum"])), table)
        res["parts"] = len(st.files)
        print(f"first sync: {res['first']['checksum']['rows_read']:,} rows, {res['parts']} parts, "
              f"{res['first']['checksum']['seconds']:.1f} s (checksum image)")

        # (a) appends
        with engine.begin() as conn:
            conn.exec_driver_sql(FILL.format(name=table, n=args.appends, base=n, stamp="NOW(6)"))
        with QueryLog(engine) as log:
            res["append"] = {m: sync(args.url, table, dests[m], o, log) for m, o in modes.items()}
        for m, r in res["append"].items():
            print(f"(a) {args.appends:,} appends, --detect {m}: read {r['rows_read']:,} rows "
                  f"({r['rows_read'] / args.appends:.3f}×), {r['queries']} statements against the table"
                  + ("" if r["log_stayed_on"] else " (general log switched off meanwhile: count not trusted)"))

        # (b) 1 % of rows updated within the newest 5 % of keys
        total = n + args.appends
        newest = list(range(total - total // 20 + 1, total + 1))
        ids = rnd.sample(newest, total // 100)
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {table} SET a = a + 1 WHERE id = :id"), [{"id": i} for i in ids])
        res["recent_updates"] = {m: sync(args.url, table, dests[m], modes[m]) for m in ("checksum", "cursor:updated_at")}
        for m, r in res["recent_updates"].items():
            print(f"(b) {len(ids):,} updates in the newest 5 % of keys, --detect {m}: re-exported "
                  f"{r['rows_read']:,} rows = {r['rows_read'] / total:.2%} of the table ({r['spans']} spans)")

        # (c) scattered updates: sync vs (full export + checksum pass), paired per repetition
        reps = []
        for rep in range(args.repeat):
            ids = rnd.sample(range(1, total + 1), total // 100)
            with engine.begin() as conn:
                conn.execute(sa.text(f"UPDATE {table} SET a = a + 1 WHERE id = :id"), [{"id": i} for i in ids])
            # Alternate which side runs first after the update (ABBA): the first pass over freshly updated
            # pages pays for InnoDB's purge of the update and a colder buffer pool, whoever runs it.
            sync_first = rep % 2 == 0
            if sync_first:
                s = sync(args.url, table, dests["checksum"], modes["checksum"])
            full = sync(args.url, table, tmp / f"full{rep}", modes["none"])
            ck = checksum_pass(engine, dests["checksum"], table)  # the spans the sync checks
            if not sync_first:
                s = sync(args.url, table, dests["checksum"], modes["checksum"])
            reps.append({"sync_s": s["seconds"], "sync_rows": s["rows_read"], "full_s": full["seconds"],
                         "checksum_s": ck, "ratio_sync_vs_full_plus_checksum": s["seconds"] / (full["seconds"] + ck),
                         "ratio_checksum_vs_full": ck / full["seconds"], "sync_first": sync_first})
            r = reps[-1]
            print(f"(c) rep {rep + 1} ({'sync first' if sync_first else 'full + checksum first'}): "
                  f"scattered-update sync {r['sync_s']:.2f} s ({r['sync_rows']:,} rows) vs full "
                  f"export {r['full_s']:.2f} s + checksum pass {r['checksum_s']:.2f} s → "
                  f"{r['ratio_sync_vs_full_plus_checksum']:.2f}; checksum/full {r['ratio_checksum_vs_full']:.2f}")
        res["scattered"] = reps
        med = lambda k: statistics.median(x[k] for x in reps)  # noqa: E731
        print(f"(c) median ratios: sync/(full+checksum) {med('ratio_sync_vs_full_plus_checksum'):.2f}, "
              f"checksum pass/full export {med('ratio_checksum_vs_full'):.2f}")
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, default=str))
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
