"""The SQL that applies one sync run (or the whole current image) to a warehouse table, exactly once.

One run = evolve the target to the run's schema version if it is behind (ALTER … ADD / DROP / RENAME
COLUMN; a type change builds a new table from the old one, cast, and swaps it in), COPY the run's delta
manifest into a staging table made with the run's own columns, DELETE the key spans it replaces from the
target, INSERT the staged rows BY COLUMN NAME, record the run and the target's schema version in
``sparsesync_loads`` — all in one transaction. A ``first`` or ``full`` run, and a load from the image
(``current.manifest.json``), rebuild the target instead: a new table with the run's (image's) columns,
filled and swapped in, so they apply whatever state the target was in.

Guards (each a statement that fails, so the transaction rolls back and nothing changes): a run older than
one already applied; a run whose predecessor was not applied; a run with schema steps when the target is
not at the version the steps start from (e.g. the run was applied already). Re-applying a run without
schema steps deletes and re-inserts exactly its own rows, so it changes nothing.

The steps are built once (:func:`load_steps`) and rendered for Redshift (``load.sql``) or executed against
DuckDB by :mod:`sparsesync.sync.load` with ``read_parquet`` standing in for COPY. Keys enter SQL as
validated Python ints; identifiers are always quoted; string literals go through the one dialect-aware
:func:`sparsesync.executor.redshift.sql_string`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sparsesync.errors import LoadError, UsageError
from sparsesync.executor.redshift import checked_type, quote_ident  # double quotes, as Redshift and DuckDB both want
from sparsesync.executor.redshift import sql_string as _literal

LOADS_TABLE = "sparsesync_loads"
MIN_SIGNED = -(2**63)
IAM_ROLE_PLACEHOLDER = "<IAM_ROLE_ARN>"
WHOLE_KINDS = ("first", "full")


class NotFromParts(LoadError):
    """A run cannot be applied from its own parts (schema history without a way there, parts gone or
    rewritten): ``load`` then loads the current image instead."""
  # runs that hold every row of the table: they replace the target
SWAP_SUFFIX = "__sparsesync_swap"


def quote_target(target: str) -> str:
    """``schema.table`` or ``table`` as given on the command line, each part quoted."""
    return ".".join(quote_ident(p) for p in target_parts(target))


def default_target(table: str) -> str:
    """The target when none is given: the source table's own name as ONE identifier. A plain name stays as
    it is (what ``sparsesync_loads`` has always recorded); a name with ``.`` or ``"`` (``a.b``, ``../x``)
    is written double-quoted so that it is never split into schema and table."""
    return table if not any(ch in table for ch in '."') else quote_ident(table)


def target_parts(target: str) -> list[str]:
    """``TABLE`` or ``SCHEMA.TABLE``; a part in double quotes (``"a.b"``, ``""`` for a quote) is one name."""
    parts, cur, i, quoted = [], [], 0, False
    while i < len(target):
        ch = target[i]
        if quoted:
            if ch == '"' and target[i + 1:i + 2] == '"':
                cur.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                cur.append(ch)
        elif ch == '"' and not cur:
            quoted = True
        elif ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    if quoted or not 1 <= len(parts) <= 2 or not all(parts) or any(ord(ch) < 32 for ch in target):
        raise UsageError(f"bad target table name {target!r}",
                         hint='use TABLE or SCHEMA.TABLE, a part in double quotes when it holds a dot (no control characters)')
    return parts


def sql_string(text: str, dialect: str = "redshift") -> str:
    """A single-quoted SQL string literal for ``dialect`` (see :func:`sparsesync.executor.redshift.sql_string`)."""
    return _literal(text, dialect)


def as_dict(obj: Any) -> dict:
    """A state or run given as a mapping, an ImageState (``body()``), an object with ``to_dict()`` or a dataclass, as a dict."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "body"):  # ImageState: the _state.json body, keys as decimal strings
        return obj.body()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot read {type(obj).__name__} as a state or run")


# ---- schema versions -------------------------------------------------------------------------------------
def image_version(state: dict) -> int:
    return int(state.get("schema_version") or 1)


def run_version(run: dict) -> int:
    return int(run.get("schema_version") or 1)


def _schema_entry(state: dict, version: int) -> dict | None:
    for s in state.get("schemas") or ():
        if int(s["version"]) == int(version):
            return s
    return None


def columns_of(state: dict, version: int) -> tuple[dict, ...]:
    """The columns of schema ``version`` of the image (a state dict; before 1.1 every run is version 1)."""
    if int(version) == image_version(state):
        return tuple(state["columns"])
    entry = _schema_entry(state, version)
    if entry is None:
        raise NotFromParts(f"schema version {version} is not in the image's schema history", table=state.get("table"),
                        hint="load the current image instead: sparsesync load … --from-image")
    return tuple(entry["columns"])


@dataclass(frozen=True)
class Op:
    """One step evolving the target's columns: ``add`` (``col``), ``drop`` / ``rename`` (``column`` → ``new_name``),
    or ``swap`` (a new table with ``columns``, filled from the old one with casts, swapped in)."""

    kind: str
    column: str | None = None
    new_name: str | None = None
    col: dict | None = None
    columns: tuple[dict, ...] = ()
    retyped: tuple[str, ...] = ()  # swap: the columns whose type changes

    def describe(self) -> str:
        if self.kind == "add":
            return f"add {self.col['name']}"
        if self.kind == "drop":
            return f"drop {self.column}"
        if self.kind == "rename":
            return f"rename {self.column} to {self.new_name}"
        return f"new type of {', '.join(self.retyped)} (table rebuilt and swapped in)"


def _type_key(col: dict, dialect: str) -> str:
    # What the warehouse's column type is made of: DuckDB follows the Arrow type (a VARCHAR length is not
    # part of it), Redshift takes redshift_type as is.
    return str(col.get("arrow_type")) if dialect == "duckdb" else str(col.get("redshift_type"))


def _changes(state: dict, version: int) -> list[dict]:
    entry = _schema_entry(state, version)
    changes = list(entry.get("changes") or ()) if entry else []
    if changes:
        return changes
    # No recorded changes: derive drops, adds and type changes by name (a rename cannot be derived).
    old = {c["name"]: c for c in columns_of(state, version - 1)}
    new = {c["name"]: c for c in columns_of(state, version)}
    out = [{"kind": "drop", "column": n, "before": c, "after": None} for n, c in old.items() if n not in new]
    out += [{"kind": "add", "column": n, "before": None, "after": c} for n, c in new.items() if n not in old]
    out += [{"kind": "widen", "column": n, "before": old[n], "after": c} for n, c in new.items()
            if n in old and (old[n].get("arrow_type"), old[n].get("redshift_type")) != (c.get("arrow_type"), c.get("redshift_type"))]
    return out


def evolution(state: dict, from_version: int, to_version: int, dialect: str) -> tuple[Op, ...]:
    """The steps taking a target with the columns of ``from_version`` to those of ``to_version``.

    Per version, in order: drops, renames (through temporary names when they swap names), adds; one swap
    at the end when any column's warehouse type differs (a widening; for Redshift also a VARCHAR length:
    ``ALTER COLUMN … TYPE`` cannot run inside the run's transaction block).
    """
    if to_version <= from_version:
        return ()
    cur: dict[str, dict] = {c["name"]: dict(c) for c in columns_of(state, from_version)}
    ops: list[Op] = []
    for v in range(from_version + 1, to_version + 1):
        changes = _changes(state, v)
        renames = {ch["column"]: ch["new_name"] for ch in changes if ch["kind"] == "rename"}
        for ch in changes:
            if ch["kind"] == "drop" and ch["column"] in cur:
                ops.append(Op("drop", column=ch["column"]))
                del cur[ch["column"]]
        clash = any(new in cur for new in renames.values())  # a swap or chain of names: via temporary names
        staged = {}
        for i, (old, new) in enumerate(renames.items()):
            if old not in cur:
                continue
            mid = f"__sparsesync_rename_{i}" if clash else new
            ops.append(Op("rename", column=old, new_name=mid))
            cur[mid] = cur.pop(old)
            staged[mid] = new
        for mid, new in staged.items():
            if mid != new:
                ops.append(Op("rename", column=mid, new_name=new))
            cur[new] = cur.pop(mid)
        for ch in changes:
            if ch["kind"] == "add":
                col = ch.get("after") or next(c for c in columns_of(state, v) if c["name"] == ch["column"])
                if col["name"] not in cur:
                    ops.append(Op("add", column=col["name"], col=dict(col)))
                    cur[col["name"]] = dict(col)
            # widen / length: the target keeps its old type until the swap below (decided by comparing types)
    final = columns_of(state, to_version)
    if set(cur) != {c["name"] for c in final}:
        raise NotFromParts(
            f"the image's schema history does not lead from version {from_version} to {to_version} "
            f"(columns {sorted(cur)} vs {sorted(c['name'] for c in final)})", table=state.get("table"),
            hint="load the current image instead: sparsesync load … --from-image")
    retyped = tuple(c["name"] for c in final if _type_key(cur[c["name"]], dialect) != _type_key(c, dialect))
    if retyped:
        ops.append(Op("swap", columns=tuple(final), retyped=retyped))
    return tuple(ops)


# ---- spans -------------------------------------------------------------------------------------------------
def _key(value: Any) -> int | None:
    # Decimal strings in the state; int() of a str/int only, so the literal is digits and a sign.
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError
        return int(value)
    except ValueError:
        raise UsageError(f"bad key bound {value!r} in the state", hint="the image state is damaged; run a full sync") from None


def merge_spans(spans) -> list[tuple[int, int | None]]:
    """Replaced spans as sorted ``(lo, hi)`` ints, touching or overlapping spans merged into one."""
    out: list[list] = []
    for lo, hi in sorted(((_key(s[0]), _key(s[1])) for s in spans), key=lambda s: s[0]):
        if out and (out[-1][1] is None or lo <= out[-1][1]):
            if out[-1][1] is not None and (hi is None or hi > out[-1][1]):
                out[-1][1] = hi
            continue
        out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def span_predicate(key: str, spans, null_replaced: bool) -> str | None:
    """``WHERE`` condition matching exactly the rows of the replaced spans (and NULL keys if asked).

    ``None`` when nothing is replaced. The domain minimum is left out (``key >= -2^63`` is every key).
    """
    k = quote_ident(key)
    terms = []
    for lo, hi in merge_spans(spans):
        conds = []
        if lo > MIN_SIGNED:
            conds.append(f"{k} >= {lo}")
        if hi is not None:
            conds.append(f"{k} < {hi}")
        terms.append(" AND ".join(conds) if conds else f"{k} IS NOT NULL")
    if null_replaced:
        terms.append(f"{k} IS NULL")
    if not terms:
        return None
    return " OR ".join(f"({t})" for t in terms) if len(terms) > 1 else terms[0]


# ---- the steps of one run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadSteps:
    """What applying one run (or the image) means, independent of the warehouse's dialect."""

    table: str  # source table name (comments only)
    target: str  # quoted target table
    target_label: str  # the unquoted name recorded in sparsesync_loads
    key: str
    run_id: str
    sequence: int
    columns: tuple[dict, ...]  # the run's own columns (its schema version), in the files' order
    delete_where: str | None
    has_parts: bool
    schema_version: int = 1
    from_version: int = 1  # the version the target must be at for ``evolve`` to apply
    whole: bool = False  # a first/full run or the image: rebuild the target
    evolve: tuple[Op, ...] = field(default=())
    image: bool = False  # loaded from current.manifest.json

    @property
    def column_list(self) -> str:
        return ", ".join(quote_ident(c["name"]) for c in self.columns)


def load_steps(state, run, *, target: str | None = None, from_version: int | None = None,
               dialect: str = "redshift") -> LoadSteps:
    """The dialect-free description of applying ``run`` of ``state``'s table to ``target``.

    ``from_version`` is the target's schema version before the run (default: that of the previous run,
    which is what a target that applied it has); the run's ALTER/swap steps lead from it to the run's own.
    """
    st, rn = as_dict(state), as_dict(run)
    label = target or default_target(st["table"])
    seq, version = int(rn["sequence"]), run_version(rn)
    parts = [p for p in st.get("parts", []) if p.get("run_id") == rn["run_id"] and p.get("path")]
    has_parts = bool(parts) or bool(rn.get("rows"))
    whole = rn.get("kind") in WHOLE_KINDS
    if from_version is None:
        prev = next((as_dict(r) for r in st.get("runs", []) if int(as_dict(r)["sequence"]) == seq - 1), None)
        from_version = run_version(prev) if prev is not None else version
    if from_version > version and not whole:
        raise NotFromParts(f"run {rn['run_id']} has schema version {version}, older than the target's {from_version}",
                        table=st["table"], hint="load the current image instead: sparsesync load … --from-image")
    return LoadSteps(
        table=st["table"], target=quote_target(label), target_label=label, key=st["key"], run_id=rn["run_id"],
        sequence=seq, columns=columns_of(st, version),
        delete_where=span_predicate(st["key"], rn.get("replaced") or [], bool(rn.get("null_replaced"))),
        has_parts=has_parts, schema_version=version, from_version=from_version, whole=whole,
        evolve=() if whole else evolution(st, from_version, version, dialect),
    )


def image_steps(state, *, target: str | None = None) -> LoadSteps:
    """Loading the whole current image (``current.manifest.json``), recorded as the image's sequence."""
    st = as_dict(state)
    label = target or default_target(st["table"])
    runs = sorted((as_dict(r) for r in st.get("runs", [])), key=lambda r: int(r["sequence"]))
    last = next((r for r in reversed(runs) if int(r["sequence"]) == int(st["sequence"])), None)
    version = image_version(st)
    files = [p for p in st.get("parts", []) if p.get("path")]
    return LoadSteps(
        table=st["table"], target=quote_target(label), target_label=label, key=st["key"],
        run_id=last["run_id"] if last else f"image-{st['sequence']}", sequence=int(st["sequence"]),
        columns=tuple(st["columns"]), delete_where=None, has_parts=bool(files), schema_version=version,
        from_version=version, whole=True, image=True,
    )


def staging_name(steps: LoadSteps) -> str:
    """The temporary staging table of this run."""
    return quote_ident(f"sparsesync_stage_{steps.sequence}")


def swap_name(steps: LoadSteps) -> tuple[str, str]:
    """``(quoted new table, bare final name)``: the new table is made beside the target, then renamed to it."""
    parts = target_parts(steps.target_label)
    new = parts[:-1] + [parts[-1] + SWAP_SUFFIX]
    return ".".join(quote_ident(p) for p in new), parts[-1]


# ---- guards and bookkeeping --------------------------------------------------------------------------------
def _max_seq(steps: LoadSteps, dialect: str) -> str:
    return f"(SELECT MAX(sequence) FROM {LOADS_TABLE} WHERE target = {sql_string(steps.target_label, dialect)})"


def guard_condition(steps: LoadSteps, dialect: str = "redshift") -> str:
    """SQL true when a newer run than this one was already applied to the target."""
    return f"{_max_seq(steps, dialect)} > {steps.sequence}"


def previous_missing_condition(steps: LoadSteps, dialect: str = "redshift") -> str:
    """SQL true when the target has not applied the run before this one (it would miss its rows)."""
    return f"COALESCE({_max_seq(steps, dialect)}, -1) < {steps.sequence - 1}"


def target_version_sql(steps: LoadSteps, dialect: str = "redshift") -> str:
    """The target's schema version: that of its latest recorded run (1 for rows recorded before versions)."""
    tgt = sql_string(steps.target_label, dialect)
    return (f"(SELECT COALESCE(MAX(schema_version), 1) FROM {LOADS_TABLE} WHERE target = {tgt} "
            f"AND sequence = {_max_seq(steps, dialect)})")


def guards(steps: LoadSteps, dialect: str = "redshift") -> list[tuple[str, str]]:
    """``(condition, message)`` pairs; a true condition refuses the run."""
    label = steps.target_label
    out = [(guard_condition(steps, dialect),
            f"sparsesync: refusing run {steps.run_id} (sequence {steps.sequence}): a newer run of {label} is already applied")]
    if not steps.whole:
        out.append((previous_missing_condition(steps, dialect),
                    f"sparsesync: refusing run {steps.run_id} (sequence {steps.sequence}): {label} has not applied "
                    f"sequence {steps.sequence - 1}; load it with sparsesync load (it loads the image when runs are gone)"))
    if steps.evolve:
        out.append((f"{target_version_sql(steps, dialect)} <> {steps.from_version}",
                    f"sparsesync: not applying run {steps.run_id} (sequence {steps.sequence}): its schema steps lead "
                    f"from version {steps.from_version} and {label} is not at it (already applied?); nothing changed"))
    return out


def guard_sql(condition: str, message: str, dialect: str) -> str:
    """A statement failing (so the transaction rolls back) when ``condition`` holds."""
    if dialect == "duckdb":
        return f"SELECT CASE WHEN {condition} THEN error({sql_string(message, dialect)}) END"
    return f"SELECT CASE WHEN {condition}\n  THEN CAST({sql_string(message, dialect)} AS INTEGER) END"


def loads_ddl(timestamp_type: str = "TIMESTAMP") -> str:
    """The bookkeeping table: one row per applied run and target, with the target's schema version after it."""
    return (
        f"CREATE TABLE IF NOT EXISTS {LOADS_TABLE} (target VARCHAR(512) NOT NULL, run_id VARCHAR(64) NOT NULL, "
        f"sequence BIGINT NOT NULL, applied_at {timestamp_type}, schema_version BIGINT)"
    )


def loads_migration() -> str:
    """Adds ``schema_version`` to a ``sparsesync_loads`` made before schema versions (run once when missing)."""
    return f"ALTER TABLE {LOADS_TABLE} ADD COLUMN schema_version BIGINT"


def record_statements(steps: LoadSteps, now_sql: str, dialect: str = "redshift") -> list[str]:
    """Replace this run's row in ``sparsesync_loads`` (re-applying leaves one row, not two)."""
    tgt = sql_string(steps.target_label, dialect)
    return [
        f"DELETE FROM {LOADS_TABLE} WHERE target = {tgt} AND sequence = {steps.sequence}",
        f"INSERT INTO {LOADS_TABLE} (target, run_id, sequence, applied_at, schema_version) VALUES "
        f"({tgt}, {sql_string(steps.run_id, dialect)}, {steps.sequence}, {now_sql}, {steps.schema_version})",
    ]


# ---- DDL ------------------------------------------------------------------------------------------------------
TypeOf = Callable[[dict], str]


def redshift_type(col: dict) -> str:
    return checked_type(col["name"], col["redshift_type"])


def columns_ddl(columns, type_of: TypeOf, *, not_null: bool) -> str:
    return ",\n".join(
        f"  {quote_ident(c['name'])} {type_of(c)}{' NOT NULL' if not_null and not c.get('nullable', True) else ''}"
        for c in columns)


def create_target_sql(steps: LoadSteps) -> str:
    """Redshift DDL of the target from the state's column types; the key is the sort key."""
    return (f"CREATE TABLE IF NOT EXISTS {steps.target} (\n{columns_ddl(steps.columns, redshift_type, not_null=True)}\n)"
            f"\nSORTKEY ({quote_ident(steps.key)})")


def evolve_statements(steps: LoadSteps, type_of: TypeOf, dialect: str = "redshift") -> list[str]:
    """The ALTER / swap statements of ``steps.evolve`` (run inside the run's transaction)."""
    out = []
    t = steps.target
    for op in steps.evolve:
        if op.kind == "add":  # nullable in the warehouse: the rows already there have no value for it
            out.append(f"ALTER TABLE {t} ADD COLUMN {quote_ident(op.col['name'])} {type_of(op.col)}")
        elif op.kind == "drop":
            out.append(f"ALTER TABLE {t} DROP COLUMN {quote_ident(op.column)}")
        elif op.kind == "rename":
            out.append(f"ALTER TABLE {t} RENAME COLUMN {quote_ident(op.column)} TO {quote_ident(op.new_name)}")
        elif op.kind == "swap":
            new, final = swap_name(steps)
            names = ", ".join(quote_ident(c["name"]) for c in op.columns)
            casts = ", ".join(f"CAST({quote_ident(c['name'])} AS {type_of(c)})" for c in op.columns)
            out += [
                f"DROP TABLE IF EXISTS {new}",
                f"CREATE TABLE {new} (\n{columns_ddl(op.columns, type_of, not_null=False)}\n)"
                + (f"\nSORTKEY ({quote_ident(steps.key)})" if dialect == "redshift" else ""),
                f"INSERT INTO {new} ({names}) SELECT {casts} FROM {t}",
                f"DROP TABLE {t}",
                f"ALTER TABLE {new} RENAME TO {quote_ident(final)}",
            ]
    return out


def rebuild_head(steps: LoadSteps, type_of: TypeOf, dialect: str = "redshift") -> list[str]:
    """A first/full run or the image: a new table with the columns of ``steps`` in the files' order (the
    COPY / read fills it), made beside the target; :func:`rebuild_tail` swaps it in."""
    new, _ = swap_name(steps)
    return [f"DROP TABLE IF EXISTS {new}",
            f"CREATE TABLE {new} (\n{columns_ddl(steps.columns, type_of, not_null=True)}\n)"
            + (f"\nSORTKEY ({quote_ident(steps.key)})" if dialect == "redshift" else "")]


def rebuild_tail(steps: LoadSteps) -> list[str]:
    new, final = swap_name(steps)
    return [f"DROP TABLE IF EXISTS {steps.target}", f"ALTER TABLE {new} RENAME TO {quote_ident(final)}"]


# ---- Redshift load.sql ------------------------------------------------------------------------------------------
def _copy(into: str, manifest: str, role: str) -> str:
    # COPY from Parquet fills columns in the files' order; the table it fills is made with exactly the
    # files' columns, in that order (explicit list), and rows move on to the target by name.
    return f"COPY {into}\nFROM {manifest}\nIAM_ROLE {role}\nFORMAT AS PARQUET\nMANIFEST;"


def _header(steps: LoadSteps, what: str) -> list[str]:
    return [
        f"-- sparsesync: {what} of {steps.table} to {steps.target}",
        f"-- schema version {steps.schema_version}"
        + (f" (the target is evolved from version {steps.from_version}: "
           + "; ".join(op.describe() for op in steps.evolve) + ")" if steps.evolve else ""),
        "-- Safe to run twice; refused (cast error, transaction rolled back) after a newer run of this target.",
        f"-- A {LOADS_TABLE} made before schema versions needs once: {loads_migration()};",
        "BEGIN;",
        loads_ddl() + ";",
        f"LOCK {LOADS_TABLE};",
    ]


def write_load_sql(state, run, *, target: str | None = None, iam_role: str | None = None,
                   manifest_url: str | None = None, from_version: int | None = None) -> str:
    """Redshift SQL applying ``run`` in one transaction (see the module docstring).

    ``manifest_url`` is the run's delta manifest as Redshift sees it (``s3://…/<run_id>/manifest.json``);
    a run without parts (an empty table, or spans whose rows were all deleted) skips COPY and INSERT but
    still deletes its spans. Returns the text; the caller stores it as ``<run_id>/load.sql``.
    """
    try:
        steps = load_steps(state, run, target=target, from_version=from_version)
    except LoadError as exc:
        # The run cannot be expressed as steps (e.g. a schema history without a way from the previous
        # version): the script refuses, and the sync that writes it still commits.
        rid = as_dict(run).get("run_id", "?")
        why = " ".join(exc.message.split())
        return (f"-- sparsesync: run {rid} cannot be applied from its parts: {why}\n"
                "-- Load the current image instead: sparsesync load DEST TABLE --into … --from-image\n"
                f"SELECT CAST({sql_string('sparsesync: run ' + rid + ' cannot be applied; load the image (--from-image)')} AS INTEGER);\n")
    role = sql_string(iam_role or IAM_ROLE_PLACEHOLDER)
    manifest = sql_string(manifest_url or f"<MANIFEST_URL of {steps.run_id}/manifest.json>")
    return _render(steps, role, manifest, f"apply run {steps.run_id} (sequence {steps.sequence})")


def write_image_load_sql(state, *, target: str | None = None, iam_role: str | None = None,
                         manifest_url: str | None = None) -> str:
    """Redshift SQL loading the whole current image (``current.manifest.json``) into a new table swapped in
    for the target, recorded as the image's sequence: for a new target, or one behind the runs still kept."""
    steps = image_steps(state, target=target)
    role = sql_string(iam_role or IAM_ROLE_PLACEHOLDER)
    manifest = sql_string(manifest_url or f"<MANIFEST_URL of {steps.table}/current.manifest.json>")
    return _render(steps, role, manifest, f"load the image at sequence {steps.sequence} (current.manifest.json)")


def _render(steps: LoadSteps, role: str, manifest: str, what: str) -> str:
    out = _header(steps, what)
    out += [g + ";" for g in (guard_sql(c, m, "redshift") for c, m in guards(steps))]
    if steps.whole:
        new, _ = swap_name(steps)
        out += [s + ";" for s in rebuild_head(steps, redshift_type)]
        if steps.has_parts:
            out.append(_copy(new, manifest, role))
        out += [s + ";" for s in rebuild_tail(steps)]
    else:
        stage = staging_name(steps)
        out += [s + ";" for s in evolve_statements(steps, redshift_type)]
        if steps.has_parts:
            out += [f"CREATE TEMP TABLE {stage} (\n{columns_ddl(steps.columns, redshift_type, not_null=False)}\n);",
                    _copy(stage, manifest, role)]
        if steps.delete_where:
            out.append(f"DELETE FROM {steps.target} WHERE {steps.delete_where};")
        if steps.has_parts:
            out += [f"INSERT INTO {steps.target} ({steps.column_list}) SELECT {steps.column_list} FROM {stage};",
                    f"DROP TABLE {stage};"]
    out += [s + ";" for s in record_statements(steps, "GETDATE()")]
    out.append("COMMIT;")
    return "\n".join(out) + "\n"
