"""Local folders the commands write besides the destination (``run``'s plans folder): one-line refusals."""

from __future__ import annotations

from pathlib import Path

from sparsesync.atomic import probe_writable
from sparsesync.errors import UsageError


def plans_dir_error(plans_dir: Path, exc: OSError) -> UsageError:
    """The one line for a plans folder that cannot be written: which folder, why, and the option to change it."""
    return UsageError(f"cannot write the plan into the folder {plans_dir}: {exc.strerror or exc}",
                      hint="pass --plans-dir DIR (a writable folder, e.g. --plans-dir /tmp/plans)")


def writable_plans_dir(plans_dir: Path) -> None:
    """Make ``plans_dir`` if missing and check a file can be created in it; else :func:`plans_dir_error`.

    ``run`` calls it before the pre-scan, so ``plans/`` under a read-only working directory (a container's
    root filesystem) is refused at once rather than after the plan was made.
    """
    try:
        plans_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(plans_dir)
    except OSError as exc:
        raise plans_dir_error(plans_dir, exc) from exc
