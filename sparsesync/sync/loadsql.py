"""The SQL that applies one sync run to a warehouse table, exactly once.

One run = COPY its delta manifest into a staging table, DELETE the key spans it replaces from the
target, INSERT the staged rows, record the run in ``sparsesync_loads`` — all in one transaction. A
guard refuses a run older than one already applied; re-applying the same run deletes and re-inserts
exactly its own rows, so it changes nothing.

The steps are built once (:func:`load_steps`) and rendered for Redshift (``load.sql``, golden-tested)
or executed against DuckDB by :mod:`sparsesync.sync.load` with ``read_parquet`` standing in for COPY.
Keys enter SQL as validated Python ints; identifiers are always quoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from sparsesync.executor.redshift import quote_ident  # double quotes, as Redshift and DuckDB both want
from sparsesync.errors import UsageError

LOADS_TABLE = "sparsesync_loads"
MIN_SIGNED = -(2**63)
IAM_ROLE_PLACEHOLDER = "<IAM_ROLE_ARN>"


def quote_target(target: str, table: str | None = None) -> str:
    """``schema.table`` or ``table`` as given on the command line, each part quoted. The source table's own
    name (``table``, the default target) is one identifier, whatever it holds (``../x``, ``a.b``)."""
    if table is not None and target == table:
        return quote_ident(target)
    parts = [p for p in target.split(".")]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise UsageError(f"bad target table name {target!r}", hint="use TABLE or SCHEMA.TABLE")
    return ".".join(quote_ident(p) for p in parts)


def sql_string(text: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


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


@dataclass(frozen=True)
class LoadSteps:
    """What applying one run means, independent of the warehouse's dialect."""

    table: str  # source table name (comments only)
    target: str  # quoted target table
    target_label: str  # the unquoted name recorded in sparsesync_loads
    key: str
    run_id: str
    sequence: int
    columns: tuple[dict, ...]
    delete_where: str | None
    has_parts: bool


def load_steps(state, run, *, target: str | None = None) -> LoadSteps:
    """The dialect-free description of applying ``run`` of ``state``'s table to ``target``."""
    st, rn = as_dict(state), as_dict(run)
    label = target or st["table"]
    parts = [p for p in st.get("parts", []) if p.get("run_id") == rn["run_id"] and p.get("path")]
    has_parts = bool(parts) or bool(rn.get("rows"))
    return LoadSteps(
        table=st["table"], target=quote_target(label, st["table"]), target_label=label, key=st["key"], run_id=rn["run_id"],
        sequence=int(rn["sequence"]), columns=tuple(st["columns"]),
        delete_where=span_predicate(st["key"], rn.get("replaced") or [], bool(rn.get("null_replaced"))),
        has_parts=has_parts,
    )


def staging_name(steps: LoadSteps) -> str:
    """The temporary staging table of this run."""
    return quote_ident(f"sparsesync_stage_{steps.sequence}")


def guard_condition(steps: LoadSteps) -> str:
    """SQL true when a newer run than this one was already applied to the target."""
    return (
        f"(SELECT MAX(sequence) FROM {LOADS_TABLE} WHERE target = {sql_string(steps.target_label)}) > {steps.sequence}"
    )


def loads_ddl(timestamp_type: str = "TIMESTAMP") -> str:
    """The bookkeeping table: one row per applied run and target."""
    return (
        f"CREATE TABLE IF NOT EXISTS {LOADS_TABLE} (target VARCHAR(512) NOT NULL, run_id VARCHAR(64) NOT NULL, "
        f"sequence BIGINT NOT NULL, applied_at {timestamp_type})"
    )


def record_statements(steps: LoadSteps, now_sql: str) -> list[str]:
    """Replace this run's row in ``sparsesync_loads`` (re-applying leaves one row, not two)."""
    tgt = sql_string(steps.target_label)
    return [
        f"DELETE FROM {LOADS_TABLE} WHERE target = {tgt} AND sequence = {steps.sequence}",
        f"INSERT INTO {LOADS_TABLE} (target, run_id, sequence, applied_at) VALUES "
        f"({tgt}, {sql_string(steps.run_id)}, {steps.sequence}, {now_sql})",
    ]


def create_target_sql(steps: LoadSteps) -> str:
    """Redshift DDL of the target from the state's column types; the key is the sort key."""
    cols = ",\n".join(
        f"  {quote_ident(c['name'])} {c['redshift_type']}{'' if c.get('nullable', True) else ' NOT NULL'}"
        for c in steps.columns
    )
    return f"CREATE TABLE IF NOT EXISTS {steps.target} (\n{cols}\n)\nSORTKEY ({quote_ident(steps.key)})"


def write_load_sql(state, run, *, target: str | None = None, iam_role: str | None = None,
                   manifest_url: str | None = None) -> str:
    """Redshift SQL applying ``run`` (one transaction): guard, COPY to staging, DELETE spans, INSERT.

    ``manifest_url`` is the run's delta manifest as Redshift sees it (``s3://…/<run_id>/manifest.json``);
    a run without parts (an empty table, or spans whose rows were all deleted) skips COPY and INSERT but
    still deletes its spans. Returns the text; the caller stores it as ``<run_id>/load.sql``.
    """
    steps = load_steps(state, run, target=target)
    stage = staging_name(steps)
    role = sql_string(iam_role or IAM_ROLE_PLACEHOLDER)
    manifest = sql_string(manifest_url or f"<MANIFEST_URL of {steps.run_id}/manifest.json>")
    guard = (
        f"SELECT CASE WHEN {guard_condition(steps)}\n"
        f"  THEN CAST('sparsesync: refusing run {steps.run_id} (sequence {steps.sequence}): a newer run of '"
        f" || {sql_string(steps.target_label)} || ' is already applied' AS INTEGER) END"
    )
    out = [
        f"-- sparsesync: apply run {steps.run_id} (sequence {steps.sequence}) of {steps.table} to {steps.target}",
        "-- Safe to run twice; refused (cast error, transaction rolled back) after a newer run of this target.",
        "BEGIN;",
        loads_ddl() + ";",
        f"LOCK {LOADS_TABLE};",
        create_target_sql(steps) + ";",
        guard + ";",
    ]
    if steps.has_parts:
        out += [
            f"CREATE TEMP TABLE {stage} (LIKE {steps.target});",
            f"COPY {stage}\nFROM {manifest}\nIAM_ROLE {role}\nFORMAT AS PARQUET\nMANIFEST;",
        ]
    if steps.delete_where:
        out.append(f"DELETE FROM {steps.target} WHERE {steps.delete_where};")
    if steps.has_parts:
        out += [f"INSERT INTO {steps.target} SELECT * FROM {stage};", f"DROP TABLE {stage};"]
    out += [s + ";" for s in record_statements(steps, "GETDATE()")]
    out.append("COMMIT;")
    return "\n".join(out) + "\n"
