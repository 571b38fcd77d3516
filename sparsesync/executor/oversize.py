"""Values the generated Redshift table cannot hold: found while reading, not by the COPY after the export.

Every text/binary column's DDL type (``VARCHAR(n)`` / ``VARBYTE(n)`` from the plan, at most Redshift's
65,535 / 1,024,000 bytes) is a byte limit. Each batch's value lengths are measured in Arrow (no per-value
Python unless a value is over), the widest per column is kept for the report, and a value over its limit:

* ``fail`` (default) stops the run at the first one, naming table, column, key and size;
* ``truncate`` cuts it to the limit — on a UTF-8 character boundary for text — and counts it per column;
* ``keep`` writes it as it is and counts it; the report and ``copy.sql`` carry a warning.

A NUL byte inside a text value is a COPY failure in Redshift too (``VARCHAR`` cannot hold it), so the same
guard applies ``--nul`` to text columns (binary ``VARBYTE`` holds any byte), before the length check:

* ``fail`` (default) stops the run at the first one, naming table, column and key;
* ``strip`` removes the NUL bytes from the value and counts the values per column;
* ``keep`` writes it as it is and counts it; the report and ``copy.sql`` carry a warning.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
from sparsesync.lazy import lazy_module

from sparsesync.errors import UsageError, ValueConversionError

pc = lazy_module("pyarrow.compute")  # imported on first use: an empty table never needs it

OVERSIZE_MODES = ("fail", "truncate", "keep")
NUL_MODES = ("fail", "strip", "keep")
_DDL_LIMIT = re.compile(r"^\s*(VARCHAR|VARBYTE|CHAR|CHARACTER VARYING)\s*\(\s*(\d+)\s*\)\s*$", re.I)


def ddl_limit(redshift_type: str) -> int | None:
    """Bytes a value of ``redshift_type`` can hold (``VARCHAR(n)``/``VARBYTE(n)`` → n), else ``None``."""
    m = _DDL_LIMIT.match(redshift_type or "")
    return int(m.group(2)) if m else None


def check_mode(mode: str) -> str:
    """``mode`` if it is a known ``--oversize`` choice, else a one-line :class:`UsageError`."""
    if mode not in OVERSIZE_MODES:
        raise UsageError(f"--oversize must be one of {', '.join(OVERSIZE_MODES)}, got {mode!r}")
    return mode


def check_nul_mode(mode: str) -> str:
    """``mode`` if it is a known ``--nul`` choice, else a one-line :class:`UsageError`."""
    if mode not in NUL_MODES:
        raise UsageError(f"--nul must be one of {', '.join(NUL_MODES)}, got {mode!r}")
    return mode


def truncate_utf8(value: str, limit: int) -> str:
    """The longest prefix of ``value`` whose UTF-8 encoding fits ``limit`` bytes (never half a character)."""
    return value.encode("utf-8")[:limit].decode("utf-8", "ignore")


class OversizeGuard:
    """Checks (and in ``truncate`` mode fixes) one file group's batches; ``max_bytes``/``counts`` for the ledger."""

    def __init__(self, plan, mode: str = "fail", *, nul: str = "fail") -> None:
        self.plan = plan
        self.mode = check_mode(mode)
        self.nul = check_nul_mode(nul)
        self.table = plan.source.qualified_table
        names = [c.name for c in plan.columns]
        self.key_pos = names.index(plan.source.key) if plan.source.key in names else None
        self.columns: list[tuple[int, str, int | None, str]] = []
        for i, spec in enumerate(plan.columns):
            ty = spec.pa_type
            if pa.types.is_string(ty) or pa.types.is_binary(ty):
                self.columns.append((i, spec.name, ddl_limit(spec.redshift_type), spec.redshift_type))
        self.max_bytes: dict[str, int] = {}
        self.counts: dict[str, int] = {}  # values over the limit, truncated or kept
        self.nul_counts: dict[str, int] = {}  # text values holding a NUL byte, stripped or kept

    def apply(self, batch: pa.RecordBatch, key_range) -> pa.RecordBatch:
        """``batch`` checked against the DDL limits; in ``truncate`` mode with over-long values cut."""
        arrays = None
        for i, name, limit, ddl in self.columns:
            col = batch.column(i)
            if col.null_count == len(col):
                continue
            if pa.types.is_string(col.type):
                fixed = self._nul(col, batch, name, key_range)
                if fixed is not col:
                    arrays = arrays or list(batch.columns)
                    arrays[i] = col = fixed
            lengths = pc.binary_length(col)
            widest = pc.max(lengths).as_py() or 0
            if widest > self.max_bytes.get(name, -1):
                self.max_bytes[name] = widest
            if limit is None or widest <= limit:
                continue
            over = pc.fill_null(pc.greater(lengths, limit), False)
            if self.mode == "fail":
                j = over.index(True).as_py()
                key = batch.column(self.key_pos)[j].as_py() if self.key_pos is not None else f"row #{j}"
                raise ValueConversionError(
                    f"column {name!r}: a value of {lengths[j].as_py():,} bytes at key {key} does not fit {ddl} "
                    f"(Redshift holds at most {limit:,} bytes there); the COPY would reject it",
                    hint="pass --oversize truncate to cut such values (counted in the report) or --oversize keep "
                         "to export them as they are",
                    table=self.table, key_range=(key_range.lo, key_range.hi),
                )
            self.counts[name] = self.counts.get(name, 0) + int(pc.sum(over).as_py())
            if self.mode == "truncate":
                arrays = arrays or list(batch.columns)
                arrays[i] = _truncated(col, over, limit)
        if arrays is None:
            return batch
        return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)

    def _nul(self, col: pa.Array, batch: pa.RecordBatch, name: str, key_range) -> pa.Array:
        """``col`` after the ``--nul`` policy: the same array when no value holds a NUL byte (the common case,
        one vectorised search), else stripped (``strip``) or counted (``keep``); ``fail`` raises."""
        has = pc.fill_null(pc.match_substring(col, "\x00"), False)
        n = int(pc.sum(has).as_py() or 0)
        if not n:
            return col
        if self.nul == "fail":
            j = has.index(True).as_py()
            key = batch.column(self.key_pos)[j].as_py() if self.key_pos is not None else f"row #{j}"
            raise ValueConversionError(
                f"column {name!r}: the text value at key {key} holds a NUL byte (\\0), which Redshift's COPY "
                "rejects in a VARCHAR",
                hint="pass --nul strip to remove NUL bytes (counted in the report) or --nul keep to export them "
                     "as they are",
                table=self.table, key_range=(key_range.lo, key_range.hi),
            )
        self.nul_counts[name] = self.nul_counts.get(name, 0) + n
        if self.nul == "strip":
            return pc.replace_substring(col, "\x00", "")
        return col


def _truncated(col: pa.Array, over: pa.Array, limit: int) -> pa.Array:
    """``col`` with its values flagged in ``over`` cut to ``limit`` bytes (text on a character boundary)."""
    text = pa.types.is_string(col.type)
    values = col.to_pylist()
    for j, o in enumerate(over.to_pylist()):
        if not o:
            continue
        values[j] = truncate_utf8(values[j], limit) if text else values[j][:limit]
    return pa.array(values, type=col.type)


def summarize(groups, mode: str) -> dict:
    """The report's ``oversize`` section from the ledger's groups (this run's and resumed ones)."""
    max_bytes: dict[str, int] = {}
    counts: dict[str, int] = {}
    for g in groups:
        for k, v in (getattr(g, "max_bytes", None) or {}).items():
            max_bytes[k] = max(max_bytes.get(k, 0), int(v))
        for k, v in (getattr(g, "oversize", None) or {}).items():
            counts[k] = counts.get(k, 0) + int(v)
    return {"mode": mode, "max_bytes": max_bytes, "values": counts}


def summarize_nul(groups, mode: str) -> dict:
    """The report's ``oversize.nul`` section: ``--nul`` mode and text values with a NUL byte per column."""
    counts: dict[str, int] = {}
    for g in groups:
        for k, v in (getattr(g, "nul", None) or {}).items():
            counts[k] = counts.get(k, 0) + int(v)
    return {"mode": mode, "values": counts}


def nul_warning_lines(summary: dict) -> list[str]:
    """One line per column whose NUL bytes were stripped, or kept (the COPY will reject those rows)."""
    verb = "had their NUL bytes stripped" if summary["mode"] == "strip" else \
        "hold a NUL byte, which Redshift's COPY rejects"
    return [f"column {json.dumps(name, ensure_ascii=True)}: {n:,} text value(s) {verb}"
            for name, n in sorted(summary["values"].items())]


def warning_lines(plan, summary: dict) -> list[str]:
    """One line per column whose values the Redshift table cannot hold (``keep``) or that were cut."""
    limits = {c.name: (ddl_limit(c.redshift_type), c.redshift_type) for c in plan.columns}
    verb = "were truncated to fit" if summary["mode"] == "truncate" else "do not fit"
    out = []
    for name, n in sorted(summary["values"].items()):
        limit, ddl = limits.get(name, (None, "?"))
        # json.dumps: a column name can never break out of a SQL comment line (no raw newline survives).
        out.append(f"column {json.dumps(name, ensure_ascii=True)}: {n:,} value(s) {verb} {ddl} "
                   f"(widest {summary['max_bytes'].get(name, 0):,} bytes, limit {limit:,})")
    return out
