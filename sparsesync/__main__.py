"""``python -m sparsesync``."""

from sparsesync.cli import main

# Guarded: worker processes the Dask engine spawns re-import the main module, and must not run the CLI.
if __name__ == "__main__":
    main()
