"""``python -m sparsesync``."""

from sparsesync.cli import main

main()
