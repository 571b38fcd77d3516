"""A small in-test model of a table image, written per the sync contract (real Parquet, real _state.json).

It stands in for ``sync_table`` where a test needs many runs fast: each :meth:`Image.sync` compares the
source (a dict key → value plus a list of NULL-key values) with the parts it holds, re-exports changed
parts as new parts, narrows the open tail to the rows it really holds and appends a new tail, exactly as
the contract describes runs. ``replaced`` spans are therefore unions of whole old parts.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MIN = -(2**63)
COLUMNS = [
    {"name": "id", "source_type": "bigint", "arrow_type": "int64", "redshift_type": "BIGINT", "nullable": True},
    {"name": "v", "source_type": "varchar(64)", "arrow_type": "string", "redshift_type": "VARCHAR(256)", "nullable": True},
]
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.string())])


def _in(k, lo, hi):
    return k >= lo and (hi is None or k < hi)


class Image:
    """Parts (dicts per the contract, plus the rows they hold in memory) under ``root/table``."""

    def __init__(self, root: Path, table: str = "orders", start: datetime | None = None, unsigned: bool = False) -> None:
        self.root, self.table = Path(root), table
        # BIGINT UNSIGNED keys are decimal128(20,0) / NUMERIC(20,0), as the type map has them.
        self.unsigned = unsigned
        self.columns = [dict(COLUMNS[0], source_type="bigint unsigned", arrow_type="decimal128(20, 0)",
                             redshift_type="NUMERIC(20,0)"), COLUMNS[1]] if unsigned else COLUMNS
        self.schema = pa.schema([pa.field("id", pa.decimal128(20, 0)), SCHEMA.field("v")]) if unsigned else SCHEMA
        self.parts: list[dict] = []
        self.runs: list[dict] = []
        self.sequence = 0
        self.clock = start or datetime(2026, 1, 1, tzinfo=timezone.utc)

    # -- writing ----------------------------------------------------------------------------------------
    def _part(self, run_id, n, lo, hi, rows, nulls=False) -> dict:
        entry = {"path": None, "lo": str(lo), "hi": None if hi is None else str(hi), "nulls": nulls,
                 "rows": len(rows), "bytes": 0, "checksum": "x", "run_id": run_id, "sequence": self.sequence,
                 "_rows": sorted(rows, key=lambda r: (r[0] is None, r[0] or 0, r[1]))}
        if rows:
            rel = f"{run_id}/part-{n:05d}.parquet"
            path = self.root / self.table / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            conv = (lambda k: None if k is None else Decimal(k)) if self.unsigned else (lambda k: k)
            rows_out = [{"id": conv(k), "v": v} for k, v in entry["_rows"]]
            pq.write_table(pa.Table.from_pylist(rows_out, schema=self.schema), path)
            entry["path"], entry["bytes"] = rel, path.stat().st_size
        return entry

    def sync(self, rows: dict, null_rows: list, *, detect: bool = True) -> dict:
        """One run against the source ``rows`` (key → value) and ``null_rows`` (values of NULL-key rows)."""
        self.sequence += 1
        self.clock += timedelta(minutes=10)
        run_id = f"{self.clock:%Y%m%dT%H%M%SZ}-{self.sequence:06d}"
        src = sorted(rows.items())
        nulls = sorted((None, v) for v in null_rows)
        new, replaced, null_replaced = [], [], False
        if not self.parts:
            kind = "first"
            top = src[-1][0] + 1 if src else MIN
            if src:
                new.append(self._part(run_id, 0, MIN, top, src))
            new.append(self._part(run_id, len(new), top, None, []))
            new.append(self._part(run_id, len(new), MIN, None, nulls, nulls=True))
            replaced, null_replaced, keep = [[str(MIN), None]], True, []
        else:
            kind, keep = "changed" if detect else "append", []
            for p in self.parts:
                lo, hi = int(p["lo"]), None if p["hi"] is None else int(p["hi"])
                if p["nulls"]:
                    now = nulls
                elif hi is None:  # the open tail: narrowed to what it holds; new keys above go to a new tail
                    held = [r for r in p["_rows"]]
                    top = max([k for k, _ in held] + [lo - 1])
                    now_tail = [(k, v) for k, v in src if _in(k, lo, top + 1)]
                    grown = [(k, v) for k, v in src if k > top]
                    narrowed = dict(p, hi=str(top + 1))
                    if detect and now_tail != held:
                        replaced.append([str(lo), str(top + 1)])
                        new.append(self._part(run_id, len(new), lo, top + 1, now_tail))
                    elif top + 1 > lo:
                        keep.append(narrowed)
                    ntop = (max(k for k, _ in grown) + 1) if grown else top + 1
                    if grown:
                        new.append(self._part(run_id, len(new), top + 1, ntop, grown))
                    new.append(self._part(run_id, len(new), ntop, None, []))
                    replaced.append([str(top + 1), None])
                    continue
                else:
                    now = [(k, v) for k, v in src if _in(k, lo, hi)]
                if detect and now != p["_rows"]:
                    if p["nulls"]:
                        null_replaced = True
                        new.append(self._part(run_id, len(new), MIN, None, now, nulls=True))
                    else:
                        replaced.append([p["lo"], p["hi"]])
                        new.append(self._part(run_id, len(new), lo, hi, now))
                else:
                    keep.append(p)
        self.parts = sorted(keep + new, key=lambda p: (p["nulls"], int(p["lo"])))
        run = {"run_id": run_id, "sequence": self.sequence, "kind": kind, "detect": "checksum" if detect else "none",
               "started_at": self.clock.isoformat(), "finished_at": self.clock.isoformat(),
               "rows": sum(p["rows"] for p in new), "bytes": sum(p["bytes"] for p in new),
               "replaced": replaced, "null_replaced": null_replaced,
               "manifest": f"{run_id}/manifest.json", "load_sql": f"{run_id}/load.sql"}
        self.runs.append(run)
        self._write(run, new)
        return run

    def _write(self, run: dict, new: list[dict]) -> None:
        folder = self.root / self.table / run["run_id"]
        folder.mkdir(parents=True, exist_ok=True)
        entries = [{"url": str((self.root / self.table / p["path"]).resolve()), "mandatory": True,
                    "meta": {"content_length": p["bytes"]}} for p in new if p["path"]]
        (folder / "manifest.json").write_text(json.dumps({"entries": entries}))
        (self.root / self.table / "_state.json").write_text(json.dumps(self.state()))

    def state(self) -> dict:
        """The contract's _state.json, hashed like the core's (planner.plan.content_hash)."""
        from sparsesync.planner.plan import content_hash

        body = {
            "format_version": "1.0", "table": self.table, "key": "id",
            "source": {"dialect": "mysql", "host": "h", "port": 3306, "database": "d", "table": self.table,
                       "key": "id", "username": "u"},
            "columns": self.columns, "schema_hash": "0" * 64, "sequence": self.sequence,
            "parts": [{k: v for k, v in p.items() if k != "_rows"} for p in self.parts],
            "runs": self.runs, "cursor": None,
        }
        return {**body, "sha256": content_hash(body)}

    def rows(self) -> list[tuple]:
        """Every row the image holds, sorted."""
        return sorted((r for p in self.parts for r in p["_rows"]), key=lambda r: (r[0] is None, r[0] or 0, r[1]))
