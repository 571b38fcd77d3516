"""``collect_garbage``: remove what no image needs any more — unreferenced parts, crashed runs, stale locks.

Three kinds of garbage, per table (gc holds the table's sync lock ``<table>/_sync.lock`` throughout, so no
sync of that table runs meanwhile):

* **Unreferenced parts** of applied runs. A part leaves the image when a later run replaces its span; a
  COPY of an older ``current.manifest.json`` (or a load of an older run) may still be reading it, so it is
  kept for ``keep`` seconds after it became unreferenced. That moment is not recorded anywhere, so gc uses
  an upper bound of it — the earlier of the finish of the image's latest run (the part was unreferenced by
  then at the latest) and when gc first saw the part unreferenced (``<table>/_gc.json``, written by a
  deleting gc) — which can only make a part look younger than it is, never older. An applied run's
  ``manifest.json`` and ``load.sql`` (and the rest of its folder) stay: a lagging warehouse loads from them.
* **Dead runs**: a run folder (``<table>/<run_id>/``) whose run the image never applied (its run_id is not
  in ``_state.json``'s runs: the run crashed or was killed) and that no live process owns — gc holds the
  sync lock, the run's own ``<run_id>.lock`` (the executor's, and any shard's) is free or stale, and no
  staging file in it belongs to a live process — once ``keep`` has passed since the last write into it.
  Every file of it goes (parts, ledger, report, manifest, load files, staging leftovers, incomplete S3
  uploads) and its lock files. A folder holding a file the image or ``current.manifest.json`` references
  is never a dead run.
* **Stale locks**: a lock file at the table's folder whose owner is gone (local: nobody holds its
  ``flock``; S3: the owner record names a dead process on this host, or it has not been refreshed for
  the executor's takeover age), e.g. ``<run_id>.lock`` of a killed run whose run was applied.

Folders that are not named like a sync run (``<plan_id>/`` of ``execute``) are never touched.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sparsesync.errors import UsageError
from sparsesync.naming import table_folder

from .load import STATE_FILE, read_state

GC_FILE = "_gc.json"
LOCK_FILE = "_sync.lock"  # shared with sync_table: one writer per table and destination
CURRENT_MANIFEST = "current.manifest.json"
_RUN_DIR = re.compile(r"^(\d{8}T\d{6}Z)-(\d{6})$")
_LOCK_NAME = re.compile(r"^(.+?)(\.shard-\d+-of-\d+)?\.lock$")


@dataclass
class GcResult:
    """One table's garbage: what was (or would be) removed, and why the rest stayed."""

    table: str
    dry_run: bool
    removed: list[str] = field(default_factory=list)  # unreferenced parts of applied runs
    removed_bytes: int = 0  # of everything removed (parts, dead runs' files)
    referenced: int = 0
    too_young: int = 0
    in_progress: int = 0  # parts of runs not applied that stay (a live owner, or younger than --keep)
    dead_runs: list[str] = field(default_factory=list)  # run folders removed whole
    dead_run_files: list[str] = field(default_factory=list)  # every file of them (parts, ledger, report …)
    staging: int = 0  # staging leftovers of dead runs (local temp files, incomplete S3 uploads)
    locks: list[str] = field(default_factory=list)  # lock files of dead owners
    live: list[str] = field(default_factory=list)  # runs kept because a live process owns them (who)
    young_runs: int = 0  # dead runs whose last write is younger than --keep

    def summary(self) -> str:
        """One line for the terminal: counts by kind."""
        verb = "would remove" if self.dry_run else "removed"
        return (f"{self.table}: {verb} {len(self.removed)} part(s), {len(self.dead_runs)} crashed run folder(s) "
                f"({len(self.dead_run_files)} file(s), {self.staging} staging leftover(s)), "
                f"{len(self.locks)} stale lock(s), {self.removed_bytes / 1e6:,.1f} MB; kept "
                f"{self.referenced} in the image, {self.too_young} younger than --keep, "
                f"{self.in_progress} of runs not yet applied ({len(self.live)} run(s) of a live process, "
                f"{self.young_runs} crashed run(s) younger than --keep)")

    @property
    def nothing(self) -> bool:
        return not (self.removed or self.dead_runs or self.locks)


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


def folder_label(folder: str) -> str:
    """The table name a folder stands for (an encoded folder decoded; a cut one stays as it is)."""
    if not folder.startswith("%") or "~" in folder:
        return folder
    from urllib.parse import unquote_to_bytes

    try:
        name = unquote_to_bytes(folder[1:]).decode("utf-8")
    except UnicodeDecodeError:
        return folder
    return name if table_folder(name) == folder else folder


def folders_of_crashed_first_runs(sink, listing: list[str]) -> list[str]:
    """Table folders without an image state that hold a first run's folder or lock (a first sync killed)."""
    have_state = {p.split("/")[0] for p in listing if p.count("/") == 1 and p.endswith("/" + STATE_FILE)}
    out = set()
    for p in listing:
        parts = p.split("/")
        if len(parts) < 2 or parts[0] in have_state:
            continue
        name = parts[1] if len(parts) > 2 else _LOCK_NAME.sub(r"\1", parts[1])
        m = _RUN_DIR.match(name)
        if m and int(m.group(2)) == 1:
            out.add(parts[0])
    return sorted(out)


def collect_garbage(dest, table: str | None = None, *, keep_s: float, delete: bool = False,
                    now: float | None = None) -> list[GcResult]:
    """Find (and with ``delete`` remove) the garbage older than ``keep_s`` of ``table`` or every table."""
    from sparsesync.executor.dest import open_sink
    from sparsesync.executor.lock import destination_lock

    if keep_s < 0:
        raise UsageError(f"--keep must not be negative, got {keep_s}")
    now = datetime.now(timezone.utc).timestamp() if now is None else now
    sink = open_sink(dest)
    try:
        if table:
            todo = [(table_folder(table), table)]
        else:
            todo = [(table_folder(t), t) for t in tables_with_state(sink)]
            todo += [(f, folder_label(f)) for f in folders_of_crashed_first_runs(sink, sink.list(""))]
        out = []
        for folder, label in todo:
            # The table's sync lock: a sync in progress would reference parts gc cannot see yet.
            with destination_lock(sink, f"{folder}/{LOCK_FILE}", purpose=f"gc {label}"):
                out.append(_collect(sink, folder, label, keep_s, delete, now))
        return out
    finally:
        if sink is not dest and hasattr(sink, "close"):
            sink.close()


def _state_or_empty(sink, folder: str, table: str) -> dict:
    """The image state; none yet (a first sync that was killed) is an image without runs when the folder
    holds anything, else the usual refusal."""
    from sparsesync.errors import LoadError

    if sink.get_bytes(f"{folder}/{STATE_FILE}") is not None:
        return read_state(sink, table)
    try:
        return read_state(sink, table)
    except LoadError:
        if not [p for p in sink.list(folder) if not p.endswith("/" + LOCK_FILE)]:
            raise
        return {"table": table, "sequence": 0, "parts": [], "runs": []}


def _collect(sink, folder: str, table: str, keep_s: float, delete: bool, now: float) -> GcResult:
    state = _state_or_empty(sink, folder, table)
    res = GcResult(table=table, dry_run=not delete)
    # A part whose file group spilled has further files in "more".
    referenced = {f"{folder}/{f['path']}" for p in state.get("parts", []) for f in [p, *p.get("more", ())] if f.get("path")}
    applied_ids = {r.get("run_id") for r in state.get("runs", [])}
    applied = int(state.get("sequence") or 0)
    latest = max((_ts(r.get("finished_at")) or 0 for r in state.get("runs", [])), default=0) or now
    listing = sink.list(folder)
    in_manifest = _current_manifest_urls(sink, folder)

    # ---- dead runs: folders of runs the image never applied, with no live owner ---------------------------
    # A crashed sync took the sequence after the state's at its time, so its sequence is at most the state's
    # + 1 (a folder named otherwise, e.g. an `execute` plan's whose id happens to be digits, is not a run).
    def unapplied_run(name: str) -> bool:
        m = _RUN_DIR.match(name)
        return bool(m) and name not in applied_ids and int(m.group(2)) <= applied + 1

    by_run: dict[str, list[str]] = {}
    for rel in listing:
        parts = rel.split("/")
        if len(parts) >= 3 and unapplied_run(parts[1]):
            by_run.setdefault(parts[1], []).append(rel)
    for rid in _unlisted_run_dirs(sink, folder):  # a folder holding only staging files is listed by nothing else
        if unapplied_run(rid):
            by_run.setdefault(rid, [])
    locks = {rel.split("/")[1]: rel for rel in listing if rel.count("/") == 1 and _LOCK_NAME.match(rel.split("/")[1])}
    run_locks: dict[str, list[str]] = {}
    for name, rel in locks.items():
        run_locks.setdefault(_LOCK_NAME.match(name).group(1), []).append(rel)
    kept_runs: set[str] = set()
    for rid in sorted(by_run):
        files = by_run[rid]
        parquet = [f for f in files if f.endswith(".parquet")]
        if any(f in referenced or sink.url(f) in in_manifest for f in files):
            kept_runs.add(rid)  # the image (or a manifest a crash left ahead of it) still points into it
            res.referenced += sum(1 for f in parquet if f in referenced or sink.url(f) in in_manifest)
            res.in_progress += sum(1 for f in parquet if not (f in referenced or sink.url(f) in in_manifest))
            continue
        owner = _live_owner(sink, folder, rid, run_locks.get(rid, []))
        if owner is not None:
            kept_runs.add(rid)
            res.live.append(f"{folder}/{rid}: {owner}")
            res.in_progress += len(parquet)
            continue
        staging = _staging_leftovers(sink, f"{folder}/{rid}")
        if now - _last_write(sink, f"{folder}/{rid}", files, rid) < keep_s:
            kept_runs.add(rid)
            res.young_runs += 1
            res.in_progress += len(parquet)
            continue
        res.dead_runs.append(f"{folder}/{rid}")
        res.dead_run_files.extend(files)
        res.staging += len(staging)
        res.removed_bytes += sum(sink.size(f) or 0 for f in files)
        if delete:
            _remove_run(sink, f"{folder}/{rid}", files, staging)
        for rel in run_locks.pop(rid, []):  # its own lock(s): free or stale, checked above
            if not delete or _remove_lock(sink, rel):
                res.locks.append(rel)

    # ---- stale locks: lock files of dead owners beside the runs ------------------------------------------
    for rid, rels in sorted(run_locks.items()):
        for rel in rels:
            if rel.endswith("/" + LOCK_FILE) or rid in kept_runs:
                continue  # the sync lock is ours now; a kept run's lock is live (or its run is young)
            if _holder(sink, rel)[0]:
                continue
            if not delete or _remove_lock(sink, rel):
                res.locks.append(rel)

    # ---- unreferenced parts of applied runs (today's rules) ----------------------------------------------
    raw = sink.get_bytes(f"{folder}/{GC_FILE}")
    seen: dict[str, float] = json.loads(raw) if raw else {}
    still: dict[str, float] = {}
    for rel in listing:
        parts = rel.split("/")
        if len(parts) != 3 or not parts[2].endswith(".parquet"):
            continue
        if parts[1] in by_run:
            continue  # a run not applied: counted (or removed) above
        if rel in referenced:
            res.referenced += 1
            continue
        m = _RUN_DIR.match(parts[1])
        if not m or int(m.group(2)) > applied:
            res.in_progress += 1  # not a run folder (a plan's, of `execute`): never gc's
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


# ---- helpers ------------------------------------------------------------------------------------------------
def _is_local(sink) -> bool:
    from sparsesync.executor.sink import LocalSink

    return isinstance(sink, LocalSink)


def _current_manifest_urls(sink, folder: str) -> set[str]:
    raw = sink.get_bytes(f"{folder}/{CURRENT_MANIFEST}")
    if not raw:
        return set()
    try:
        return {e.get("url") for e in json.loads(raw).get("entries", [])}
    except (ValueError, AttributeError):
        return set()


def _unlisted_run_dirs(sink, folder: str) -> list[str]:
    """Run folders ``list`` may not show: local directories (staging files only, or empty), and on S3 the
    folders of incomplete multipart uploads."""
    if _is_local(sink):
        from pathlib import Path

        base = Path(sink.url(folder))
        return [p.name for p in base.iterdir() if p.is_dir() and _RUN_DIR.match(p.name)] if base.is_dir() else []
    if not hasattr(sink, "incomplete_uploads"):
        return []
    out = set()
    for key, _ in sink.incomplete_uploads(folder):
        parts = sink._rel(key).split("/")
        if len(parts) >= 3 and _RUN_DIR.match(parts[1]):
            out.add(parts[1])
    return sorted(out)


def _holder(sink, rel: str) -> tuple[bool, str | None]:
    """(live, who) of the lock at ``rel``: live when a process holds it now (local: its ``flock``; S3: an
    owner record that is neither a dead process on this host nor older than the executor's takeover age)."""
    from sparsesync.executor.lock import DEFAULT_STALE_AFTER_S, S3Lock, describe_holder, owner_is_dead

    if _is_local(sink):
        import fcntl

        try:
            fd = os.open(sink.url(rel), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False, None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # succeeds only while nobody holds it
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False, None
            except BlockingIOError:
                try:
                    info = json.loads(os.read(fd, 65536) or b"{}")
                except ValueError:
                    info = None
                return True, describe_holder(info)
        finally:
            os.close(fd)
    probe = S3Lock(sink.client, sink.bucket, sink.key(rel), error=sink._error)
    info, etag, age = probe._read()
    if etag is None or (age is not None and age > DEFAULT_STALE_AFTER_S) or owner_is_dead(info):
        return False, None
    return True, describe_holder(info, age)


def _remove_lock(sink, rel: str) -> bool:
    """Remove a stale lock file unless someone took it meanwhile; True when it is gone."""
    if _is_local(sink):
        import fcntl

        path = sink.url(rel)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # taken since we looked
            try:  # holding it, as FileLock.release does: a taker that opened this file retries on a new one
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    os.unlink(path)
            except FileNotFoundError:
                pass
            return True
        finally:
            os.close(fd)
    from botocore.exceptions import ClientError

    from sparsesync.executor.lock import DEFAULT_STALE_AFTER_S, S3Lock, owner_is_dead

    probe = S3Lock(sink.client, sink.bucket, sink.key(rel), error=sink._error)
    info, etag, age = probe._read()
    if etag is None:
        return True
    if not ((age is not None and age > DEFAULT_STALE_AFTER_S) or owner_is_dead(info)):
        return False
    try:  # only that exact (stale) object: a taker's new lock has another ETag
        sink.client.delete_object(Bucket=sink.bucket, Key=sink.key(rel), IfMatch=etag)
    except ClientError:
        return False
    return True


def _live_owner(sink, folder: str, rid: str, lock_rels: list[str]) -> str | None:
    """Who owns run ``rid`` right now (a live holder of one of its locks, or a live process staging into
    its folder), or None."""
    for rel in lock_rels:
        live, who = _holder(sink, rel)
        if live:
            return who
    if _is_local(sink):
        from sparsesync.executor.lock import pid_alive

        for path in _staging_leftovers(sink, f"{folder}/{rid}"):
            m = re.search(r"\.(\d+)\.sparsesync-tmp$", path)
            if m and int(m.group(1)) != os.getpid() and pid_alive(int(m.group(1))):
                return f"pid {m.group(1)} (staging {os.path.basename(path)})"
    return None


def _staging_leftovers(sink, prefix: str) -> list[str]:
    """Local staging files under ``prefix`` (which ``list`` hides), or the S3 multipart uploads in progress."""
    if _is_local(sink):
        from pathlib import Path

        from sparsesync.executor.sink import STAGING_MARK

        base = Path(sink.url(prefix))
        return sorted(str(p) for p in base.rglob(f"*{STAGING_MARK}")) if base.is_dir() else []
    if hasattr(sink, "incomplete_uploads"):
        return [f"{key} (upload {upload_id})" for key, upload_id in sink.incomplete_uploads(prefix)]
    return []


def _last_write(sink, prefix: str, files: list[str], rid: str) -> float:
    """When anything was last written into the run folder: the newest modification time of its files
    (local mtime, S3 LastModified), never before the start time its run_id names."""
    started = datetime.strptime(_RUN_DIR.match(rid).group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    times = [started]
    if _is_local(sink):
        from pathlib import Path

        base = Path(sink.url(prefix))
        if base.is_dir():
            for p in [base, *base.rglob("*")]:
                try:
                    times.append(p.stat().st_mtime)
                except FileNotFoundError:
                    pass
    elif hasattr(sink, "client"):
        try:
            pages = sink.client.get_paginator("list_objects_v2").paginate(Bucket=sink.bucket, Prefix=sink.key(prefix) + "/")
            for page in pages:
                times.extend(o["LastModified"].timestamp() for o in page.get("Contents", []))
            uploads = sink.client.get_paginator("list_multipart_uploads").paginate(Bucket=sink.bucket,
                                                                                   Prefix=sink.key(prefix) + "/")
            for page in uploads:
                times.extend(u["Initiated"].timestamp() for u in page.get("Uploads", []) if u.get("Initiated"))
        except sink._client_errors() as exc:
            raise sink._error(exc, "list", sink.key(prefix)) from None
    return max(times)


def _remove_run(sink, prefix: str, files: list[str], staging: list[str]) -> None:
    """Every file of a dead run folder, its staging leftovers (incomplete S3 uploads aborted), the folder."""
    for rel in files:
        sink.delete(rel)
    if _is_local(sink):
        for path in staging:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        sink.remove_tree(prefix)
    elif staging:
        for key, upload_id in sink.incomplete_uploads(prefix):
            try:
                sink.client.abort_multipart_upload(Bucket=sink.bucket, Key=key, UploadId=upload_id)
            except sink._client_errors() as exc:
                raise sink._error(exc, "abort the upload of", key) from None
