"""Atomic file replacement: a reader sees the old file or the whole new one, never a half-written one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None], *, fsync: bool = False) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a callback given the open file) to ``path`` atomically.

    The temporary file lives beside the target so ``os.replace`` is a rename on one filesystem; it is
    removed on any failure. ``fsync`` makes the content durable before the rename (ledgers). Raises
    ``OSError``; callers turn it into their own error kind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and remove a file in ``folder``: what a later write there needs (permissions, a read-only or
    full filesystem), checked before any work. Raises ``OSError``; callers turn it into their own one line."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".sparsesync-probe-")
    os.close(fd)
    os.unlink(probe)
