"""The one error root and a class per failure kind.

Every error carries optional context (table, key range, file) so the CLI can print one line that says
what failed, where, and how to fix it. ``transient`` decides whether a retry may help.
"""

from __future__ import annotations


class SparsesyncError(Exception):
    """Root of every error sparsesync raises on purpose."""

    exit_code = 1
    transient = False

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        table: str | None = None,
        key_range: tuple | None = None,
        file: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.table = table
        self.key_range = key_range
        self.file = file

    def one_line(self) -> str:
        """Render as a single line: what, where, how to fix."""
        where = []
        if self.table:
            where.append(f"table {self.table}")
        if self.key_range is not None:
            lo, hi = self.key_range
            # (None, None) is the NULL-key range of a nullable key column
            where.append("key IS NULL" if lo is None and hi is None else f"keys [{lo}, {'∞' if hi is None else hi})")
        if self.file:
            where.append(f"file {self.file}")
        text = self.message
        if where:
            text += f" ({', '.join(where)})"
        if self.hint:
            text += f" — {self.hint}"
        return text.replace("\n", " ")

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.one_line()


class UsageError(SparsesyncError):
    """Bad arguments or configuration supplied by the user."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file is unreadable or holds an unknown key or a bad value."""


class SourceError(SparsesyncError):
    """The source database cannot be reached or refused us (bad URL, credentials, missing table)."""

    exit_code = 3


class TransientSourceError(SourceError):
    """A source failure that a retry may cure (lost connection, lock wait timeout)."""

    transient = True


class KeyColumnError(SourceError):
    """The table has no usable integer key (composite, string, unindexed, missing)."""


class TypeMappingError(SparsesyncError):
    """A declared column type has no faithful Arrow/Redshift mapping."""

    exit_code = 4


class PlanError(SparsesyncError):
    """A plan file is missing, malformed, edited, of an unknown version, or fails the schema."""

    exit_code = 5


class DriftError(SparsesyncError):
    """The source changed under the plan in a way the executor refuses (schema change, lost rows)."""

    exit_code = 6


class ValueConversionError(SparsesyncError):
    """A source value does not fit the plan's Arrow type."""

    exit_code = 7


class DestinationError(SparsesyncError):
    """The destination (directory or S3) cannot be written."""

    exit_code = 8


class TransientDestinationError(DestinationError):
    """A destination failure a retry may cure (throttling, 5xx, dropped connection)."""

    transient = True


class VerifyError(SparsesyncError):
    """The output does not match the source."""

    exit_code = 9


class LoadError(SparsesyncError):
    """A sync run cannot be applied to the warehouse (refused by the guard, missing runs or parts)."""

    exit_code = 10


class IncompleteRunError(SparsesyncError):
    """``finalize`` found file groups no shard has finished (or two have): the run cannot be committed yet."""

    exit_code = 11
