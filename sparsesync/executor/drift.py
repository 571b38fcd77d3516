"""Drift: has the source changed since the plan was made?

Before reading, the table is re-introspected and its schema hash compared with the plan's fingerprint.
A changed shape (column added, removed or retyped; key changed) is refused with a :class:`DriftError`
naming the change, because the plan's Arrow schema no longer describes the rows. Growth is not drift:
rows above the planned maximum are read by the open tail range and reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sparsesync.direct import fetch_all
from sparsesync.planner.introspect import introspect
from sparsesync.planner.plan import Plan
from sparsesync.planner.typemap import TypeOptions
from sparsesync.errors import DriftError, KeyColumnError, SourceError, TypeMappingError
from sparsesync.source import short_db_error, text_name, text_table


@dataclass
class DriftReport:
    """What the pre-read check found; ``tail_rows`` is filled in after the tail range was read."""

    schema_changed: bool = False
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)
    planned_min_key: int | None = None
    planned_max_key: int | None = None
    min_key_now: int | None = None
    max_key_now: int | None = None
    tail_rows: int | None = None
    tail_rows_after: int | None = None  # rows in the tail range once the run finished (outside its snapshot)

    @property
    def late_rows(self) -> int:
        """Rows that reached the tail range after the read snapshot began: not in this export."""
        if self.tail_rows_after is None or self.tail_rows is None:
            return 0
        return max(self.tail_rows_after - self.tail_rows, 0)

    @property
    def grew(self) -> bool:
        return (
            self.max_key_now is not None
            and (self.planned_max_key is None or self.max_key_now > self.planned_max_key)
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["late_rows"] = self.late_rows
        for k in ("planned_min_key", "planned_max_key", "min_key_now", "max_key_now"):
            d[k] = None if d[k] is None else str(d[k])  # keys may exceed 2^53: decimal strings, as in plans
        return d


def type_options_of(plan: Plan) -> TypeOptions:
    """The type opt-ins the plan was made with, so re-introspection maps columns the same way."""
    return TypeOptions(
        tinyint1_as_bool=any(c.conversion == "bool" for c in plan.columns),
        wide_decimal_as_string=any(c.conversion == "decimal_str" for c in plan.columns),
    )


def compare_columns(planned, current) -> tuple[list[str], list[str], list[str]]:
    """Names added, removed and retyped (declared type or nullability) between two column lists."""
    old = {c.name: c for c in planned}
    new = {c.name: c for c in current}
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    retyped = []
    for n in old:
        if n in new:
            a, b = old[n], new[n]
            if a.source_type.lower() != b.source_type.lower():
                retyped.append(f"{n} {a.source_type} → {b.source_type}")
            elif a.nullable != b.nullable:
                retyped.append(f"{n} {'NULL' if a.nullable else 'NOT NULL'} → {'NULL' if b.nullable else 'NOT NULL'}")
    return added, removed, retyped


def check_drift(engine, plan: Plan) -> DriftReport:
    """Re-introspect the table; raise :class:`DriftError` on a schema change or a vanished table."""
    src = plan.source
    try:
        info = introspect(engine, src.table, key=src.key, schema=src.schema, options=type_options_of(plan))
    except (KeyColumnError, TypeMappingError) as exc:  # the key or a type no longer fits: drift, one line
        raise DriftError(f"the table no longer fits plan {plan.plan_id}: {exc.message}", table=src.table) from exc
    except SourceError as exc:
        if "not found" in exc.message:
            raise DriftError(
                f"table {src.table!r} of plan {plan.plan_id} no longer exists in the source",
                hint="check the source URL, or re-plan once the table is back",
                table=src.table,
            ) from exc
        raise
    report = DriftReport(planned_min_key=plan.fingerprint.min_key, planned_max_key=plan.fingerprint.max_key)
    if info.schema_hash != plan.fingerprint.schema_hash:
        added, removed, retyped = compare_columns(plan.columns, info.columns)
        report.schema_changed, report.added, report.removed, report.retyped = True, added, removed, retyped
        what = []
        if added:
            what.append("added " + ", ".join(added))
        if removed:
            what.append("removed " + ", ".join(removed))
        if retyped:
            what.append("retyped " + ", ".join(retyped))
        if info.key != src.key:
            what.append(f"key {src.key} → {info.key}")
        raise DriftError(
            f"the schema of {src.table} changed since plan {plan.plan_id}: " + ("; ".join(what) or "column order or key changed"),
            hint="re-plan with `sparsesync plan` (the plan's Arrow schema no longer matches the table)",
            table=src.table,
        )
    report.min_key_now, report.max_key_now = key_bounds(engine, plan)
    return report


def _key_sql(engine, plan: Plan) -> tuple[str, str]:
    """The plan's table and key quoted by the source's dialect, as text sent without parameters."""
    src = plan.source
    return text_table(engine.dialect, src.table, src.schema), text_name(engine.dialect, src.key)


def key_bounds(engine, plan: Plan) -> tuple[int | None, int | None]:
    """``MIN`` and ``MAX`` of the key now (two index lookups)."""
    table, key = _key_sql(engine, plan)
    try:
        ((lo, hi),) = fetch_all(engine, f"SELECT MIN({key}), MAX({key}) FROM {table}")
    except Exception as exc:  # noqa: BLE001 - a driver or SQLAlchemy error, one line
        raise SourceError(f"cannot read the key bounds: {short_db_error(exc)}", table=plan.source.table) from exc
    return (None if lo is None else int(lo)), (None if hi is None else int(hi))


def count_tail(engine, plan: Plan) -> int:
    """Rows in the plan's open tail range right now (one index range count)."""
    from .readers import _int_literal

    lo = plan.tail.lo
    if lo > (2**63 - 1 if plan.source.key_signed else 2**64 - 1):
        return 0  # the planned max is the key type's maximum: no key can lie above it
    table, key = _key_sql(engine, plan)
    try:
        ((n,),) = fetch_all(engine, f"SELECT COUNT(*) FROM {table} WHERE {key} >= {_int_literal(lo)}")
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"cannot count the tail range: {short_db_error(exc)}", table=plan.source.table) from exc
    return int(n)
