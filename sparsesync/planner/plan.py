"""The plan: the one contract between planner and executor.

A plan is a frozen dataclass tree with ``to_json``/``from_json``. Integer keys are written as decimal
strings, because keys reach ±2^63 and 2^64−1 and most JSON readers (jq, JavaScript) silently round
numbers above 2^53. ``format_version`` is ``MAJOR.MINOR``: an unknown major is refused, unknown keys are
ignored (so a newer minor stays readable), and ``sha256`` over the canonical JSON detects hand edits.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyarrow costs ~0.3 s to import; `show` and `--help` never need it (issue 11)
    import pyarrow as pa

from sparsesync.atomic import write_atomic
from sparsesync.errors import PlanError
from sparsesync.naming import table_folder

FORMAT_VERSION = "1.1"  # 1.1: the NULL-key range ({"nulls": true}); 1.0 plans load unchanged
SUPPORTED_MAJOR = 1
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "plan.schema.json"  # plans/schema.json links here

RANGE_LABELS = ("dense", "sparse", "gap", "tail", "heavy", "nulls")


def _key_out(value: int | None) -> str | None:
    return None if value is None else str(int(value))


def _key_in(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a key must be an integer, not a boolean")
    return int(value)


@dataclass(frozen=True)
class SourceInfo:
    """Where the rows come from; never holds a password or token."""

    dialect: str
    table: str
    key: str
    key_signed: bool = True
    host: str | None = None
    port: int | None = None
    database: str | None = None
    schema: str | None = None
    username: str | None = None

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


@dataclass(frozen=True)
class Fingerprint:
    """What the source looked like at planning: drift is measured against this."""

    schema_hash: str
    min_key: int | None
    max_key: int | None
    row_estimate: int


@dataclass(frozen=True)
class ColumnSpec:
    """One column with its declared type and the types it maps to.

    ``conversion`` names a value transformation the reader must apply (e.g. ``time_us``, ``bit_int``,
    ``zero_date``); ``None`` means the value passes through as the Arrow type.
    """

    name: str
    source_type: str
    arrow_type: str
    redshift_type: str
    nullable: bool = True
    conversion: str | None = None

    @property
    def pa_type(self) -> pa.DataType:
        return arrow_type_from_string(self.arrow_type)


@dataclass(frozen=True)
class Strategy:
    """How the plan was made and with which parameters."""

    density: str  # exact | sampled
    density_requested: str  # exact | sampled | auto
    density_reason: str
    rows_per_query: int
    file_size: int  # bytes
    bytes_per_row: float
    bytes_per_row_source: str
    bucket_width: int | None = None
    prescan_queries: int = 0
    sparse_threshold: float = 0.10
    from_cache: bool = False
    # Set when the plan covers only some key spans (a sync run: changed spans + the new tail), as
    # decimal-string pairs [lo, hi|None]; empty means the whole key domain. See planner.spans.
    key_spans: tuple = ()


@dataclass(frozen=True)
class Region:
    """A stretch of key space ``[lo, hi)`` with the rows it holds."""

    lo: int
    hi: int
    rows: int


@dataclass(frozen=True)
class HistogramSummary:
    """A compact picture of the density pre-scan, enough for ``show`` without a database."""

    method: str
    exact: bool
    buckets: int
    total_rows: int
    bins: tuple[Region, ...] = ()
    sparse_regions: tuple[Region, ...] = ()
    gaps: tuple[Region, ...] = ()
    outliers: tuple[int, ...] = ()
    gaps_total: int | None = None  # gaps found; ``gaps`` lists the widest (None: a plan listing all)


@dataclass(frozen=True)
class KeyRange:
    """Half-open key range ``[lo, hi)``; ``hi is None`` is the open tail ``[lo, ∞)``.

    ``nulls`` marks the one range of the rows whose key is NULL (``lo`` and ``hi`` are then ``None``):
    a nullable key column gets it as the plan's last range, read with ``key IS NULL``.
    """

    index: int
    lo: int | None
    hi: int | None
    est_rows: int
    label: str
    exact: bool = False
    heavy_key: int | None = None  # label "heavy": the one key value holding more than rows_per_query rows
    nulls: bool = False

    def contains(self, key: int | None) -> bool:
        if self.nulls or key is None:
            return self.nulls and key is None
        return key >= self.lo and (self.hi is None or key < self.hi)

    def describe(self) -> str:
        """``[lo, hi)`` / ``[lo, ∞)`` / ``key IS NULL``, for messages."""
        if self.nulls:
            return "key IS NULL"
        return f"[{self.lo}, {'∞' if self.hi is None else self.hi})"


@dataclass(frozen=True)
class FileGroup:
    """One output file: consecutive whole ranges ``ranges[0]..ranges[1]`` inclusive."""

    index: int
    name: str
    first_range: int
    last_range: int
    est_rows: int
    est_bytes: int

    @property
    def range_indexes(self) -> range:
        return range(self.first_range, self.last_range + 1)


@dataclass(frozen=True)
class Estimates:
    queries: int
    rows: int
    bytes: int
    files: int


@dataclass(frozen=True)
class Plan:
    """A reviewable, hash-protected description of one table export."""

    plan_id: str
    created_at: str
    tool_version: str
    source: SourceInfo
    fingerprint: Fingerprint
    columns: tuple[ColumnSpec, ...]
    strategy: Strategy
    histogram: HistogramSummary
    ranges: tuple[KeyRange, ...]
    files: tuple[FileGroup, ...]
    estimates: Estimates
    warnings: tuple[str, ...] = ()
    format_version: str = FORMAT_VERSION
    sha256: str = field(default="", compare=False)

    # ---- derived -------------------------------------------------------------------------------
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema every output file of this plan has, derived from the declared types."""
        import pyarrow as pa

        return pa.schema([pa.field(c.name, c.pa_type, nullable=c.nullable) for c in self.columns])

    def ranges_of(self, group: FileGroup) -> tuple[KeyRange, ...]:
        return self.ranges[group.first_range : group.last_range + 1]

    @property
    def key_ranges(self) -> tuple[KeyRange, ...]:
        """The contiguous ``[lo, hi)`` ranges, without the NULL-key range."""
        return tuple(r for r in self.ranges if not r.nulls)

    @property
    def tail(self) -> KeyRange:
        """The open tail ``[planned_max + 1, ∞)``: the last key range."""
        return self.key_ranges[-1]

    @property
    def null_range(self) -> KeyRange | None:
        """The range of the rows whose key is NULL (nullable key columns only)."""
        last = self.ranges[-1]
        return last if last.nulls else None

    @property
    def planned_max(self) -> int | None:
        return self.fingerprint.max_key

    def default_filename(self) -> str:
        return f"{table_folder(self.source.table)}-{self.plan_id}.json"

    # ---- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict, including ``sha256`` computed over everything else."""
        body = self._body()
        body["sha256"] = content_hash(body)
        return body

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def sealed(self) -> "Plan":
        """A copy whose ``sha256`` field holds the hash of its content."""
        return replace(self, sha256=content_hash(self._body()))

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a half-written plan is never visible under its name."""
        return write_atomic(path, self.to_json())

    def _body(self) -> dict[str, Any]:
        src = asdict(self.source)
        fp = asdict(self.fingerprint)
        fp["min_key"] = _key_out(self.fingerprint.min_key)
        fp["max_key"] = _key_out(self.fingerprint.max_key)
        hist = {
            "method": self.histogram.method,
            "exact": self.histogram.exact,
            "buckets": self.histogram.buckets,
            "total_rows": self.histogram.total_rows,
            "bins": [_region_out(r) for r in self.histogram.bins],
            "sparse_regions": [_region_out(r) for r in self.histogram.sparse_regions],
            "gaps": [_region_out(r) for r in self.histogram.gaps],
            "outliers": [str(k) for k in self.histogram.outliers],
        }
        if self.histogram.gaps_total is not None:
            hist["gaps_total"] = self.histogram.gaps_total
        return {
            "format_version": self.format_version,
            "plan_id": self.plan_id,
            "created_at": self.created_at,
            "tool_version": self.tool_version,
            "source": src,
            "fingerprint": fp,
            "columns": [asdict(c) for c in self.columns],
            "strategy": {**asdict(self.strategy), "key_spans": [list(s) for s in self.strategy.key_spans]},
            "histogram": hist,
            "ranges": [_range_out(r) for r in self.ranges],
            "files": [
                {
                    "index": f.index,
                    "name": f.name,
                    "ranges": [f.first_range, f.last_range],
                    "est_rows": f.est_rows,
                    "est_bytes": f.est_bytes,
                }
                for f in self.files
            ],
            "estimates": asdict(self.estimates),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "plan") -> "Plan":
        """Check version, hash and schema, then build the plan; every failure is a :class:`PlanError`."""
        if not isinstance(data, dict):
            raise PlanError(f"{origin} is not a JSON object", hint="pass a file written by `sparsesync plan`")
        version = data.get("format_version")
        major = _major(version)
        if major is None:
            raise PlanError(
                f"{origin} has no valid format_version (found {version!r})",
                hint="pass a file written by `sparsesync plan`",
            )
        if major != SUPPORTED_MAJOR:
            raise PlanError(
                f"{origin} has format_version {version}, this sparsesync reads {SUPPORTED_MAJOR}.x only",
                hint="upgrade sparsesync, or re-plan with this version",
            )
        stored = data.get("sha256")
        if not isinstance(stored, str):
            raise PlanError(f"{origin} has no sha256", hint="re-create it with `sparsesync plan`")
        body = {k: v for k, v in data.items() if k != "sha256"}
        actual = content_hash(body)
        if actual != stored:
            raise PlanError(
                f"{origin} was edited after it was made (sha256 mismatch)",
                hint="plans are not to be edited by hand; re-plan with `sparsesync plan` and other options",
            )
        validate_against_schema(data, origin=origin)
        try:
            return cls._build(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{origin} is inconsistent: {exc}", hint="re-create it with `sparsesync plan`") from exc

    @classmethod
    def from_json(cls, text: str, *, origin: str = "plan") -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(
                f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                hint="pass a file written by `sparsesync plan`",
            ) from exc
        return cls.from_dict(data, origin=origin)

    @classmethod
    def _build(cls, d: dict[str, Any]) -> "Plan":
        src = _pick(SourceInfo, d["source"])
        fp = d["fingerprint"]
        fingerprint = Fingerprint(
            schema_hash=fp["schema_hash"],
            min_key=_key_in(fp.get("min_key")),
            max_key=_key_in(fp.get("max_key")),
            row_estimate=int(fp["row_estimate"]),
        )
        h = d["histogram"]
        histogram = HistogramSummary(
            method=h["method"],
            exact=bool(h["exact"]),
            buckets=int(h["buckets"]),
            total_rows=int(h["total_rows"]),
            bins=tuple(_region_in(r) for r in h.get("bins", ())),
            sparse_regions=tuple(_region_in(r) for r in h.get("sparse_regions", ())),
            gaps=tuple(_region_in(r) for r in h.get("gaps", ())),
            outliers=tuple(int(k) for k in h.get("outliers", ())),
            gaps_total=None if h.get("gaps_total") is None else int(h["gaps_total"]),
        )
        ranges = tuple(
            KeyRange(
                index=int(r["index"]),
                lo=_key_in(r["lo"]),
                hi=_key_in(r.get("hi")),
                est_rows=int(r["est_rows"]),
                label=r["label"],
                exact=bool(r.get("exact", False)),
                heavy_key=_key_in(r.get("heavy_key")),
                nulls=bool(r.get("nulls", False)),
            )
            for r in d["ranges"]
        )
        files = tuple(
            FileGroup(
                index=int(f["index"]),
                name=f["name"],
                first_range=int(f["ranges"][0]),
                last_range=int(f["ranges"][1]),
                est_rows=int(f["est_rows"]),
                est_bytes=int(f["est_bytes"]),
            )
            for f in d["files"]
        )
        plan = cls(
            plan_id=d["plan_id"],
            created_at=d["created_at"],
            tool_version=d["tool_version"],
            source=src,
            fingerprint=fingerprint,
            columns=tuple(_pick(ColumnSpec, c) for c in d["columns"]),
            strategy=_strategy_in(d["strategy"]),
            histogram=histogram,
            ranges=ranges,
            files=files,
            estimates=_pick(Estimates, d["estimates"]),
            warnings=tuple(d.get("warnings", ())),
            format_version=d["format_version"],
            sha256=d["sha256"],
        )
        check_structure(plan)
        return plan


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and check a plan file; a missing, malformed, edited or foreign file is a :class:`PlanError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PlanError(f"plan file {p} does not exist", hint="make one with `sparsesync plan`") from exc
    except IsADirectoryError as exc:
        raise PlanError(f"plan path {p} is a directory", hint="pass the plan's .json file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan file {p}: {exc}") from exc
    return Plan.from_json(text, origin=f"plan {p}")


def check_structure(plan: Plan) -> None:
    """Invariants the executor relies on: ranges contiguous and ordered, files cover ranges once."""
    for i, r in enumerate(plan.ranges):
        if r.index != i:
            raise ValueError(f"range {i} has index {r.index}")
        if r.nulls and (i != len(plan.ranges) - 1 or r.lo is not None or r.hi is not None):
            raise ValueError(f"range {i}: the NULL-key range must be the last range, with lo and hi null")
    rs = plan.key_ranges if plan.ranges else ()
    if not rs:
        raise ValueError("a plan needs at least the tail range")
    # A plan restricted to key spans (a sync run) skips the keys between its spans, nothing else:
    # within each span its ranges are contiguous from the span's lo to its hi.
    spans = [(int(lo), None if hi is None else int(hi)) for lo, hi in plan.strategy.key_spans]
    span_his = {hi for _, hi in spans}
    span_los = {lo for lo, _ in spans}
    for i, r in enumerate(rs):
        if r.lo is None:
            raise ValueError(f"range {i} has no lo")
        if r.hi is not None and r.hi <= r.lo:
            raise ValueError(f"range {i} is empty or reversed: [{r.lo}, {r.hi})")
        if i + 1 < len(rs) and r.hi != rs[i + 1].lo:
            if not (r.hi in span_his and rs[i + 1].lo in span_los and r.hi < rs[i + 1].lo):
                raise ValueError(f"ranges {i} and {i + 1} are not contiguous")
        if r.label == "heavy" and (r.heavy_key is None or not r.contains(r.heavy_key)):
            raise ValueError(f"heavy range {i} does not name a key value inside [{r.lo}, {r.hi})")
    if spans and sorted((r.lo for r in rs if r.lo in span_los)) != sorted(span_los) or (spans and rs[0].lo != spans[0][0]):
        raise ValueError("the ranges do not cover the plan's key spans")
    if rs[-1].hi is not None:
        raise ValueError("the last range must be the open tail (hi = null)")
    expected = 0
    for j, f in enumerate(plan.files):
        if f.index != j or f.first_range != expected or f.last_range < f.first_range:
            raise ValueError(f"file group {j} does not continue the ranges in order")
        expected = f.last_range + 1
    if expected != len(plan.ranges):
        raise ValueError("the file groups do not cover every range exactly once")
    names = [c.name for c in plan.columns]
    if plan.source.key not in names:
        raise ValueError(f"key column {plan.source.key!r} is not among the columns")
    for c in plan.columns:
        parse_arrow_type(c.arrow_type)


def canonical_json(obj: Any) -> str:
    """The byte-stable form hashed into ``sha256``: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def plan_schema() -> dict[str, Any]:
    """The JSON Schema in ``plans/schema.json``."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def first_violation(data: Any, schema: dict[str, Any]) -> str | None:
    """``"at <json/path>: <message>"`` for the most relevant violation of ``schema``, or None."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"at {where}: {error.message}"


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(plan_schema())


# Arrays that grow with the plan (10k ranges and more). jsonschema checks them item by item at
# ~0.1 ms each, so a large plan took seconds: jsonschema sees their first and last items, and every
# item goes through :func:`_check_items`, which reads its patterns and enums from the same schema.
_LONG_ARRAYS = (("ranges",), ("files",), ("histogram", "gaps"), ("histogram", "sparse_regions"), ("histogram", "bins"))


def validate_against_schema(data: dict[str, Any], *, origin: str = "plan") -> None:
    """Validate against ``plans/schema.json``; the first violation becomes one line with its JSON path."""
    import jsonschema

    trimmed = _trimmed(data)
    error = jsonschema.exceptions.best_match(_validator().iter_errors(trimmed))
    if error is None:
        where_msg = _check_items(data)
        if where_msg is None:
            return
        where, message = where_msg
    else:
        where, message = "/".join(str(p) for p in error.absolute_path) or "(top level)", error.message
    raise PlanError(
        f"{origin} does not match plans/schema.json at {where}: {message}",
        hint="re-create it with `sparsesync plan`",
    )


def _trimmed(data: Any) -> Any:
    """``data`` with each long array cut to its first and last two items (indexes stay meaningful
    for errors in the first items; the rest are checked by :func:`_check_items`)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for path in _LONG_ARRAYS:
        parent = out
        for part in path[:-1]:
            if not isinstance(parent.get(part), dict):
                parent = None
                break
            parent[part] = dict(parent[part])
            parent = parent[part]
        if parent is not None and isinstance(parent.get(path[-1]), list) and len(parent[path[-1]]) > 4:
            items = parent[path[-1]]
            parent[path[-1]] = items[:2] + items[-2:]
    return out


@lru_cache(maxsize=1)
def _item_rules() -> dict[str, Any]:
    schema = plan_schema()
    key = re.compile(schema["$defs"]["key"]["pattern"])
    rp = schema["properties"]["ranges"]["items"]["properties"]
    fp = schema["properties"]["files"]["items"]["properties"]
    return {"key": key, "labels": set(rp["label"]["enum"]), "name": re.compile(fp["name"]["pattern"])}


def _check_items(data: dict[str, Any]) -> tuple[str, str] | None:
    """Every item of the long arrays, against the schema's own key pattern, labels and file names."""
    rules = _item_rules()
    key = rules["key"]

    def is_key(v) -> bool:
        return isinstance(v, str) and key.match(v) is not None

    def is_count(v) -> bool:
        # JSON Schema's "integer" admits 2.0 (and from_dict int()s it); never a bool.
        if isinstance(v, float):
            return v.is_integer() and v >= 0
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    for i, r in enumerate(data.get("ranges") or ()):
        if not isinstance(r, dict) or not all(k in r for k in ("index", "lo", "hi", "est_rows", "label")):
            return f"ranges/{i}", "needs index, lo, hi, est_rows and label"
        # The schema's "properties", which hold on every range, then its if/then/else on nulls.
        if not (is_count(r["index"]) and is_count(r["est_rows"])):
            return f"ranges/{i}", "index and est_rows must be counts"
        if not all(r[b] is None or is_key(r[b]) for b in ("lo", "hi")):
            return f"ranges/{i}", "lo and hi must be decimal key strings or null"
        if not isinstance(r["label"], str) or r["label"] not in rules["labels"]:
            return f"ranges/{i}/label", f"{r['label']!r} is not one of {sorted(rules['labels'])}"
        if "nulls" in r and not isinstance(r["nulls"], bool):
            return f"ranges/{i}/nulls", "must be a boolean"
        if ("exact" in r and not isinstance(r["exact"], bool)) or ("heavy_key" in r and not is_key(r["heavy_key"])):
            return f"ranges/{i}", "exact must be a boolean and heavy_key a decimal key string"
        if r.get("nulls") is True:  # the NULL-key range: no bounds, its own label
            if r["lo"] is not None or r["hi"] is not None or r["label"] != "nulls":
                return f"ranges/{i}", "the NULL-key range has lo and hi null and label nulls"
        elif r["lo"] is None:
            return f"ranges/{i}/lo", "only the NULL-key range (nulls: true) has lo null"
        elif r["label"] == "nulls":
            return f"ranges/{i}/label", "label nulls needs nulls: true"
    for i, f in enumerate(data.get("files") or ()):
        if not isinstance(f, dict) or not all(k in f for k in ("index", "name", "ranges", "est_rows", "est_bytes")):
            return f"files/{i}", "needs index, name, ranges, est_rows and est_bytes"
        if not (isinstance(f["name"], str) and rules["name"].match(f["name"])):
            return f"files/{i}/name", f"{f['name']!r} does not match {rules['name'].pattern}"
        rr = f["ranges"]
        if not (isinstance(rr, list) and len(rr) == 2 and all(map(is_count, rr))):
            return f"files/{i}/ranges", "must be [first, last] range indexes"
        if not (is_count(f["index"]) and is_count(f["est_rows"]) and is_count(f["est_bytes"])):
            return f"files/{i}", "index, est_rows and est_bytes must be counts"
    hist = data.get("histogram") if isinstance(data.get("histogram"), dict) else {}
    for name in ("gaps", "sparse_regions", "bins"):
        for i, reg in enumerate(hist.get(name) or ()):
            if not (isinstance(reg, list) and len(reg) == 3 and is_key(reg[0]) and is_key(reg[1]) and is_count(reg[2])):
                return f"histogram/{name}/{i}", "must be [lo, hi, rows] with decimal key strings and a count"
    return None


# ---- Arrow type strings ---------------------------------------------------------------------------
# Plan type strings -> pyarrow constructor names (looked up at use: pyarrow is imported lazily).
_SIMPLE_TYPES = {
    "bool": "bool_", "float": "float32", "double": "float64", "date32[day]": "date32",
    **{name: name for name in (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "string", "large_string", "binary", "large_binary",
    )},
}
_DECIMAL = re.compile(r"^decimal(128|256)\((\d+), ?(-?\d+)\)$")
_TEMPORAL = re.compile(r"^(timestamp|duration|time64)\[(s|ms|us|ns)(?:, tz=([^\]]+))?\]$")


def parse_arrow_type(text: str) -> tuple[str, tuple[Any, ...]]:
    """``(pyarrow constructor name, args)`` for a plan type string; ValueError if unsupported.

    Pure syntax, no pyarrow: loading a plan checks its types this way, so ``show`` stays light.
    """
    if text in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[text], ()
    m = _DECIMAL.match(text)
    if m:
        return f"decimal{m.group(1)}", (int(m.group(2)), int(m.group(3)))
    m = _TEMPORAL.match(text)
    if m:
        kind, unit, tz = m.groups()
        if kind == "timestamp":
            return "timestamp", (unit, tz)
        if not tz:
            return kind, (unit,)
    raise ValueError(f"unsupported Arrow type string {text!r}")


def arrow_type_from_string(text: str) -> pa.DataType:
    """Parse the ``str(pa.DataType)`` spellings used in plans back into Arrow types."""
    import pyarrow as pa

    ctor, args = parse_arrow_type(text)
    return getattr(pa, ctor)(*args)


def _major(version: Any) -> int | None:
    if not isinstance(version, str):
        return None
    m = re.fullmatch(r"(\d+)\.(\d+)", version)
    return int(m.group(1)) if m else None


def _range_out(r: KeyRange) -> dict[str, Any]:
    out = {"index": r.index, "lo": _key_out(r.lo), "hi": _key_out(r.hi), "est_rows": r.est_rows, "label": r.label,
           "exact": r.exact}
    if r.heavy_key is not None:  # only heavy ranges carry it; other ranges' JSON is unchanged
        out["heavy_key"] = _key_out(r.heavy_key)
    if r.nulls:  # only when set: a 1.0 plan re-serialises byte for byte (its sha256 stays valid)
        out["nulls"] = True
    return out


def _region_out(r: Region) -> list:
    return [str(r.lo), str(r.hi), r.rows]


def _region_in(v: list) -> Region:
    return Region(lo=int(v[0]), hi=int(v[1]), rows=int(v[2]))


def _strategy_in(data: dict[str, Any]) -> Strategy:
    st = _pick(Strategy, data)
    return replace(st, key_spans=tuple((lo, hi) for lo, hi in st.key_spans))


def _pick(cls, data: dict[str, Any]):
    """Build a dataclass from the keys it knows; unknown keys (a newer minor version) are ignored."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
