"""What the product ships of the benchmarks: the fixtures, the roadmap's strategies and the harness
behind ``sparsesync bench`` and ``sparsesync demo``. The measurement scripts live in the checkout's
``benchmarks/`` folder, which is not installed."""
