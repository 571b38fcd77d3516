"""The latency proxy lives in the package (``sparsesync.bench.proxy``) so ``sparsesync bench --latency-ms``
works from the wheel alone; benchmark scripts and tests keep importing it from here."""

from sparsesync.bench.proxy import LatencyProxy  # noqa: F401

__all__ = ["LatencyProxy"]
