"""Destinations: where finished Parquet parts, the manifest and the reports go.

A part is written to a *staging* path first and becomes visible under its final name only by
``commit`` (a rename on disk, a completed upload on S3), so a reader never sees a partial file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sparsesync.errors import DestinationError


@dataclass(frozen=True)
class Committed:
    """A part made visible: its URL (as Redshift's manifest wants it) and its real size in bytes."""

    url: str
    size: int


class Sink(Protocol):
    """What the executor needs from a destination. Paths are relative, ``/``-separated."""

    def describe(self) -> str: ...

    def url(self, relpath: str) -> str: ...

    def staging_path(self, relpath: str) -> Path:
        """A local path the writer may fill before :meth:`commit`."""

    def commit(self, staging: Path, relpath: str) -> Committed:
        """Make the staged file visible as ``relpath`` (atomic); the staging file is consumed."""

    def discard(self, staging: Path) -> None: ...

    def exists(self, relpath: str) -> bool: ...

    def size(self, relpath: str) -> int | None: ...

    def list(self, prefix: str) -> list[str]:
        """Relative paths of visible objects under ``prefix``."""

    def delete(self, relpath: str) -> None: ...

    def put_bytes(self, relpath: str, data: bytes) -> Committed:
        """Write a small object (manifest, report) atomically."""

    def get_bytes(self, relpath: str) -> bytes | None: ...

    def cleanup_staging(self, prefix: str) -> int:
        """Remove leftovers of crashed runs under ``prefix``; returns how many were removed."""


STAGING_MARK = ".sparsesync-tmp"


class LocalSink:
    """A local directory. Staging files live beside their target so ``os.replace`` is atomic."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, relpath: str) -> Path:
        p = (self.root / relpath).resolve()
        if self.root not in p.parents and p != self.root:
            raise DestinationError(f"path {relpath!r} escapes the destination {self.root}")
        return p

    def url(self, relpath: str) -> str:
        return str(self._path(relpath))

    def staging_path(self, relpath: str) -> Path:
        target = self._path(relpath)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot create {target.parent}: {exc.strerror}", file=str(target)) from exc
        return target.with_name(f"{target.name}.{os.getpid()}{STAGING_MARK}")

    def commit(self, staging: Path, relpath: str) -> Committed:
        target = self._path(relpath)
        try:
            with open(staging, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(staging, target)
        except OSError as exc:
            raise DestinationError(f"cannot commit {target}: {exc.strerror}", file=str(target)) from exc
        return Committed(url=str(target), size=target.stat().st_size)

    def discard(self, staging: Path) -> None:
        Path(staging).unlink(missing_ok=True)

    def exists(self, relpath: str) -> bool:
        return self._path(relpath).is_file()

    def size(self, relpath: str) -> int | None:
        p = self._path(relpath)
        return p.stat().st_size if p.is_file() else None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)).replace(os.sep, "/")
            for p in base.rglob("*")
            if p.is_file() and STAGING_MARK not in p.name
        )

    def delete(self, relpath: str) -> None:
        self._path(relpath).unlink(missing_ok=True)

    def put_bytes(self, relpath: str, data: bytes) -> Committed:
        staging = self.staging_path(relpath)
        try:
            staging.write_bytes(data)
        except OSError as exc:
            raise DestinationError(f"cannot write {staging.parent}: {exc.strerror}", file=relpath) from exc
        return self.commit(staging, relpath)

    def get_bytes(self, relpath: str) -> bytes | None:
        p = self._path(relpath)
        return p.read_bytes() if p.is_file() else None

    def cleanup_staging(self, prefix: str, *, only=None) -> int:
        """Remove staging files under ``prefix``; with ``only`` (a predicate on the target's relative
        path), just those — a shard must not remove another live shard's files (executor.shard)."""
        base = self._path(prefix)
        n = 0
        if base.is_dir():
            for p in base.rglob(f"*{STAGING_MARK}"):
                if only is not None:
                    target = p.with_name(p.name[: -len(STAGING_MARK)].rsplit(".", 1)[0])  # drop ".<pid>" + mark
                    if not only(str(target.relative_to(self.root)).replace(os.sep, "/")):
                        continue
                p.unlink(missing_ok=True)
                n += 1
        return n

    def remove_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)
