"""A table's image at a destination: ``<dest>/<table>/_state.json`` and ``current.manifest.json``.

The image is a list of parts with disjoint key spans ``[lo, hi)`` that together cover the key domain
(the last one open, ``hi = None``). A span with no rows is a part without a file (``path = None``) so
coverage stays contiguous. The state is versioned and hashed like a plan (same canonical JSON and
sha256), validated against ``plans/image.schema.json``, and written atomically and LAST by a sync run —
after the run's parts and ``current.manifest.json`` — so a crash leaves the previous image in force.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from sparsesync.planner.plan import canonical_json, content_hash, first_violation
from sparsesync.errors import DestinationError
from sparsesync.naming import table_folder

FORMAT_VERSION = "1.1"  # 1.1: schema versions (schema_version, schemas, runs[].schema_version) and folder
SUPPORTED_MAJOR = 1
STATE, CURRENT_MANIFEST = "_state.json", "current.manifest.json"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "image.schema.json"  # plans/image.schema.json links here


def _k(v: int | None) -> str | None:
    return None if v is None else str(int(v))


def _ki(v: Any) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class PartFile:
    """A further file of a part whose file group spilled into several files (``part-00000-001.parquet``)."""

    path: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class Part:
    """One span of the image and the file holding its rows (``path`` relative to ``<dest>/<table>/``).

    ``checksum`` is ``"<count>:<checksum>"`` measured on the server before the span was exported (see
    :mod:`sparsesync.sync.detect`), ``None`` when not measured. The open tail part also records
    ``read_hi``: every key it holds is below it, and the next run narrows the part to ``[lo, read_hi)``.
    """

    lo: int | None  # None only for the part of the NULL-key rows (``nulls``)
    hi: int | None
    path: str | None
    rows: int
    bytes: int
    run_id: str
    sequence: int
    checksum: str | None = None
    nulls: bool = False
    read_hi: int | None = None
    more: tuple[PartFile, ...] = ()

    @property
    def files(self) -> list[PartFile]:
        first = [] if self.path is None else [PartFile(self.path, self.rows - sum(f.rows for f in self.more),
                                                       self.bytes - sum(f.bytes for f in self.more))]
        return first + list(self.more)

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "lo": _k(self.lo), "hi": _k(self.hi), "nulls": self.nulls, "rows": self.rows,
             "bytes": self.bytes, "checksum": self.checksum, "run_id": self.run_id, "sequence": self.sequence}
        if self.read_hi is not None:
            d["read_hi"] = _k(self.read_hi)
        if self.more:
            d["more"] = [{"path": f.path, "rows": f.rows, "bytes": f.bytes} for f in self.more]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Part":
        return cls(lo=_ki(d.get("lo")), hi=_ki(d.get("hi")), path=d.get("path"), rows=int(d["rows"]),
                   bytes=int(d["bytes"]), run_id=d["run_id"], sequence=int(d["sequence"]),
                   checksum=d.get("checksum"), nulls=bool(d.get("nulls", False)), read_hi=_ki(d.get("read_hi")),
                   more=tuple(PartFile(f["path"], int(f["rows"]), int(f["bytes"])) for f in d.get("more", ())))


@dataclass(frozen=True)
class Run:
    """One applied sync run: what it read and which warehouse key spans its rows replace."""

    run_id: str
    sequence: int
    kind: str  # first | append | changed | full
    detect: str  # checksum | cursor:COL | none
    started_at: str
    finished_at: str
    rows: int
    bytes: int
    replaced: tuple[tuple[int, int | None], ...]
    null_replaced: bool = False
    manifest: str | None = None
    load_sql: str | None = None
    schema_version: int = 1  # the image's schema version this run's parts (and its warehouse step) have

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "sequence": self.sequence, "kind": self.kind, "detect": self.detect,
                "started_at": self.started_at, "finished_at": self.finished_at, "rows": self.rows,
                "bytes": self.bytes, "replaced": [[_k(lo), _k(hi)] for lo, hi in self.replaced],
                "null_replaced": self.null_replaced, "manifest": self.manifest, "load_sql": self.load_sql,
                "schema_version": self.schema_version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        return cls(run_id=d["run_id"], sequence=int(d["sequence"]), kind=d["kind"], detect=d["detect"],
                   started_at=d["started_at"], finished_at=d["finished_at"], rows=int(d["rows"]),
                   bytes=int(d["bytes"]), replaced=tuple((int(lo), _ki(hi)) for lo, hi in d["replaced"]),
                   null_replaced=bool(d.get("null_replaced", False)), manifest=d.get("manifest"),
                   load_sql=d.get("load_sql"), schema_version=int(d.get("schema_version", 1)))


@dataclass(frozen=True)
class ImageState:
    """The whole ``_state.json``.

    Schema versions: ``columns``/``schema_hash`` are the image's current schema, version
    ``schema_version``. ``schemas`` is the history, oldest first, one entry per version::

        {"version": 2, "schema_hash": "…", "columns": [...],
         "changes": [{"kind": "add" | "drop" | "rename" | "widen" | "length", "column": "<name before>",
                      "new_name": "<name after>" (rename), "before": {column} | null, "after": {column} | null}]}

    ``changes`` says how version N-1 became N (empty for version 1). Every run records the version its
    parts have, so a warehouse that is behind applies each run with that run's own columns
    (:meth:`columns_of`). An image written before 1.1 has one version, 1, its current columns.
    """

    table: str
    key: str
    source: dict[str, Any]
    columns: tuple[dict[str, Any], ...]
    schema_hash: str
    sequence: int
    parts: tuple[Part, ...]
    runs: tuple[Run, ...] = ()
    cursor: dict[str, Any] | None = None
    format_version: str = FORMAT_VERSION
    schema_version: int = 1
    schemas: tuple[dict[str, Any], ...] = ()

    @property
    def folder(self) -> str:
        """The table's folder at the destination (its name, or an encoded one: :func:`table_folder`)."""
        return table_folder(self.table)

    def __post_init__(self) -> None:
        if not self.schemas:  # an image without a history (before 1.1, or a new one): its one version
            object.__setattr__(self, "schemas", ({"version": self.schema_version, "schema_hash": self.schema_hash,
                                                  "columns": [dict(c) for c in self.columns], "changes": []},))

    @property
    def history(self) -> tuple[dict[str, Any], ...]:
        return self.schemas

    def columns_of(self, version: int) -> tuple[dict[str, Any], ...]:
        """The columns of schema ``version`` (a run's own columns)."""
        if version == self.schema_version:
            return self.columns
        for s in self.history:
            if int(s["version"]) == int(version):
                return tuple(s["columns"])
        raise KeyError(f"schema version {version} is not in the image's history")

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def files(self) -> list[PartFile]:
        """Every file of the image, in key order (what ``current.manifest.json`` lists)."""
        return [f for p in self.parts for f in p.files]

    @property
    def tail(self) -> Part | None:
        return next((p for p in reversed(self.parts) if not p.nulls), None)

    def body(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version, "table": self.table, "key": self.key, "source": self.source,
            "columns": list(self.columns), "schema_hash": self.schema_hash, "sequence": self.sequence,
            "parts": [p.to_dict() for p in self.parts], "runs": [r.to_dict() for r in self.runs],
            "cursor": self.cursor, "folder": self.folder, "schema_version": self.schema_version,
            "schemas": [dict(s) for s in self.history],
        }

    def to_json(self) -> bytes:
        body = self.body()
        body["sha256"] = content_hash(body)
        return (json.dumps(body, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, origin: str) -> "ImageState":
        """Parse, check version, hash and schema; every failure is one :class:`DestinationError` line."""
        def bad(what: str) -> DestinationError:
            return DestinationError(f"image state {origin} {what}",
                                    hint="restore it, or re-sync the table with --full (a new image)", file=origin)
        try:
            d = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad(f"is not valid JSON ({exc})") from exc
        if not isinstance(d, dict):
            raise bad("is not a JSON object")
        version = str(d.get("format_version", ""))
        if version.split(".")[0] != str(SUPPORTED_MAJOR):
            raise bad(f"has format_version {version!r}; this sparsesync reads {SUPPORTED_MAJOR}.x")
        body = {k: v for k, v in d.items() if k != "sha256"}
        if d.get("sha256") != content_hash(body):
            raise bad("was edited or damaged (sha256 mismatch)")
        validate_state(d, origin=origin)
        try:
            return cls(table=d["table"], key=d["key"], source=d["source"], columns=tuple(d["columns"]),
                       schema_hash=d["schema_hash"], sequence=int(d["sequence"]),
                       parts=tuple(Part.from_dict(p) for p in d["parts"]),
                       runs=tuple(Run.from_dict(r) for r in d.get("runs", ())), cursor=d.get("cursor"),
                       format_version=version, schema_version=int(d.get("schema_version", 1)),
                       schemas=tuple(d.get("schemas") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"is inconsistent: {exc}") from exc


@lru_cache(maxsize=1)
def image_schema() -> dict[str, Any]:
    """The JSON Schema in ``plans/image.schema.json``."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_state(data: dict[str, Any], *, origin: str = "image state") -> None:
    """Validate against ``plans/image.schema.json``; the first violation becomes one line with its path."""
    violation = first_violation(data, image_schema())
    if violation is not None:
        raise DestinationError(f"image state {origin} does not match plans/image.schema.json {violation}",
                               hint="re-sync the table with --full", file=origin)


def check_coverage(parts: tuple[Part, ...] | list[Part]) -> None:
    """Non-NULL parts are sorted, disjoint and contiguous, and only the last is open (the invariant)."""
    spans = [p for p in parts if not p.nulls]
    for a, b in zip(spans, spans[1:]):
        if a.hi is None or a.hi != b.lo:
            raise ValueError(f"image parts [{a.lo}, {a.hi}) and [{b.lo}, {b.hi}) are not contiguous")
    if spans and spans[-1].hi is not None:
        raise ValueError("the image's last part must be the open tail")
    for p in spans:
        if p.hi is not None and p.hi <= p.lo:
            raise ValueError(f"image part [{p.lo}, {p.hi}) is empty")


def load_state(sink, table: str) -> ImageState | None:
    """The image state of ``table`` at the sink, or ``None`` when it has never been synced there."""
    rel = f"{table_folder(table)}/{STATE}"
    data = sink.get_bytes(rel)
    if data is None:
        return None
    return ImageState.from_json(data, origin=sink.url(rel))


def manifest_bytes(sink, state: ImageState) -> bytes:
    """The Redshift manifest of exactly the image's files (``meta.content_length`` = recorded size)."""
    entries = [{"url": sink.url(f"{table_folder(state.table)}/{f.path}"), "mandatory": True, "meta": {"content_length": f.bytes}}
               for f in state.files]
    return (json.dumps({"entries": entries}, indent=2) + "\n").encode("utf-8")


def save_state(sink, table: str, state: ImageState) -> None:
    """Write ``current.manifest.json`` (or remove it: Redshift refuses an empty manifest), then the state.

    Each object is replaced atomically. A crash between the two leaves the old state with the new
    manifest; :func:`repair_manifest` (run at the start of every sync) rewrites it from the state.
    """
    check_coverage(state.parts)
    write_manifest(sink, state)
    sink.put_bytes(f"{table_folder(table)}/{STATE}", state.to_json())


def write_manifest(sink, state: ImageState) -> None:
    rel = f"{table_folder(state.table)}/{CURRENT_MANIFEST}"
    if state.files:
        sink.put_bytes(rel, manifest_bytes(sink, state))
    else:
        sink.delete(rel)


def repair_manifest(sink, state: ImageState) -> bool:
    """Make ``current.manifest.json`` match the state again after a crash; True when it had to."""
    rel = f"{table_folder(state.table)}/{CURRENT_MANIFEST}"
    want = manifest_bytes(sink, state) if state.files else None
    if sink.get_bytes(rel) == want:
        return False
    write_manifest(sink, state)
    return True


def narrowed(parts: tuple[Part, ...]) -> list[Part]:
    """The image with its open tail part narrowed to ``[lo, read_hi)`` (dropped when that is empty)."""
    out = list(parts)
    tail = next((i for i in range(len(out) - 1, -1, -1) if not out[i].nulls), None)
    if tail is None:
        return out
    t = out[tail]
    hi = t.read_hi if t.read_hi is not None else t.lo
    if hi <= t.lo:
        if t.rows:
            raise ValueError(f"the open tail part [{t.lo}, ∞) holds rows but records no key bound read_hi")
        del out[tail]
    else:
        out[tail] = replace(t, hi=hi, read_hi=None)
    return out


__all__ = ["ImageState", "Part", "PartFile", "Run", "load_state", "save_state", "repair_manifest", "narrowed",
           "check_coverage", "validate_state", "canonical_json", "STATE", "CURRENT_MANIFEST", "FORMAT_VERSION"]
