"""``load_pending``: bring a warehouse table up to a table's image, run by run, each exactly once.

* ``duckdb:///path.duckdb`` (three slashes relative, four absolute) — executed here: DuckDB cannot run
  Redshift's COPY, so the same steps run with ``read_parquet`` of the run's delta-manifest parts as the
  staging table (see :mod:`sparsesync.sync.loadsql`).
* ``redshift+<driver>://…`` — each run's ``load.sql`` executed through SQLAlchemy when a Redshift
  dialect (e.g. ``sqlalchemy-redshift``) is installed; sparsesync does not depend on one.

Pending runs are those with a sequence above the highest the target's ``sparsesync_loads`` rows hold.
Each is applied with its own schema version's columns; before a run of a newer version the target is
evolved (ALTER … ADD/DROP/RENAME COLUMN, a swap for a type change), in the run's transaction. A ``full``
run supersedes every pending run before it. A target that is new, missing, or behind the runs still at
the destination (``gc`` removed their parts, or the state holds no run after the target's) is loaded from
the current image instead (``current.manifest.json``), recorded as the image's sequence; ``--from-image``
asks for that.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sparsesync.errors import LoadError, UsageError
from sparsesync.naming import table_folder

from . import loadsql
from .loadsql import (LOADS_TABLE, WHOLE_KINDS, NotFromParts, as_dict, image_steps, load_steps, quote_ident,  # noqa: F401 - contract names
                      run_version, sql_string, staging_name, write_image_load_sql, write_load_sql)

STATE_FILE = "_state.json"
CURRENT_MANIFEST = "current.manifest.json"
FROM_IMAGE_HINT = "sparsesync load DEST TABLE --into … --from-image loads the current image"


class PartMissing(NotFromParts):
    """A part a run (or the image) lists is not at the destination (removed by gc)."""


class PartMismatch(NotFromParts):
    """A part's columns are not those of its run's schema version."""


@dataclass
class LoadResult:
    """What one ``load`` did: the image load (if any), the runs applied (in order), the target's rows after."""

    table: str
    target: str
    warehouse: str
    applied: list[str] = field(default_factory=list)
    already: int | None = None  # highest sequence applied before this load
    rows: int | None = None
    from_image: int | None = None  # the image's sequence, when the target was loaded from the image
    reason: str | None = None  # why it was
    superseded: list[str] = field(default_factory=list)  # pending runs a full run or the image made needless
    schema_version: int | None = None  # the target's schema version afterwards
    evolved: list[str] = field(default_factory=list)  # the schema steps applied, "run_id: step"

    def summary(self) -> str:
        """One line for the terminal."""
        head = f"{self.table} → {self.target}: "
        if self.from_image is None and not self.applied:
            return head + f"up to date (sequence {self.already}), schema version {self.schema_version}"
        said = []
        if self.from_image is not None:
            said.append(f"loaded the image (sequence {self.from_image}) from {CURRENT_MANIFEST} because {self.reason}")
        if self.applied:
            said.append(f"applied run {self.applied[0]}" if len(self.applied) == 1 else
                        f"applied {len(self.applied)} runs {self.applied[0]} … {self.applied[-1]}")
        if self.superseded:
            said.append(f"{len(self.superseded)} earlier pending run(s) superseded")
        if self.evolved:
            said.append("schema: " + ", ".join(self.evolved))
        rows = f"{self.rows:,}" if self.rows is not None else "?"
        return head + "; ".join(said) + f"; {rows} rows, schema version {self.schema_version}"


def read_state(sink, table: str) -> dict:
    """The table's image state as a dict; a missing or unreadable one is a :class:`LoadError`."""
    from .state import load_state  # validates schema and hash

    state = load_state(sink, table)
    if state is None:
        raise LoadError(f"no image state at {sink.url(table_folder(table) + '/' + STATE_FILE)}", table=table,
                        hint="run `sparsesync sync` for this table first")
    return as_dict(state)


# ---- which runs, or the image --------------------------------------------------------------------------------
@dataclass
class LoadPlan:
    """The runs to apply in order, or ``from_image`` (why) — then no run: the image holds them all."""

    runs: list[dict]
    from_image: str | None = None
    superseded: list[str] = field(default_factory=list)


def _runs(state: dict) -> list[dict]:
    return sorted((as_dict(r) for r in state.get("runs", [])), key=lambda r: int(r["sequence"]))


def pending_runs(state: dict, applied: int | None) -> list[dict]:
    """Runs after ``applied`` in sequence order, starting at the last full run among them (it supersedes
    the earlier ones); a gap (a run the warehouse would miss) is a :class:`LoadError`."""
    todo = [r for r in _runs(state) if applied is None or int(r["sequence"]) > applied]
    whole = [i for i, r in enumerate(todo) if r.get("kind") in WHOLE_KINDS]
    if whole:
        todo = todo[whole[-1]:]
    if todo and todo[0].get("kind") not in WHOLE_KINDS:
        expected = 1 if applied is None else applied + 1
        if int(todo[0]["sequence"]) != expected:
            raise LoadError(
                f"the warehouse has applied up to sequence {applied} but the state's next run is "
                f"{todo[0]['run_id']} (sequence {todo[0]['sequence']})", table=state["table"], hint=FROM_IMAGE_HINT)
    return todo


def plan_load(state: dict, applied: int | None, *, exists: bool, target_version: int | None,
              from_image: bool = False, missing=None) -> LoadPlan:
    """Decide how to bring the target up to the image. ``missing(run)`` names a part of ``run`` that is no
    longer at the destination (or ``None``)."""
    runs = _runs(state)
    image_seq = int(state["sequence"])
    if applied is not None and applied > image_seq:
        raise LoadError(f"the target has applied sequence {applied}, newer than the image's {image_seq} "
                        "(was the image re-created?)", table=state["table"],
                        hint="load into a new --target, or remove the target's rows from sparsesync_loads")

    def image(reason: str) -> LoadPlan:  # the image holds every pending run (a new target had none pending)
        skipped = [] if applied is None else [r["run_id"] for r in runs if int(r["sequence"]) > applied]
        return LoadPlan(runs=[], from_image=reason, superseded=skipped[:-1])

    if from_image:
        return image("--from-image was given")
    if applied is None:
        return image("the target is new")
    if not exists:
        return image(f"the target table does not exist although {LOADS_TABLE} records sequence {applied}")
    todo = [r for r in runs if int(r["sequence"]) > applied]
    whole = [i for i, r in enumerate(todo) if r.get("kind") in WHOLE_KINDS]
    superseded = [r["run_id"] for r in todo[:whole[-1]]] if whole else []
    todo = todo[whole[-1]:] if whole else todo
    if not todo:
        return LoadPlan(runs=[])
    first = todo[0]
    if first.get("kind") not in WHOLE_KINDS and int(first["sequence"]) != applied + 1:
        return image(f"the image keeps no run after sequence {applied} (its next is {first['sequence']})")
    if target_version is not None and first.get("kind") not in WHOLE_KINDS and run_version(first) < target_version:
        return image(f"run {first['run_id']} has schema version {run_version(first)}, older than the target's {target_version}")
    if missing is not None:
        for r in todo:
            gone = missing(r)
            if gone:
                return image(f"run {r['run_id']}'s part {gone} is no longer at the destination (removed by gc?)")
    return LoadPlan(runs=todo, superseded=superseded)


def run_part_paths(sink, table: str, run: dict) -> list[str]:
    """Relative paths of the parts in ``run``'s delta manifest (none when the run wrote none)."""
    rel = f"{table_folder(table)}/{run.get('manifest') or run['run_id'] + '/manifest.json'}"
    raw = sink.get_bytes(rel)
    if raw is None:
        if int(run.get("rows") or 0) == 0:
            return []
        raise PartMissing(f"run {run['run_id']} has rows but no manifest", table=table, file=sink.url(rel),
                          hint="the run's folder is gone (gc) or the run did not finish; " + FROM_IMAGE_HINT)
    folder = rel.rsplit("/", 1)[0]
    return [f"{folder}/{e['url'].rsplit('/', 1)[1]}" for e in json.loads(raw).get("entries", [])]


def image_part_paths(state: dict) -> list[str]:
    """Relative paths of every file of the image (what ``current.manifest.json`` lists), in key order."""
    folder = table_folder(state["table"])
    out = []
    for p in state.get("parts", []):
        if p.get("path"):
            out.append(f"{folder}/{p['path']}")
        out += [f"{folder}/{f['path']}" for f in p.get("more", ())]
    return out


def _missing_part(sink, table: str):
    def check(run: dict) -> str | None:
        try:
            rels = run_part_paths(sink, table, run)
        except PartMissing:
            return f"{run['run_id']}/manifest.json"
        return next((rel for rel in rels if not sink.exists(rel)), None)
    return check


def parse_into(url: str) -> tuple[str, str]:
    """``(kind, location)`` for ``--into``: ``duckdb`` with a file path, or ``redshift`` with the URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UsageError(f"cannot parse --into {url.split('://')[0]}://…", hint="e.g. duckdb:///warehouse.duckdb") from exc
    backend = parsed.get_backend_name()
    if backend == "duckdb":
        if not parsed.database:
            raise UsageError("--into duckdb:/// needs a file", hint="duckdb:///wh.duckdb (relative) or duckdb:////abs/wh.duckdb")
        return "duckdb", parsed.database
    if backend == "redshift":
        return "redshift", url
    raise UsageError(f"unsupported warehouse {backend}://", hint="use duckdb:///file.duckdb or redshift+<driver>://…")


def load_pending(dest, table: str, into_url: str, *, target: str | None = None,
                 iam_role: str | None = None, from_image: bool = False) -> LoadResult:
    """Apply every run of ``table`` at ``dest`` that ``into_url``'s target has not applied yet, in order
    (or load the current image, see the module docstring)."""
    from sparsesync.executor.dest import open_sink

    kind, location = parse_into(into_url)
    sink = open_sink(dest)
    try:
        state = read_state(sink, table)
        label = target or loadsql.default_target(state["table"])
        loadsql.quote_target(label)  # a bad name is refused before anything is opened
        if kind == "duckdb":
            return _load_duckdb(sink, state, location, label, from_image)
        return _load_redshift(sink, state, location, label, iam_role, from_image)
    finally:
        if sink is not dest and hasattr(sink, "close"):
            sink.close()


def _target_version(state: dict, applied: int | None, recorded: int | None) -> int | None:
    """The target's schema version: recorded, or (a row from before versions) that of the run it applied."""
    if applied is None:
        return None
    if recorded is not None:
        return int(recorded)
    run = next((r for r in _runs(state) if int(r["sequence"]) == int(applied)), None)
    return run_version(run) if run is not None else 1


# ---- DuckDB ------------------------------------------------------------------------------------------------
def _load_duckdb(sink, state: dict, path: str, label: str, from_image: bool) -> LoadResult:
    import duckdb

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(path)
    except (OSError, duckdb.Error) as exc:
        raise LoadError(f"cannot open the DuckDB warehouse {path}: {exc}", table=state["table"]) from exc
    result = LoadResult(table=state["table"], target=label, warehouse=f"duckdb:///{path}")
    try:
        prepare_loads_duckdb(con)
        result.already, version = _status_duckdb(con, label, state)
        plan = plan_load(state, result.already, exists=_exists_duckdb(con, label), target_version=version,
                         from_image=from_image, missing=_missing_part(sink, state["table"]))
        result.superseded = list(plan.superseded)
        with tempfile.TemporaryDirectory(prefix="sparsesync-load-") as tmp:
            if plan.from_image is None and plan.runs and plan.runs[0].get("kind") not in WHOLE_KINDS:
                check_target_columns_duckdb(con, state, label, version)
            status = (result.already, version)
            for run in plan.runs:
                try:
                    steps = apply_run_duckdb(con, sink, state, run, label, tmp, status=status)
                    status = (steps.sequence, steps.schema_version)
                except NotFromParts as exc:  # gc raced us, the parts were rewritten, no way through the history
                    plan.from_image = f"run {run['run_id']} cannot be applied from its parts: {exc.message}" + \
                        (f" ({os.path.basename(exc.file)})" if exc.file else "")
                    result.superseded += [r["run_id"] for r in plan.runs if r["run_id"] not in result.applied]
                    break
                result.applied.append(run["run_id"])
                result.evolved += [f"{run['run_id']}: {op.describe()}" for op in steps.evolve]
            if plan.from_image is not None:
                load_image_duckdb(con, sink, state, label, tmp)
                result.from_image, result.reason = int(state["sequence"]), plan.from_image
        result.rows = con.execute(f"SELECT COUNT(*) FROM {loadsql.quote_target(label)}").fetchall()[0][0]
        result.schema_version = _status_duckdb(con, label, state)[1]
    finally:
        con.close()
    return result


def prepare_loads_duckdb(con) -> None:
    """Create ``sparsesync_loads``, or add ``schema_version`` to one made before schema versions."""
    con.execute(loadsql.loads_ddl()).fetchall()
    cols = {r[0] for r in con.execute(f"DESCRIBE {LOADS_TABLE}").fetchall()}
    if "schema_version" not in cols:
        con.execute(loadsql.loads_migration()).fetchall()


def _status_duckdb(con, label: str, state: dict) -> tuple[int | None, int | None]:
    row = con.execute(f"SELECT sequence, schema_version FROM {LOADS_TABLE} WHERE target = ? "
                      "ORDER BY sequence DESC LIMIT 1", [label]).fetchall()
    row = row[0] if row else None
    if row is None:
        return None, None
    return int(row[0]), _target_version(state, int(row[0]), row[1])


def _applied(con, label: str) -> int | None:
    return con.execute(f"SELECT MAX(sequence) FROM {LOADS_TABLE} WHERE target = ?", [label]).fetchall()[0][0]


def _exists_duckdb(con, label: str) -> bool:
    import duckdb

    try:
        con.execute(f"SELECT 1 FROM {loadsql.quote_target(label)} LIMIT 0").fetchall()
        return True
    except duckdb.CatalogException:
        return False


def check_target_columns_duckdb(con, state: dict, label: str, version: int | None) -> None:
    """The target holds the columns of the schema version it records (by name), or nothing is applied."""
    if version is None:
        return
    have = [r[0] for r in con.execute(f"DESCRIBE {loadsql.quote_target(label)}").fetchall()]
    want = [c["name"] for c in loadsql.columns_of(state, version)]
    if sorted(have) != sorted(want):
        raise LoadError(f"the target {label} has columns {have}, not those of schema version {version} {want}",
                        table=state["table"], hint="it was changed by hand; " + FROM_IMAGE_HINT + " (a new table)")


def _duck_types(con, columns) -> dict[str, str]:
    """The DuckDB type of each column, as DuckDB reads its Arrow type."""
    import pyarrow as pa

    from sparsesync.planner.plan import arrow_type_from_string

    if not columns:
        return {}
    schema = pa.schema([pa.field(c["name"], arrow_type_from_string(c["arrow_type"])) for c in columns])
    con.register("sparsesync_types", pa.Table.from_batches([], schema=schema))
    try:
        return {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM sparsesync_types").fetchall()}
    finally:
        con.unregister("sparsesync_types")


def _local_parts(sink, rels: list[str], tmp: str) -> list[str]:
    from sparsesync.executor.dest import is_local

    out = []
    for rel in rels:
        if is_local(sink):
            if not sink.exists(rel):
                raise PartMissing("a part is missing (removed by gc?)", file=sink.url(rel), hint=FROM_IMAGE_HINT)
            out.append(sink.url(rel))
            continue
        data = sink.get_bytes(rel)
        if data is None:
            raise PartMissing("a part is missing (removed by gc?)", file=sink.url(rel), hint=FROM_IMAGE_HINT)
        local = os.path.join(tmp, rel.replace("/", "__"))
        Path(local).write_bytes(data)
        out.append(local)
    return out


def _check_columns(files: list[str], columns, what: str) -> None:
    """Every file has exactly ``columns``, in order (COPY from Parquet fills the staging table by position)."""
    import pyarrow.parquet as pq

    want = [c["name"] for c in columns]
    import pyarrow as pa

    for f in files:
        try:
            have = pq.read_schema(f).names
        except (pa.ArrowException, OSError) as exc:
            raise LoadError(f"{what}: part {os.path.basename(f)} is not a readable Parquet file ({exc})", file=f,
                            hint="restore the part, or re-sync the table with --full (a full run replaces it)") from exc
        if have != want:
            raise PartMismatch(f"{what}: part {os.path.basename(f)} has columns {have}, expected {want}", file=f)


def _fail(exc, steps, label: str):
    msg = str(exc).split("\n", 1)[0]
    if "already applied" in msg:
        return LoadError(f"refusing run {steps.run_id} (sequence {steps.sequence}): a newer run is already applied",
                         table=steps.table, hint="runs apply in sequence order; an older run cannot follow a newer one")
    if "has not applied sequence" in msg:
        return LoadError(f"refusing run {steps.run_id} (sequence {steps.sequence}): {label} has not applied the "
                         "run before it", table=steps.table, hint="load with `sparsesync load` (it follows the runs in order)")
    return LoadError(f"applying {'the image' if steps.image else 'run ' + steps.run_id} failed: {msg}", table=steps.table,
                     hint="nothing was changed (one transaction); " + FROM_IMAGE_HINT)


def _execute(con, statements: list[str]) -> None:
    for stmt in statements:
        con.execute(stmt).fetchall()  # DuckDB keeps a result open until it is fetched


def apply_run_duckdb(con, sink, state: dict, run: dict, label: str, tmp: str, *, status=None):
    """The Redshift ``load.sql`` steps for one run, in one DuckDB transaction; returns its :class:`LoadSteps`.

    The target is evolved from the schema version it records to the run's; a run older than the target's
    latest is refused; re-applying the latest run changes nothing (no schema step runs twice). ``status``:
    the target's ``(sequence, schema version)`` when the caller has just read it."""
    import duckdb

    if status is None:
        prepare_loads_duckdb(con)
        status = _status_duckdb(con, label, state)
    applied, version = status
    if run.get("kind") not in WHOLE_KINDS and not _exists_duckdb(con, label):
        raise LoadError(f"the target {label} does not exist", table=state["table"], hint=FROM_IMAGE_HINT)
    rver = run_version(run)
    steps = load_steps(state, run, target=label, dialect="duckdb",
                       from_version=rver if version is None or applied >= int(run["sequence"]) else min(version, rver))
    if steps.whole:
        return _rebuild_duckdb(con, sink, state, steps, run_part_paths(sink, steps.table, run), tmp)
    files = _local_parts(sink, run_part_paths(sink, steps.table, run), tmp)
    _check_columns(files, steps.columns, f"run {steps.run_id} (schema version {steps.schema_version})")
    types = _duck_types(con, [c for op in steps.evolve for c in ((op.col,) if op.col else op.columns)])
    stage = staging_name(steps)
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        _execute(con, [loadsql.guard_sql(c, m, "duckdb") for c, m in loadsql.guards(steps, "duckdb")])
        _execute(con, loadsql.evolve_statements(steps, lambda c: types[c["name"]], "duckdb"))
        if files:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT {steps.column_list} FROM read_parquet(?)", [files]).fetchall()
            outside = con.execute(
                f"SELECT COUNT(*) FROM {stage} WHERE NOT ({steps.delete_where or 'FALSE'})"
            ).fetchall()[0][0]
            if outside:
                # Rows outside the spans the run deletes would be duplicated by a second application.
                raise LoadError(f"run {steps.run_id} holds {outside} row(s) outside the spans it replaces",
                                table=steps.table, hint="the image state is inconsistent; run a full sync")
        if steps.delete_where:
            con.execute(f"DELETE FROM {steps.target} WHERE {steps.delete_where}").fetchall()
        if files:
            con.execute(f"INSERT INTO {steps.target} ({steps.column_list}) SELECT {steps.column_list} FROM {stage}").fetchall()
            con.execute(f"DROP TABLE {stage}").fetchall()
        _execute(con, loadsql.record_statements(steps, "now()", "duckdb"))
        con.execute("COMMIT").fetchall()
    except duckdb.Error as exc:
        con.execute("ROLLBACK").fetchall()
        raise _fail(exc, steps, label) from exc
    except BaseException:
        con.execute("ROLLBACK").fetchall()
        raise
    return steps


def load_image_duckdb(con, sink, state: dict, label: str, tmp: str):
    """Load the whole current image into a new table swapped in for the target (one transaction)."""
    steps = image_steps(state, target=label)
    try:
        return _rebuild_duckdb(con, sink, state, steps, image_part_paths(state), tmp)
    except PartMissing as exc:
        raise LoadError("a part of the current image is missing", table=state["table"], file=exc.file,
                        hint="the image is damaged (a part removed by hand?); re-sync the table with --full") from exc
    except NotFromParts as exc:
        raise LoadError(f"the image is inconsistent: {exc.message}", table=state["table"], file=exc.file,
                        hint="re-sync the table with --full") from exc


def _rebuild_duckdb(con, sink, state: dict, steps, rels: list[str], tmp: str):
    import duckdb

    files = _local_parts(sink, rels, tmp)
    _check_columns(files, steps.columns, "the image" if steps.image else f"run {steps.run_id}")
    types = _duck_types(con, steps.columns)
    new, _ = loadsql.swap_name(steps)
    schema = loadsql.target_parts(steps.target_label)[:-1]
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        if schema:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema[0])}").fetchall()
        _execute(con, [loadsql.guard_sql(c, m, "duckdb") for c, m in loadsql.guards(steps, "duckdb")])
        _execute(con, loadsql.rebuild_head(steps, lambda c: types[c["name"]], "duckdb"))
        if files:
            con.execute(f"INSERT INTO {new} ({steps.column_list}) SELECT {steps.column_list} FROM read_parquet(?)", [files]).fetchall()
        if steps.image:
            got = con.execute(f"SELECT COUNT(*) FROM {new}").fetchall()[0][0]
            want = sum(int(p.get("rows") or 0) for p in state.get("parts", []))
            if got != want:
                raise LoadError(f"the image's parts hold {got:,} rows, its state says {want:,}", table=steps.table,
                                hint="the image is damaged; re-sync the table with --full")
        _execute(con, loadsql.rebuild_tail(steps))
        _execute(con, loadsql.record_statements(steps, "now()", "duckdb"))
        con.execute("COMMIT").fetchall()
    except duckdb.Error as exc:
        con.execute("ROLLBACK").fetchall()
        raise _fail(exc, steps, steps.target_label) from exc
    except BaseException:
        con.execute("ROLLBACK").fetchall()
        raise
    return steps


# ---- Redshift ------------------------------------------------------------------------------------------------
def _load_redshift(sink, state: dict, url: str, label: str, iam_role: str | None, from_image: bool) -> LoadResult:
    import sqlalchemy as sa

    from sparsesync.source import redact, short_db_error

    from sparsesync.executor.dest import is_local

    if is_local(sink):
        raise UsageError("Redshift loads from S3 only", hint="sync to --dest s3://bucket/prefix")
    try:
        engine = sa.create_engine(url)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise UsageError(f"no Redshift driver for {redact(url)}",
                         hint="pip install sqlalchemy-redshift redshift_connector, or run each <run_id>/load.sql yourself") from exc
    folder = table_folder(state["table"])
    result = LoadResult(table=state["table"], target=label, warehouse=redact(url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(loadsql.loads_ddl())
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"SELECT schema_version FROM {LOADS_TABLE} WHERE 1 = 0")
        except sa.exc.SQLAlchemyError:  # made before schema versions
            with engine.begin() as conn:
                conn.exec_driver_sql(loadsql.loads_migration())
        with engine.begin() as conn:
            row = conn.execute(sa.text(f"SELECT sequence, schema_version FROM {LOADS_TABLE} WHERE target = :t "
                                       "ORDER BY sequence DESC LIMIT 1"), {"t": label}).fetchone()
        result.already = None if row is None else int(row[0])
        version = None if row is None else _target_version(state, int(row[0]), row[1])
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"SELECT 1 FROM {loadsql.quote_target(label)} WHERE 1 = 0")
            exists = True
        except sa.exc.SQLAlchemyError:
            exists = False
        plan = plan_load(state, result.already, exists=exists, target_version=version, from_image=from_image,
                         missing=_missing_part(sink, state["table"]))
        result.superseded = list(plan.superseded)
        scripts = []
        if plan.from_image is not None:
            scripts.append(write_image_load_sql(state, target=label, iam_role=iam_role,
                                                manifest_url=sink.url(f"{folder}/{CURRENT_MANIFEST}")))
            result.from_image, result.reason = int(state["sequence"]), plan.from_image
        for run in plan.runs:
            try:
                steps = load_steps(state, run, target=label, from_version=version)
            except NotFromParts as exc:  # no way through the schema history: the image holds it all
                scripts = [write_image_load_sql(state, target=label, iam_role=iam_role,
                                                manifest_url=sink.url(f"{folder}/{CURRENT_MANIFEST}"))]
                plan.from_image = f"run {run['run_id']} cannot be applied from its parts: {exc.message}"
                result.from_image, result.reason = int(state["sequence"]), plan.from_image
                result.superseded += [r["run_id"] for r in plan.runs]
                result.evolved, plan.runs = [], []
                break
            scripts.append(write_load_sql(state, run, target=label, iam_role=iam_role, from_version=version,
                                          manifest_url=sink.url(f"{folder}/{run.get('manifest') or run['run_id'] + '/manifest.json'}")))
            result.evolved += [f"{run['run_id']}: {op.describe()}" for op in steps.evolve]
            version = steps.schema_version
        for text, run in zip(scripts, ([None] if plan.from_image is not None else []) + plan.runs):
            with engine.connect() as conn:  # the script holds its own BEGIN … COMMIT
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                for stmt in _statements(text):
                    conn.exec_driver_sql(stmt)
            if run is not None:
                result.applied.append(run["run_id"])
        result.schema_version = version if plan.from_image is None else loadsql.image_version(state)
    except sa.exc.SQLAlchemyError as exc:
        raise LoadError(f"Redshift load failed: {short_db_error(exc)}", table=state["table"]) from exc
    finally:
        engine.dispose()
    return result


def _statements(script: str) -> list[str]:
    """Split a generated ``load.sql`` into statements (no ';' occurs inside its literals but at line ends)."""
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    return [s for s in (part.strip().rstrip(";").strip() for part in body.split(";\n")) if s]
