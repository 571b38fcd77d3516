"""Keep glibc's heap from holding on to freed batch memory, so peak RSS follows ``--memory-limit``.

glibc serves allocations above a threshold with ``mmap`` and returns them to the system when freed, but it
raises that threshold to the size of every such block freed (up to 32 MB): after the first batches, range
buffers (ConnectorX's Arrow arrays, pymysql rows, NumPy) come from per-thread heaps instead, whose freed
space stays in the process. On the issue-11 table at 5M rows that took `execute` to 494–533 MB, growing with
the table (results/peers.md); a fixed 4 MiB threshold keeps it near 370 MB for ~1 s more system CPU.

Arrow's buffers then come from glibc too (pyarrow's system pool instead of its bundled mimalloc): with the
fixed threshold every buffer of 4 MiB or more is an ``mmap`` of its own, returned the moment it is freed,
whereas mimalloc keeps freed pages until the thread that owns them gets round to purging them, which a
loaded machine delays. 3,000 rows of 100 KB to S3 with two busy loops beside on 2 cores peaked at
409-446 MB with mimalloc, 380-392 MB with the system pool (paired, results/wide-rows.md); to a directory,
without load, 362-376 vs 331-353 MB (pymysql) and 313-344 vs 321-327 MB (connectorx), same time.
A user's ``ARROW_DEFAULT_MEMORY_POOL`` wins, like their ``MALLOC_MMAP_THRESHOLD_``.
"""

from __future__ import annotations

import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 4 << 20
_state: dict[str, bool] = {}


def bound_heap() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES` once per process, then have Arrow allocate
    from glibc; False where it does not apply (not glibc, or the user set ``MALLOC_MMAP_THRESHOLD_``
    themselves: Arrow's pool is left alone then too)."""
    if "done" in _state:
        return _state["done"]
    ok = False
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        try:
            import ctypes

            ok = bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        except (OSError, AttributeError):  # musl and others: no mallopt, nothing to do
            ok = False
    if ok and "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        # Only with the fixed threshold: glibc's own would keep large freed blocks much as mimalloc does.
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())  # buffers made before keep (and free to) their own pool
    _state["done"] = ok
    return ok


__all__ = ["bound_heap"]
