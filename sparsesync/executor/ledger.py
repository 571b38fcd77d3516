"""The run ledger: which file groups of a plan are finished, so a re-run resumes instead of redoing.

Each file group moves ``pending → running → done``. A ``done`` group records its parts (name, size,
rows, sha256) and the rows streamed per range; the whole ledger is rewritten atomically after every
transition (``sink.put_bytes`` or temp file + rename), so a crash leaves either the old or the new
ledger, never a torn one. The ledger carries the plan's sha256: a ledger of another plan is refused.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sparsesync.atomic import write_atomic
from sparsesync.errors import DestinationError

LEDGER_VERSION = 1
PENDING, RUNNING, DONE = "pending", "running", "done"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class PartRecord:
    """One committed Parquet object of a group."""

    name: str  # path relative to the sink root
    url: str
    size: int
    rows: int
    sha256: str


@dataclass
class GroupRecord:
    """State of one file group of the plan."""

    index: int
    name: str
    state: str = PENDING
    rows: int = 0
    bytes: int = 0
    parts: list[PartRecord] = field(default_factory=list)
    range_rows: dict[str, int] = field(default_factory=dict)  # range index (as str, JSON keys) → rows
    queries: int = 0
    zero_dates: dict[str, int] = field(default_factory=dict)  # zero/invalid dates read as NULL, per column
    consistency: str | None = None  # snapshot | per-range: how this group's rows were read
    run: int | None = None  # which run of the ledger (``Ledger.runs``) read it; groups of one snapshot share it
    max_bytes: dict[str, int] = field(default_factory=dict)  # widest text/binary value per column (bytes)
    oversize: dict[str, int] = field(default_factory=dict)  # values over the Redshift DDL limit per column
    nul: dict[str, int] = field(default_factory=dict)  # text values holding a NUL byte (stripped or kept) per column
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None

    def intact_in(self, sink) -> bool:
        """Done, with every recorded part present at its recorded size (an empty group has no part)."""
        return (self.state == DONE and (bool(self.parts) or self.rows == 0)
                and all(sink.size(p.name) == p.size for p in self.parts))

    def reset(self) -> None:
        """Back to pending, to be redone from scratch (an interrupted or damaged group)."""
        self.state, self.parts, self.rows, self.bytes, self.range_rows = PENDING, [], 0, 0, {}
        self.zero_dates, self.consistency, self.run = {}, None, None
        self.attempts = max(self.attempts, 1)


@dataclass
class Ledger:
    """The whole ledger of one plan's run into one destination folder."""

    plan_id: str
    plan_sha256: str
    table: str
    groups: list[GroupRecord]
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    runs: int = 0
    version: int = LEDGER_VERSION
    # Array jobs: {"index": I, "count": N, "groups": [...]} of the shard this ledger belongs to (executor.shard).
    shard: dict | None = None

    @classmethod
    def fresh(cls, plan) -> "Ledger":
        """A ledger with every group of ``plan`` pending."""
        return cls(
            plan_id=plan.plan_id,
            plan_sha256=plan.sha256,
            table=plan.source.table,
            groups=[GroupRecord(index=g.index, name=g.name) for g in plan.files],
        )

    def group(self, index: int) -> GroupRecord:
        return self.groups[index]

    def done_groups(self) -> list[GroupRecord]:
        return [g for g in self.groups if g.state == DONE]

    def all_done(self) -> bool:
        return all(g.state == DONE for g in self.groups)

    def to_json(self) -> bytes:
        # Rewritten after every transition: a shallow hand-made dict and compact JSON keep that cheap
        # (dataclasses.asdict deep-copies; indenting doubles the size) with one group per line to stay readable.
        head = {k: v for k, v in vars(self).items() if k != "groups"}
        groups = [json.dumps({**vars(g), "parts": [vars(p) for p in g.parts]}, separators=(",", ":")) for g in self.groups]
        body = json.dumps(head, separators=(",", ":"))[:-1]
        return (body + ',"groups":[\n' + ",\n".join(groups) + "\n]}\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, origin: str = "ledger") -> "Ledger":
        """Parse a ledger; anything unreadable is a :class:`DestinationError` naming the file."""
        try:
            d = json.loads(data.decode("utf-8"))
            known = {f.name for f in fields(GroupRecord)}  # a newer version's extra fields are ignored
            groups = [
                GroupRecord(**{**{k: v for k, v in g.items() if k in known},
                               "parts": [PartRecord(**p) for p in g.get("parts", [])]})
                for g in d["groups"]
            ]
            return cls(**{**d, "groups": groups})
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise DestinationError(
                f"ledger {origin} is unreadable ({exc})",
                hint="delete it to start the run over, or pass --overwrite",
                file=origin,
            ) from exc


class LedgerStore:
    """Where a ledger lives: an object in the sink (default) or a local file (``--ledger PATH``)."""

    def __init__(self, *, sink=None, relpath: str | None = None, path: str | os.PathLike | None = None) -> None:
        if (sink is None) == (path is None):
            raise ValueError("give either sink+relpath or path")
        self.sink, self.relpath = sink, relpath
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return str(self.path) if self.path is not None else self.sink.url(self.relpath)

    def load(self) -> Ledger | None:
        """The stored ledger, or ``None`` if there is none yet."""
        if self.path is not None:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise DestinationError(f"cannot read ledger: {exc.strerror}", file=str(self.path)) from exc
        else:
            data = self.sink.get_bytes(self.relpath)
            if data is None:
                return None
        return Ledger.from_json(data, origin=self.describe())

    def save(self, ledger: Ledger) -> None:
        """Atomically replace the stored ledger (serialised: worker threads share one store)."""
        with self._lock:
            self._save_locked(ledger)

    def _save_locked(self, ledger: Ledger) -> None:
        ledger.updated_at = _now()
        data = ledger.to_json()
        if self.path is None:
            self.sink.put_bytes(self.relpath, data)
            return
        try:
            write_atomic(self.path, data, fsync=True)
        except OSError as exc:
            raise DestinationError(
                f"cannot write ledger: {exc.strerror}", hint="pass --ledger PATH in a writable place",
                file=str(self.path),
            ) from exc

    def delete(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        else:
            self.sink.delete(self.relpath)

    def transition(self, ledger: Ledger, index: int, state: str, **values: Any) -> None:
        """Set group ``index`` to ``state`` (plus any fields given) and persist before returning."""
        with self._lock:  # mutate and serialise together: worker threads share the ledger
            g = ledger.groups[index]
            g.state = state
            for k, v in values.items():
                setattr(g, k, v)
            if state == RUNNING:
                g.attempts += 1
                g.started_at = _now()
            elif state == DONE:
                g.finished_at = _now()
            self._save_locked(ledger)
