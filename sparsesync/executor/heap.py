"""Keep glibc's heap from holding on to freed batch memory, so peak RSS follows ``--memory-limit``.

glibc serves allocations above a threshold with ``mmap`` and returns them to the system when freed, but it
raises that threshold to the size of every such block freed (up to 32 MB): after the first batches, range
buffers (ConnectorX's Arrow arrays, pymysql rows, NumPy) come from per-thread heaps instead, whose freed
space stays in the process. On the issue-11 table at 5M rows that took `execute` to 494–533 MB, growing with
the table (results/peers.md); a fixed 4 MiB threshold keeps it near 370 MB for ~1 s more system CPU.
"""

from __future__ import annotations

import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 4 << 20
_state: dict[str, bool] = {}


def bound_heap() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES` once per process; False where it does not
    apply (not glibc, or the user set ``MALLOC_MMAP_THRESHOLD_`` themselves)."""
    if "done" in _state:
        return _state["done"]
    ok = False
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        try:
            import ctypes

            ok = bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        except (OSError, AttributeError):  # musl and others: no mallopt, nothing to do
            ok = False
    _state["done"] = ok
    return ok


__all__ = ["bound_heap"]
