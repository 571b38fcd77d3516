from sparsesync.errors import DestinationError, SparsesyncError, TransientDestinationError, UsageError


def test_one_line_carries_context_and_hint():
    err = DestinationError("upload failed", table="orders", key_range=(5, None), file="part-00001.parquet", hint="retry")
    line = err.one_line()
    assert line == "upload failed (table orders, keys [5, ∞), file part-00001.parquet) — retry"


def test_transient_and_exit_codes():
    assert TransientDestinationError("x").transient and not DestinationError("x").transient
    assert isinstance(UsageError("x"), SparsesyncError)
    assert UsageError("x").exit_code != DestinationError("x").exit_code


def test_multiline_messages_are_folded():
    assert "\n" not in SparsesyncError("a\nb").one_line()
