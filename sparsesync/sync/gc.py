"""``collect_garbage``: remove Parquet parts that no image references any more, once they are old enough.

A part leaves the image when a later run replaces its span; a COPY of an older ``current.manifest.json``
(or a load of an older run) may still be reading it, so it is kept for ``keep`` seconds after it became
unreferenced. That moment is not recorded anywhere, so gc uses an upper bound of it — the earlier of

* the finish of the image's latest run (the part was unreferenced by then at the latest), and
* when gc first saw the part unreferenced (``<table>/_gc.json``, written by a deleting gc) —

which can only make a part look younger than it is, never older. Run folders of a run the image has not
applied yet (a sync in progress) are never touched; a crashed run's parts go once a later run is applied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sparsesync.errors import UsageError
from sparsesync.naming import table_folder

from .load import STATE_FILE, read_state

GC_FILE = "_gc.json"
LOCK_FILE = "_sync.lock"  # shared with sync_table: one writer per table and destination
_RUN_DIR = re.compile(r"^\d{8}T\d{6}Z-(\d{6})$")


@dataclass
class GcResult:
    """One table's garbage: what was (or would be) removed, and why the rest stayed."""

    table: str
    dry_run: bool
    removed: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    referenced: int = 0
    too_young: int = 0
    in_progress: int = 0

    def summary(self) -> str:
        """One line for the terminal."""
        verb = "would remove" if self.dry_run else "removed"
        return (f"{self.table}: {verb} {len(self.removed)} part(s), {self.removed_bytes / 1e6:,.1f} MB; kept "
                f"{self.referenced} in the image, {self.too_young} younger than --keep, "
                f"{self.in_progress} of runs not yet applied")


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def tables_with_state(sink) -> list[str]:
    """Tables at the destination that have an image state (by the name the state records: a folder
    name may be an encoded one, see :func:`sparsesync.naming.table_folder`)."""
    folders = sorted({p.split("/")[0] for p in sink.list("") if p.count("/") == 1 and p.endswith("/" + STATE_FILE)})
    out = []
    for folder in folders:
        raw = sink.get_bytes(f"{folder}/{STATE_FILE}")
        name = json.loads(raw).get("table", folder) if raw else folder
        out.append(name if table_folder(name) == folder else folder)
    return out


def collect_garbage(dest, table: str | None = None, *, keep_s: float, delete: bool = False,
                    now: float | None = None) -> list[GcResult]:
    """Find (and with ``delete`` remove) unreferenced parts older than ``keep_s`` for ``table`` or every table."""
    from sparsesync.executor.dest import open_sink
    from sparsesync.executor.lock import destination_lock

    if keep_s < 0:
        raise UsageError(f"--keep must not be negative, got {keep_s}")
    now = datetime.now(timezone.utc).timestamp() if now is None else now
    sink = open_sink(dest)
    try:
        tables = [table] if table else tables_with_state(sink)
        out = []
        for t in tables:
            # The table's sync lock: a sync in progress would reference parts gc cannot see yet.
            with destination_lock(sink, f"{table_folder(t)}/{LOCK_FILE}", purpose=f"gc {t}"):
                out.append(_collect(sink, t, keep_s, delete, now))
        return out
    finally:
        if sink is not dest and hasattr(sink, "close"):
            sink.close()


def _collect(sink, table: str, keep_s: float, delete: bool, now: float) -> GcResult:
    state = read_state(sink, table)
    res = GcResult(table=table, dry_run=not delete)
    # A part whose file group spilled has further files in "more".
    folder = table_folder(table)
    referenced = {f"{folder}/{f['path']}" for p in state.get("parts", []) for f in [p, *p.get("more", ())] if f.get("path")}
    applied = int(state.get("sequence") or 0)
    latest = max((_ts(r.get("finished_at")) or 0 for r in state.get("runs", [])), default=0) or now
    raw = sink.get_bytes(f"{folder}/{GC_FILE}")
    seen: dict[str, float] = json.loads(raw) if raw else {}
    still: dict[str, float] = {}
    for rel in sink.list(folder):
        parts = rel.split("/")
        if len(parts) != 3 or not parts[2].endswith(".parquet"):
            continue
        if rel in referenced:
            res.referenced += 1
            continue
        m = _RUN_DIR.match(parts[1])
        if not m or int(m.group(1)) > applied:
            res.in_progress += 1  # not a run folder, or a run the image has not applied yet
            continue
        first_seen = seen.get(rel, now)
        if now - min(first_seen, latest) < keep_s:
            res.too_young += 1
            still[rel] = first_seen
            continue
        res.removed.append(rel)
        res.removed_bytes += sink.size(rel) or 0
    if delete:
        for rel in res.removed:
            sink.delete(rel)
        if still or raw:
            sink.put_bytes(f"{folder}/{GC_FILE}", (json.dumps(still, indent=1, sort_keys=True) + "\n").encode())
    return res
