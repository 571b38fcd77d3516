"""Schema evolution of an image: a plain ``sync`` after ``ADD``/``DROP``/rename/widening/length changes.

MySQL does not say what an ``ALTER TABLE`` did, so a run compares the source's columns now (introspected
once, as for planning) with the image's ``columns`` and classifies each difference (:func:`classify`):

* ``add``     a new column. Nullable without a non-NULL default (and not generated): the existing rows
              hold NULL there, so the image's parts get a NULL column. Otherwise (a default, NOT NULL,
              a generated column) the rows' values are the source's: every span with rows is re-exported.
* ``drop``    the column is removed from every part.
* ``rename``  inferred, never announced: a dropped and an added column of the same declared type and
              nullability in the same place (between the same two unchanged columns, in order). The
              column is renamed in every part — and the guess is VERIFIED (see below).
* ``widen``   a change no value can lose by: a larger integer type (signed or unsigned, e.g. INT→BIGINT,
              INT UNSIGNED→BIGINT UNSIGNED), FLOAT→DOUBLE, DECIMAL(p,s)→DECIMAL(p',s') with more integer
              and fraction digits, more fractional seconds, a wider BIT, NOT NULL→NULL. Where the Arrow
              type changes the parts' column is cast; where it does not, nothing is rewritten.
* ``length``  VARCHAR/CHAR/TEXT/VARBINARY/BLOB capacity grown, ENUM/SET members appended: the Arrow type
              is unchanged, only ``source_type``/``redshift_type``; nothing is rewritten, no row is read.

Anything else — a narrowing, a key column change, a type family change (INT→VARCHAR), NULL→NOT NULL,
BINARY(n) resized, ENUM members reordered — is refused with one :class:`DriftError` line naming the
column; ``--full`` (a new image) is the way out.

The evolution (:meth:`Evolution.rewrite`) runs BEFORE change detection and never reads the source's rows:
every part with files is read back from the destination and written, copy-on-write, as a new part of the
current run (``<table>/<run_id>/evolve-NNNNN.parquet``, committed after the run's export — the
executor clears its run folder first — and before ``_state.json``); old files are never modified, so
a lagging warehouse still loads old runs' parts with their own columns. Each new part has exactly the
Arrow schema the executor writes for the new columns (``Plan.arrow_schema``, enforced by the executor's
``PartWriter``) and its checksum is recomputed from its new content with the DuckDB twin of the server's
checksum (:func:`sparsesync.executor.checksum.parquet_span_checksums`, over the new column set).

The safety net: with ``--detect checksum`` the run's ordinary detection pass compares those checksums
with the server's, so a wrong rename guess, a lossy cast or a row updated since is re-exported in the
same run. With ``cursor:COL`` or ``none`` a rename, a FLOAT→DOUBLE widening, and an ADD beside a DROP (a
rename with a type change looks like that) are verified by one server checksum pass over the image's spans
restricted to the key and those columns; a span that differs is re-exported.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Sequence

from sparsesync.errors import DestinationError, DriftError
from sparsesync.planner.plan import ColumnSpec, Plan
from sparsesync.planner.typemap import Declared

from . import detect as det
from .state import ImageState, Part, PartFile

KINDS = ("add", "drop", "rename", "widen", "length")
HINT = "re-sync with --full to start a new image with the new columns"
PREFIX = "evolve-"

_INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32, "bigint": 64}
_FLOATS = {"float": 1, "double": 2, "double precision": 2, "real": 2}
_DECIMALS = ("decimal", "numeric", "dec", "fixed")
_CHARS = ("char", "varchar", "nchar", "nvarchar", "national char", "national varchar")
_TEXT_CAP = {"tinytext": 255, "text": 65535, "mediumtext": 16777215, "longtext": 4294967295}
_BLOB_CAP = {"tinyblob": 255, "blob": 65535, "mediumblob": 16777215, "longblob": 4294967295}
_TIMES = ("datetime", "timestamp", "time")


# ---- classification -----------------------------------------------------------------------------------------
def _spec(c: dict | ColumnSpec) -> ColumnSpec:
    return c if isinstance(c, ColumnSpec) else ColumnSpec(**{k: c.get(k) for k in ColumnSpec.__dataclass_fields__
                                                             if k in c})


def arrow_schema(columns: Sequence[dict | ColumnSpec]):
    """The Arrow schema the executor writes for these columns (``Plan.arrow_schema``, the same code)."""
    return Plan.arrow_schema(SimpleNamespace(columns=[_spec(c) for c in columns]))


def _refuse(table: str, column: str, what: str) -> DriftError:
    return DriftError(f"cannot carry the change of column {column!r} of {table} over to its image: {what}",
                      hint=HINT, table=table)


def _int_range(d: Declared) -> tuple[int, int]:
    bits = _INT_BITS[d.name]
    return (0, 2**bits - 1) if d.unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _text_cap(d: Declared) -> int | None:
    if d.name in _CHARS:
        return d.int_arg(0, 1) or 1
    return _TEXT_CAP.get(d.name)


def _members(text: str) -> list[str]:
    return re.findall(r"'((?:[^']|'')*)'", text)


_ARROW_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}


def _wider_int(old: str, new: str) -> bool:
    """``new`` is a signed Arrow integer type strictly wider than ``old``."""
    return old in _ARROW_INT_BITS and new in _ARROW_INT_BITS and _ARROW_INT_BITS[new] > _ARROW_INT_BITS[old]


def change_kind(old: ColumnSpec, new: ColumnSpec, *, table: str, key: str) -> str:
    """``widen`` or ``length`` for a column kept under its name whose declaration changed; a refusal
    (:class:`DriftError`, one line naming the column) for anything that cannot be carried over."""
    name = new.name
    if name == key:
        raise _refuse(table, name, f"it is the key column ({old.source_type} -> {new.source_type})")
    if old.nullable and not new.nullable:
        raise _refuse(table, name, "NULL -> NOT NULL is a narrowing (rows may have been changed by the ALTER)")
    a, b = Declared.parse(old.source_type or ""), Declared.parse(new.source_type or "")
    what = f"{old.source_type} -> {new.source_type}"
    if a.text.lower() == b.text.lower():
        if old.conversion == new.conversion and _wider_int(old.arrow_type, new.arrow_type):
            # The same declaration mapped to a wider Arrow integer by this version of the type map (TINYINT was
            # int8 before issue 17 and is int16 now, as Redshift's Parquet COPY wants): a widening like INT->BIGINT.
            return "widen"
        if old.arrow_type != new.arrow_type or old.conversion != new.conversion:
            raise _refuse(table, name, f"its Arrow type changed ({old.arrow_type} -> {new.arrow_type}): the type "
                                       "options differ from the image's")
        return "widen"  # NOT NULL -> NULL only
    conv_ok = old.conversion == new.conversion
    if a.name in _INT_BITS and b.name in _INT_BITS and conv_ok and old.conversion is None:
        (alo, ahi), (blo, bhi) = _int_range(a), _int_range(b)
        if blo <= alo and ahi <= bhi:
            return "widen"
        raise _refuse(table, name, f"{what} is a narrowing")
    if a.name in _FLOATS and b.name in _FLOATS:
        if _FLOATS[b.name] > _FLOATS[a.name] and not b.args:
            return "widen"
        if _FLOATS[b.name] == _FLOATS[a.name] and not b.args and not (b.unsigned and not a.unsigned):
            return "widen"  # FLOAT(M,D) -> FLOAT: the stored values are kept
        raise _refuse(table, name, f"{what} is a narrowing")
    if a.name in _DECIMALS and b.name in _DECIMALS and conv_ok and old.conversion is None:
        p, s = a.int_arg(0, 10), a.int_arg(1, 0)
        p2, s2 = b.int_arg(0, 10), b.int_arg(1, 0)
        if s2 >= s and p2 - s2 >= p - s and not (b.unsigned and not a.unsigned):
            return "widen"
        raise _refuse(table, name, f"{what} is a narrowing")
    if (a.name in _CHARS or a.name in _TEXT_CAP) and (b.name in _CHARS or b.name in _TEXT_CAP) and conv_ok \
            and old.arrow_type == new.arrow_type == "string":
        if _text_cap(b) >= _text_cap(a):
            return "length"
        raise _refuse(table, name, f"{what} is a narrowing")
    if a.name in ("varbinary", *_BLOB_CAP) and b.name in ("varbinary", *_BLOB_CAP):
        ca = a.int_arg(0, 1) if a.name == "varbinary" else _BLOB_CAP[a.name]
        cb = b.int_arg(0, 1) if b.name == "varbinary" else _BLOB_CAP[b.name]
        if cb >= ca:
            return "length"
        raise _refuse(table, name, f"{what} is a narrowing")
    if a.name == b.name and a.name in ("enum", "set") and conv_ok:
        ma, mb = _members(a.text), _members(b.text)
        if mb[: len(ma)] == ma:
            return "length"
        raise _refuse(table, name, f"{what} changes or reorders existing members")
    if a.name == b.name == "bit":
        if (b.int_arg(0, 1) or 1) >= (a.int_arg(0, 1) or 1):
            return "widen"
        raise _refuse(table, name, f"{what} is a narrowing")
    if a.name == b.name and a.name in _TIMES and conv_ok:
        if b.int_arg(0, 0) >= a.int_arg(0, 0):
            return "widen"  # more fractional seconds: every stored value is kept
        raise _refuse(table, name, f"{what} loses fractional seconds")
    if a.name == "binary" and b.name == "binary":
        raise _refuse(table, name, f"{what}: BINARY pads every value to its length, so the values change")
    raise _refuse(table, name, f"{what} changes the type family")


def classify(old_columns: Sequence[dict], new_columns: Sequence[ColumnSpec], *, table: str, old_key: str,
             new_key: str) -> list[dict]:
    """The changes (``state.schemas[].changes`` entries, in the new column order) that turn the image's
    columns into the source's, or one :class:`DriftError` line for a change that cannot be carried over."""
    if old_key != new_key:
        raise _refuse(table, new_key, f"the key changed from {old_key!r} to {new_key!r}")
    old = [_spec(c) for c in old_columns]
    new = list(new_columns)
    old_by, new_by = {c.name: c for c in old}, {c.name: c for c in new}
    if new_key not in old_by or new_key not in new_by:
        raise _refuse(table, new_key, "the key column is new or gone")
    # Gaps between consecutive kept columns: the dropped (old order) and added (new order) columns of each.
    def gaps(cols: list[ColumnSpec], other: dict) -> dict[str | None, list[ColumnSpec]]:
        out: dict[str | None, list[ColumnSpec]] = {}
        anchor = None
        for c in cols:
            if c.name in other:
                anchor = c.name
            else:
                out.setdefault(anchor, []).append(c)
        return out

    dropped, added = gaps(old, new_by), gaps(new, old_by)
    renamed: dict[str, str] = {}  # new name -> old name
    def same(d: ColumnSpec, a: ColumnSpec) -> bool:
        return ((d.source_type or "").lower(), d.nullable, d.arrow_type, d.conversion) == \
            ((a.source_type or "").lower(), a.nullable, a.arrow_type, a.conversion)

    for anchor, adds in added.items():
        # In order within the gap: an added column takes the next dropped one of the same declaration.
        drops, j = dropped.get(anchor, []), 0
        for a in adds:
            k = next((i for i in range(j, len(drops)) if same(drops[i], a)), None)
            if k is not None:
                renamed[a.name] = drops[k].name
                j = k + 1
    changes: list[dict] = []
    gone = set(renamed.values())
    for c in old:
        if c.name not in new_by and c.name not in gone:
            changes.append({"kind": "drop", "column": c.name, "before": asdict(c), "after": None})
    for c in new:
        if c.name in renamed:
            o = old_by[renamed[c.name]]
            changes.append({"kind": "rename", "column": o.name, "new_name": c.name, "before": asdict(o),
                            "after": asdict(c)})
        elif c.name not in old_by:
            changes.append({"kind": "add", "column": c.name, "before": None, "after": asdict(c)})
        elif asdict(c) != asdict(old_by[c.name]):
            o = old_by[c.name]
            changes.append({"kind": change_kind(o, c, table=table, key=new_key), "column": c.name,
                            "before": asdict(o), "after": asdict(c)})
    return changes


def describe(change: dict) -> str:
    """``add c``, ``drop c``, ``rename a -> b``, ``widen n INT -> BIGINT``, ``length v VARCHAR(40) -> VARCHAR(80)``."""
    k, c = change["kind"], change["column"]
    if k == "rename":
        return f"rename {c} -> {change['new_name']}"
    if k in ("widen", "length"):
        return f"{k} {c} {change['before']['source_type']} -> {change['after']['source_type']}"
    return f"{k} {c}"


# ---- the source's column defaults (ADD) -------------------------------------------------------------------
def added_needs_source(engine, table: str, schema: str | None, names: Sequence[str]) -> set[str]:
    """Of the added columns ``names``, those whose existing rows may hold something else than NULL: NOT NULL,
    a non-NULL default, a generated column (one information_schema statement, no table rows)."""
    if not names:
        return set()
    import sqlalchemy as sa

    from sparsesync.source import is_mysql

    need: set[str] = set()
    if is_mysql(engine):
        where = "TABLE_SCHEMA = " + (":db" if schema else "DATABASE()") + " AND TABLE_NAME = :t"
        params = {"t": table, **({"db": schema} if schema else {})}
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT COLUMN_NAME, COLUMN_DEFAULT, IS_NULLABLE, EXTRA FROM "
                                        f"information_schema.COLUMNS WHERE {where}"), params).all()
        info = {r[0]: r for r in rows}
        for n in names:
            r = info.get(n)
            if r is None or r[2] != "YES" or (r[1] is not None and str(r[1]).upper() != "NULL") \
                    or "GENERATED" in str(r[3] or "").upper():
                need.add(n)
        return need
    cols = {c["name"]: c for c in sa.inspect(engine).get_columns(table, schema=schema)}
    for n in names:
        c = cols.get(n)
        d = None if c is None else c.get("default")
        if c is None or not c.get("nullable", True) or (d is not None and str(d).upper() != "NULL") or c.get("computed"):
            need.add(n)
    return need


# ---- the evolution ------------------------------------------------------------------------------------------
@dataclass
class Evolution:
    """One schema change of an image (``from_version`` -> ``to_version``) and what carrying it over cost."""

    table: str
    info: Any  # the source's TableInfo now (introspect)
    changes: list[dict]
    from_version: int
    to_version: int
    old_columns: tuple = ()  # the image's columns before (version from_version)
    source_adds: set[str] = field(default_factory=set)  # added columns whose values only the source has
    full: bool = False
    queries: int = 0  # statements sent to the source (information_schema for an ADD, a verifying checksum)
    # what rewrite() did
    parts_rewritten: int = 0
    files_rewritten: int = 0
    bytes_rewritten: int = 0
    bytes_read: int = 0
    rows_rewritten: int = 0
    forced: set = field(default_factory=set)  # (nulls, lo) of parts re-exported because of the change
    verified: str | None = None  # how rewritten parts were checked against the source
    # rows of rewritten parts that the run's detection re-exported after all (a wrong guess, or rows changed)
    rows_replaced_after_rewrite: int = 0
    seconds: float = 0.0
    _staged: dict[str, str] = field(default_factory=dict)  # final relpath -> local file
    _by_part: dict = field(default_factory=dict)  # (nulls, lo) -> the final relpaths of its rewritten files
    _rows_by_part: dict = field(default_factory=dict)
    _tmp: str | None = None

    @property
    def needs_rewrite(self) -> bool:
        """Does the Arrow schema of the image's files change (else only metadata changes)?"""
        return not self.full and not self.old_schema.equals(self.new_schema)

    @property
    def old_schema(self):
        return arrow_schema(self.old_columns)

    @property
    def new_schema(self):
        return arrow_schema(self.info.columns)

    def summary(self) -> str:
        head = f"schema v{self.from_version} -> v{self.to_version}: " + (", ".join(describe(c) for c in self.changes)
                                                                          or "columns re-declared")
        if self.full:
            return head + " (--full: every span re-exported)"
        return head + (f"; {self.parts_rewritten} part(s) rewritten at the destination "
                       f"({self.bytes_rewritten:,} bytes), {len(self.forced)} span(s) re-exported for the change")

    def to_dict(self) -> dict:
        return {"from_version": self.from_version, "to_version": self.to_version, "changes": [
            {k: v for k, v in c.items() if k in ("kind", "column", "new_name")} for c in self.changes],
            "parts_rewritten": self.parts_rewritten, "files_rewritten": self.files_rewritten,
            "bytes_rewritten": self.bytes_rewritten, "bytes_read": self.bytes_read,
            "rows_rewritten": self.rows_rewritten, "spans_forced": len(self.forced), "verified": self.verified,
            "rows_replaced_after_rewrite": self.rows_replaced_after_rewrite,
            "seconds": round(self.seconds, 3)}

    # -- the image state ----------------------------------------------------------------------------------
    def state(self, state: ImageState) -> ImageState:
        """``state`` with the new version: current columns and hash, the history entry appended."""
        cols = tuple(asdict(c) for c in self.info.columns)
        entry = {"version": self.to_version, "schema_hash": self.info.schema_hash, "columns": [dict(c) for c in cols],
                 "changes": self.changes}
        return replace(state, columns=cols, schema_hash=self.info.schema_hash, schema_version=self.to_version,
                       schemas=tuple(state.schemas) + (entry,))

    # -- rewriting the parts ----------------------------------------------------------------------------
    def rewrite(self, sink, state: ImageState, run_id: str, *, compression: str, detect_mode: str,
                engine=None) -> ImageState:
        """Rewrite every part with files into the new Arrow schema (staged locally; :meth:`commit` puts them
        under ``<table>/<run_id>/``), with checksums recomputed from the new content. Parts whose new column
        values only the source has are not rewritten but marked for re-export (:attr:`forced`, checksum
        cleared). With ``cursor``/``none`` detection a guessed rename (and FLOAT->DOUBLE) is verified here."""
        t0 = time.monotonic()
        try:
            parts = list(state.parts)
            if self.source_adds:
                for i, p in enumerate(parts):
                    if p.rows:
                        self.forced.add((p.nulls, p.lo))
                        parts[i] = replace(p, checksum=None)  # detection (checksum mode) then re-reads it too
                return replace(state, parts=tuple(parts))
            if not self.needs_rewrite:
                return state
            import duckdb

            self._tmp = tempfile.mkdtemp(prefix="sparsesync-evolve-")
            weakref.finalize(self, shutil.rmtree, self._tmp, True)  # a failed run leaves no local files behind
            con = duckdb.connect()
            try:
                n = 0
                local: dict[tuple, list[str]] = {}
                for i, p in enumerate(parts):
                    if not p.files:
                        continue
                    new_files, paths = [], []
                    for f in p.files:
                        rel = f"{run_id}/{PREFIX}{n:05d}.parquet"
                        n += 1
                        path, rows, size = self._rewrite_file(sink, state.folder, f, rel, compression)
                        if rows != f.rows:
                            raise DestinationError(f"part {f.path} of {self.table} holds {rows} rows, its image "
                                                   f"state says {f.rows}", hint=HINT, table=self.table)
                        new_files.append(PartFile(rel, rows, size))
                        paths.append(path)
                        self._staged[rel] = path
                    parts[i] = replace(p, path=new_files[0].path, bytes=sum(f.bytes for f in new_files),
                                       more=tuple(new_files[1:]))
                    local[(p.nulls, p.lo)] = paths
                    self._by_part[(p.nulls, p.lo)] = [f.path for f in new_files]
                    self._rows_by_part[(p.nulls, p.lo)] = p.rows
                    self.parts_rewritten += 1
                    self.files_rewritten += len(new_files)
                    self.bytes_rewritten += sum(f.bytes for f in new_files)
                    self.rows_rewritten += p.rows
                # Each rewritten part's checksum, from its new content: one DuckDB pass over all of them. A part
                # without one (written by a cursor/none run, which measures none) stays without.
                todo = [i for i, p in enumerate(parts) if (p.nulls, p.lo) in local and p.checksum is not None]
                for i, c in zip(todo, self._checksums(con, [parts[i] for i in todo], local)):
                    parts[i] = replace(parts[i], checksum=c)
                if detect_mode == "checksum":
                    self.verified = "by the run's checksum detection"
                else:
                    self._verify(con, engine, parts, local)
            finally:
                con.close()
            return replace(state, parts=tuple(parts))
        finally:
            self.seconds += time.monotonic() - t0

    def _rewrite_file(self, sink, folder: str, f: PartFile, rel: str, compression: str) -> tuple[str, int, int]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from sparsesync.executor.dest import is_local
        from sparsesync.executor.sink import LocalSink
        from sparsesync.executor.writer import PartWriter

        src_rel = f"{folder}/{f.path}"
        if is_local(sink):
            src = sink.url(src_rel)
            self.bytes_read += sink.size(src_rel) or 0
        else:
            data = sink.get_bytes(src_rel)
            if data is None:
                raise DestinationError(f"part {sink.url(src_rel)} of the image is missing", hint=HINT, table=self.table)
            self.bytes_read += len(data)
            src = pa.BufferReader(data)
        new_schema = self.new_schema
        renamed_from = {c["new_name"]: c["column"] for c in self.changes if c["kind"] == "rename"}
        source_of = {fl.name: renamed_from.get(fl.name, fl.name) for fl in new_schema}
        old_names = set(self.old_schema.names)
        try:
            pf = pq.ParquetFile(src)
        except (OSError, pa.ArrowException) as exc:
            raise DestinationError(f"cannot read part {sink.url(src_rel)}: {exc}", hint=HINT, table=self.table) from exc
        have = set(pf.schema_arrow.names)
        want = [source_of[fl.name] for fl in new_schema if source_of[fl.name] in old_names and source_of[fl.name] in have]
        writer = PartWriter(LocalSink(self._tmp), rel.replace("/", "__"), new_schema, compression=compression)
        rows = 0
        try:
            for batch in pf.iter_batches(batch_size=65536, columns=want, use_threads=False):
                arrays = []
                for fl in new_schema:
                    name = source_of[fl.name]
                    if name in want:
                        arr = batch.column(batch.schema.get_field_index(name))
                        if arr.type != fl.type:
                            try:
                                arr = pc.cast(arr, fl.type, safe=True)
                            except pa.ArrowException as exc:
                                raise _refuse(self.table, fl.name, f"its values do not cast to {fl.type} ({exc})") from exc
                    else:
                        arr = pa.nulls(batch.num_rows, fl.type)
                    arrays.append(arr)
                writer.write(pa.RecordBatch.from_arrays(arrays, schema=new_schema))
                rows += batch.num_rows
            info = writer.close()[0]
        except BaseException:
            writer.abort()
            raise
        return f"{self._tmp}/{info.relpath}", rows, info.size

    @staticmethod
    def _relation(paths: list[str]) -> str:
        return "read_parquet([" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "])"

    def _checksums(self, con, parts: list[Part], local: dict, columns=None) -> list[str]:
        """:func:`~sparsesync.sync.detect.checksum_text` of each part's rewritten files (the DuckDB twin of the server's checksum,
        over the new column set or ``columns``), all parts in one pass: their spans are disjoint."""
        from sparsesync.executor.checksum import Span, parquet_span_checksums

        if not parts:
            return []
        spans = [Span.null_keys() if p.nulls else Span(p.lo, p.hi) for p in parts]
        paths = [x for p in parts for x in local[(p.nulls, p.lo)]]
        found, stray = parquet_span_checksums(con, self._relation(paths), self.info, spans, columns=columns)
        if stray:
            raise DestinationError(f"{stray} row(s) of the rewritten parts of {self.table} lie outside their "
                                   "part's key span", hint=HINT, table=self.table)
        return [det.checksum_text(c.rows, c.checksum) for c in found]

    def _verify(self, con, engine, parts: list[Part], local: dict) -> None:
        """``cursor``/``none``: a checksum pass over the image's spans, on the key and the columns whose new
        values are a guess (renamed, FLOAT->DOUBLE, added beside a dropped one); a span that differs is
        re-exported."""
        from sparsesync.executor.checksum import Span, span_checksums
        from sparsesync.source import is_mysql

        kinds = {c["kind"] for c in self.changes}
        cols = [c["new_name"] for c in self.changes if c["kind"] == "rename"]
        cols += [c["column"] for c in self.changes if c["kind"] == "widen"
                 and c["before"]["arrow_type"] == "float" and c["after"]["arrow_type"] == "double"]
        if "drop" in kinds:
            cols += [c["column"] for c in self.changes if c["kind"] == "add"]
        if not cols:
            self.verified = "not needed (no guessed values)"
            return
        todo = [p for p in parts if (p.nulls, p.lo) in local]
        if not todo:
            return
        key = self.info.key
        cols = [key] + [c for c in dict.fromkeys(cols) if c != key]
        if engine is None or not (is_mysql(engine) or engine.dialect.name == "sqlite"):
            self.forced.update((p.nulls, p.lo) for p in todo)
            self.verified = "no server checksum on this source: every rewritten span re-exported"
            return
        spans = [Span.null_keys() if p.nulls else Span(p.lo, p.hi if p.hi is not None else p.read_hi) for p in todo]
        server = span_checksums(engine, self.info, spans, columns=cols)
        self.queries += det.checksum_statements(self.info, [det.NULLS if s.nulls else (s.lo, s.hi) for s in spans])
        mine = self._checksums(con, todo, local, columns=cols)
        for p, m, s in zip(todo, mine, server):
            if m != det.checksum_text(s.rows, s.checksum):
                self.forced.add((p.nulls, p.lo))
        self.verified = f"server checksum pass over {len(todo)} span(s) on {', '.join(cols[1:])}"

    # -- after the export ---------------------------------------------------------------------------------
    def commit(self, sink, folder: str, parts: Sequence[Part]) -> None:
        """Put the staged files of the rewritten parts that stay in the image under ``<table>/<run_id>/``."""
        keep = {f.path for p in parts for f in p.files}
        for rel, path in self._staged.items():
            if rel not in keep:
                continue
            target = f"{folder}/{rel}"
            staging = sink.staging_path(target)
            shutil.copyfile(path, staging)
            committed = sink.commit(staging, target)
            want = next(f.bytes for p in parts for f in p.files if f.path == rel)
            if committed.size != want:
                raise DestinationError(f"rewritten part {committed.url} has {committed.size} bytes, expected {want}",
                                       table=self.table)
        # Rewritten parts that the run re-exported after all (detection) were never committed: not counted.
        gone = [key for key, rels in self._by_part.items() if not all(r in keep for r in rels)]
        for key in gone:
            rels = self._by_part.pop(key)
            self.parts_rewritten -= 1
            self.files_rewritten -= len(rels)
            self.bytes_rewritten -= sum(_size(self._staged[r]) for r in rels)
            self.rows_rewritten -= self._rows_by_part.get(key, 0)
            self.rows_replaced_after_rewrite += self._rows_by_part.get(key, 0)
        self.cleanup()

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self._staged = {}


def _size(path: str) -> int:
    import os

    with contextlib.suppress(OSError):
        return os.path.getsize(path)
    return 0


def carry_histogram(engine, table: str, schema: str | None, key: str, old_hash: str, new_hash: str, *,
                    cache_path: str | None = None) -> bool:
    """Store the planner's cached key histogram of the old schema hash under the new one: the change keeps the
    key column and its values, so the key's density is what it was, and the planner needs no rescan of
    the table (a schema change otherwise makes the cache miss: it is keyed by schema hash). Best effort."""
    from sparsesync.planner.api import source_identity
    from sparsesync.planner.cache import CacheKey, HistogramCache

    try:
        cache = HistogramCache(cache_path)
        src, tbl = source_identity(engine).cache_key(), f"{schema}.{table}" if schema else table
        new = CacheKey(source=src, table=tbl, key=key, schema_hash=new_hash)
        old = cache.load(CacheKey(source=src, table=tbl, key=key, schema_hash=old_hash))
        if old is None:
            return False
        cache.store(new, old.histogram, seconds=old.seconds, measured_at=old.measured_at,
                    rows_per_query=old.rows_per_query)
        return True
    except Exception:  # noqa: BLE001 - a cache that cannot be used costs a rescan, never the sync
        return False


def plan_evolution(engine, state: ImageState, info, *, full: bool, schema: str | None = None,
                   cache_path: str | None = None, use_cache: bool = True) -> Evolution | None:
    """The evolution from the image's columns to the source's (``info``), ``None`` when nothing changed.
    Refuses (one line) what cannot be carried over — unless ``full``: a new image then records the new
    version with the changes computed the same way, or with none when they are not of the five kinds."""
    same = info.key == state.key and info.schema_hash == state.schema_hash and \
        [asdict(c) for c in info.columns] == [dict(c) for c in state.columns]
    if same:
        return None
    try:
        changes = classify(state.columns, info.columns, table=state.table, old_key=state.key, new_key=info.key)
    except DriftError:
        if not full:
            raise
        changes = []
    adds = [c["column"] for c in changes if c["kind"] == "add"]
    evo = Evolution(table=state.table, info=info, changes=changes, from_version=state.schema_version,
                    to_version=state.schema_version + 1, old_columns=tuple(state.columns), full=full)
    if adds and not full:
        evo.source_adds = added_needs_source(engine, state.table, schema, adds)
        evo.queries += 1
    if use_cache and not full and info.key == state.key:
        carry_histogram(engine, state.table, schema, info.key, state.schema_hash, info.schema_hash,
                        cache_path=cache_path)
    return evo


__all__ = ["Evolution", "classify", "change_kind", "plan_evolution", "arrow_schema", "describe", "KINDS"]
