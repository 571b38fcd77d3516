"""``load_pending``: apply a table's sync runs that a warehouse has not seen yet, in order, exactly once.

* ``duckdb:///path.duckdb`` (three slashes relative, four absolute) — executed here: DuckDB cannot run
  Redshift's COPY, so the same steps run with ``read_parquet`` of the run's delta-manifest parts as the
  staging table (see :mod:`sparsesync.sync.loadsql`).
* ``redshift+<driver>://…`` — each run's ``load.sql`` executed through SQLAlchemy when a Redshift
  dialect (e.g. ``sqlalchemy-redshift``) is installed; sparsesync does not depend on one.

Pending runs are those with a sequence above the highest the target's ``sparsesync_loads`` rows hold.
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
from .loadsql import LOADS_TABLE, as_dict, load_steps, quote_ident, sql_string, staging_name, write_load_sql  # noqa: F401 - contract name

STATE_FILE = "_state.json"


@dataclass
class LoadResult:
    """What one ``load`` did: the runs applied (in order) and the target's row count afterwards."""

    table: str
    target: str
    warehouse: str
    applied: list[str] = field(default_factory=list)
    already: int | None = None  # highest sequence applied before this load
    rows: int | None = None

    def summary(self) -> str:
        """One line for the terminal."""
        if not self.applied:
            return f"{self.table} → {self.target}: up to date (sequence {self.already})"
        return (f"{self.table} → {self.target}: applied {len(self.applied)} run(s) "
                f"{self.applied[0]} … {self.applied[-1]}; {self.rows:,} rows")


def read_state(sink, table: str) -> dict:
    """The table's image state as a dict; a missing or unreadable one is a :class:`LoadError`."""
    try:
        from .state import load_state  # i9a's reader validates schema and hash
    except ImportError:  # pragma: no cover - until the state module lands
        load_state = None
    if load_state is not None:
        state = load_state(sink, table)
        if state is None:
            raise LoadError(f"no image state at {sink.url(table_folder(table) + '/' + STATE_FILE)}", table=table,
                            hint="run `sparsesync sync` for this table first")
        return as_dict(state)
    raw = sink.get_bytes(f"{table_folder(table)}/{STATE_FILE}")  # pragma: no cover
    if raw is None:  # pragma: no cover
        raise LoadError(f"no image state at {sink.url(table_folder(table) + '/' + STATE_FILE)}", table=table,
                        hint="run `sparsesync sync` for this table first")
    return json.loads(raw)  # pragma: no cover


def pending_runs(state: dict, applied: int | None) -> list[dict]:
    """Runs after ``applied`` in sequence order; refuses a gap (a run the warehouse would miss)."""
    runs = sorted((as_dict(r) for r in state.get("runs", [])), key=lambda r: int(r["sequence"]))
    todo = [r for r in runs if applied is None or int(r["sequence"]) > applied]
    if todo:
        first = todo[0]
        whole = first.get("kind") in ("first", "full")
        expected = 1 if applied is None else applied + 1
        if int(first["sequence"]) != expected and not whole:
            raise LoadError(
                f"the warehouse has applied up to sequence {applied} but the state's next run is "
                f"{first['run_id']} (sequence {first['sequence']})", table=state["table"],
                hint="reload the whole table from current.manifest.json, or load into a new target",
            )
    return todo


def run_part_paths(sink, table: str, run: dict) -> list[str]:
    """Relative paths of the parts in ``run``'s delta manifest (none when the run wrote none)."""
    rel = f"{table_folder(table)}/{run.get('manifest') or run['run_id'] + '/manifest.json'}"
    raw = sink.get_bytes(rel)
    if raw is None:
        if int(run.get("rows") or 0) == 0:
            return []
        raise LoadError(f"run {run['run_id']} has rows but no manifest", table=table, file=sink.url(rel),
                        hint="the run did not finish; run `sparsesync sync` again to complete it")
    folder = rel.rsplit("/", 1)[0]
    return [f"{folder}/{e['url'].rsplit('/', 1)[1]}" for e in json.loads(raw).get("entries", [])]


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
                 iam_role: str | None = None) -> LoadResult:
    """Apply every run of ``table`` at ``dest`` that ``into_url``'s target has not applied yet, in order."""
    from sparsesync.executor.dest import open_sink

    kind, location = parse_into(into_url)
    sink = open_sink(dest)
    try:
        state = read_state(sink, table)
        label = target or state["table"]
        if kind == "duckdb":
            return _load_duckdb(sink, state, location, label)
        return _load_redshift(sink, state, location, label, iam_role)
    finally:
        if sink is not dest and hasattr(sink, "close"):
            sink.close()


# ---- DuckDB ------------------------------------------------------------------------------------------------
def _load_duckdb(sink, state: dict, path: str, label: str) -> LoadResult:
    import duckdb

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(path)
    except (OSError, duckdb.Error) as exc:
        raise LoadError(f"cannot open the DuckDB warehouse {path}: {exc}", table=state["table"]) from exc
    result = LoadResult(table=state["table"], target=label, warehouse=f"duckdb:///{path}")
    try:
        con.execute(loadsql.loads_ddl())
        result.already = _applied(con, label)
        with tempfile.TemporaryDirectory(prefix="sparsesync-load-") as tmp:
            for run in pending_runs(state, result.already):
                apply_run_duckdb(con, sink, state, run, label, tmp)
                result.applied.append(run["run_id"])
        result.rows = con.execute(f"SELECT COUNT(*) FROM {loadsql.quote_target(label, state['table'])}").fetchone()[0]
    finally:
        con.close()
    return result


def _applied(con, label: str) -> int | None:
    return con.execute(f"SELECT MAX(sequence) FROM {LOADS_TABLE} WHERE target = ?", [label]).fetchone()[0]


def _local_parts(sink, rels: list[str], tmp: str) -> list[str]:
    from sparsesync.executor.dest import is_local

    out = []
    for rel in rels:
        if is_local(sink):
            if not sink.exists(rel):
                raise LoadError("a part of the run is missing (removed by gc?)", file=sink.url(rel),
                                hint="reload the whole table from current.manifest.json")
            out.append(sink.url(rel))
            continue
        data = sink.get_bytes(rel)
        if data is None:
            raise LoadError("a part of the run is missing (removed by gc?)", file=sink.url(rel),
                            hint="reload the whole table from current.manifest.json")
        local = os.path.join(tmp, rel.replace("/", "__"))
        Path(local).write_bytes(data)
        out.append(local)
    return out


def _empty_target(con, steps) -> None:
    import pyarrow as pa

    from sparsesync.planner.plan import arrow_type_from_string

    schema = pa.schema([pa.field(c["name"], arrow_type_from_string(c["arrow_type"])) for c in steps.columns])
    con.register("sparsesync_empty", pa.Table.from_batches([], schema=schema))
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {steps.target} AS SELECT * FROM sparsesync_empty")
    finally:
        con.unregister("sparsesync_empty")


def apply_run_duckdb(con, sink, state: dict, run: dict, label: str, tmp: str) -> None:
    """The Redshift ``load.sql`` steps for one run, in one DuckDB transaction."""
    import duckdb

    steps = load_steps(state, run, target=label)
    files = _local_parts(sink, run_part_paths(sink, steps.table, run), tmp)
    stage = staging_name(steps)
    con.execute("BEGIN TRANSACTION")
    try:
        _empty_target(con, steps)
        con.execute(
            f"SELECT CASE WHEN {loadsql.guard_condition(steps)} THEN error("
            f"{sql_string(f'a newer run of {label} is already applied')}) END"
        )
        if files:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT * FROM read_parquet(?)", [files])
            outside = con.execute(
                f"SELECT COUNT(*) FROM {stage} WHERE NOT ({steps.delete_where or 'FALSE'})"
            ).fetchone()[0]
            if outside:
                # Rows outside the spans the run deletes would be duplicated by a second application.
                raise LoadError(f"run {steps.run_id} holds {outside} row(s) outside the spans it replaces",
                                table=steps.table, hint="the image state is inconsistent; run a full sync")
        if steps.delete_where:
            con.execute(f"DELETE FROM {steps.target} WHERE {steps.delete_where}")
        if files:
            cols = ", ".join(quote_ident(c["name"]) for c in steps.columns)
            con.execute(f"INSERT INTO {steps.target} ({cols}) SELECT {cols} FROM {stage}")
            con.execute(f"DROP TABLE {stage}")
        for stmt in loadsql.record_statements(steps, "now()"):
            con.execute(stmt)
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        msg = str(exc).split("\n", 1)[0]
        if "already applied" in msg:
            raise LoadError(f"refusing run {steps.run_id} (sequence {steps.sequence}): a newer run is already applied",
                            table=steps.table, hint="runs apply in sequence order; an older run cannot follow a newer one") from exc
        raise LoadError(f"applying run {steps.run_id} failed: {msg}", table=steps.table) from exc
    except BaseException:
        con.execute("ROLLBACK")
        raise


# ---- Redshift ------------------------------------------------------------------------------------------------
def _load_redshift(sink, state: dict, url: str, label: str, iam_role: str | None) -> LoadResult:
    import sqlalchemy as sa

    from sparsesync.source import redact, short_db_error

    if not sink.url("").startswith("s3://"):
        raise UsageError("Redshift loads from S3 only", hint="sync to --dest s3://bucket/prefix")
    try:
        engine = sa.create_engine(url)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise UsageError(f"no Redshift driver for {redact(url)}",
                         hint="pip install sqlalchemy-redshift redshift_connector, or run each <run_id>/load.sql yourself") from exc
    result = LoadResult(table=state["table"], target=label, warehouse=redact(url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(loadsql.loads_ddl())
            result.already = conn.execute(
                sa.text(f"SELECT MAX(sequence) FROM {LOADS_TABLE} WHERE target = :t"), {"t": label}).scalar()
        for run in pending_runs(state, result.already):
            text = loadsql.write_load_sql(state, run, target=label, iam_role=iam_role,
                                          manifest_url=sink.url(f"{state['table']}/{run['manifest']}"))
            with engine.connect() as conn:  # the script holds its own BEGIN … COMMIT
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                for stmt in _statements(text):
                    conn.exec_driver_sql(stmt)
            result.applied.append(run["run_id"])
    except sa.exc.SQLAlchemyError as exc:
        raise LoadError(f"Redshift load failed: {short_db_error(exc)}", table=state["table"]) from exc
    finally:
        engine.dispose()
    return result


def _statements(script: str) -> list[str]:
    """Split a generated ``load.sql`` into statements (no ';' occurs inside its literals but at line ends)."""
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    return [s for s in (part.strip().rstrip(";").strip() for part in body.split(";\n")) if s]
