"""Structured logs: JSON lines when piped, text on a terminal, secrets never printed."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sparsesync.logs import (
    configure,
    get_logger,
    log_range_done,
    log_sparse_region,
    redact_text,
    reset,
    resolve_format,
)

SECRET = "S3cr3t-pa55"


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging():
    # Leave the sparsesync logger as other tests expect it (propagating, no handler of ours).
    yield
    reset()


@pytest.fixture
def out():
    buf = io.StringIO()
    configure(fmt="json", level="DEBUG", stream=buf)
    return buf


def lines(buf):
    return [json.loads(x) for x in buf.getvalue().splitlines() if x.strip()]


def test_auto_is_json_when_piped_and_text_on_a_terminal():
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("auto", TTY()) == "text"
    assert resolve_format("text", io.StringIO()) == "text"


def test_json_lines_carry_ts_level_event_and_fields(out):
    log = get_logger("executor")
    log.info("range_done", range=3, planned_rows=100000, actual_rows=99812, efficiency=0.99812)
    log.warning("sparse_region", lo=5000, hi=2**64 - 1, density=3.3e-7)
    first, second = lines(out)
    assert first["event"] == "range_done" and first["level"] == "info"
    assert first["range"] == 3 and first["planned_rows"] == 100000 and first["actual_rows"] == 99812
    assert first["efficiency"] == pytest.approx(0.99812)
    assert first["ts"].endswith("+00:00") and first["logger"] == "sparsesync.executor"
    assert second["level"] == "warning" and second["lo"] == 5000
    assert second["hi"] == str(2**64 - 1)  # beyond 2^53: exact, as a string


def test_one_object_per_line_even_with_newlines_in_values(out):
    get_logger("x").info("note", text="two\nlines")
    raw = out.getvalue().splitlines()
    assert len(raw) == 1 and json.loads(raw[0])["text"] == "two\nlines"


def test_text_format_on_a_terminal():
    tty = TTY()
    configure(fmt="auto", level="INFO", stream=tty)
    try:
        get_logger("executor").info("range_done", range=3, planned_rows=100, efficiency=0.5, note="a b")
        get_logger("executor").debug("hidden")
    finally:
        reset()
    text = tty.getvalue()
    assert "range_done" in text and "range=3" in text and "planned_rows=100" in text and 'note="a b"' in text
    assert "hidden" not in text  # below the level
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.parametrize(
    "raw, expected",
    [
        (f"mysql+pymysql://etl:{SECRET}@db:3306/shop", "mysql+pymysql://etl:***@db:3306/shop"),
        (f"connect to postgresql://u:{SECRET}@h/db failed", "connect to postgresql://u:***@h/db failed"),
        ("mysql://etl@db/shop", "mysql://etl@db/shop"),  # no password: unchanged
        (f"password={SECRET} user=x", "password=*** user=x"),
        (f'{{"api_token": "{SECRET}"}}', '{"api_token": "***"}'),
    ],
)
def test_redact_text(raw, expected):
    assert redact_text(raw) == expected


def test_passwords_never_reach_the_stream(out):
    log = get_logger("planner")
    log.info("connect", url=f"mysql+pymysql://etl:{SECRET}@127.0.0.1/test", password=SECRET)
    log.info("creds", aws_secret_access_key=SECRET, session_token=SECRET, nested={"db_password": SECRET, "ok": 1})
    log.info(f"message with mysql://root:{SECRET}@h/db inside")
    log.info("printf style %s", f"sqlite://x:{SECRET}@y")
    try:
        raise RuntimeError(f"boom mysql://a:{SECRET}@b/c")
    except RuntimeError:
        log.exception("failed")
    # a plain stdlib logger under sparsesync (not made by get_logger) is scrubbed by the handler
    logging.getLogger("sparsesync.other").warning("raw %s", f"mysql://a:{SECRET}@b/c")
    text = out.getvalue()
    assert SECRET not in text
    recs = lines(out)
    assert recs[0]["url"] == "mysql+pymysql://etl:***@127.0.0.1/test" and recs[0]["password"] == "***"
    assert recs[1]["nested"] == {"db_password": "***", "ok": 1}
    assert "exception" in recs[4]
    assert len(recs) == 6


def test_reconfigure_replaces_the_handler():
    a, b = io.StringIO(), io.StringIO()
    configure(fmt="json", stream=a)
    configure(fmt="json", stream=b)
    try:
        get_logger("x").info("once")
    finally:
        reset()
    assert a.getvalue() == "" and len(b.getvalue().splitlines()) == 1


def test_unknown_format_is_refused():
    from sparsesync.errors import UsageError

    with pytest.raises(UsageError, match="unknown log format"):
        configure(fmt="xml", stream=io.StringIO())


def test_reset_restores_propagation():
    configure(fmt="json", stream=io.StringIO())
    assert logging.getLogger("sparsesync").propagate is False
    reset()
    root = logging.getLogger("sparsesync")
    assert root.propagate is True and not [h for h in root.handlers if getattr(h, "_sparsesync", False)]


def test_monitoring_event_helpers(out):
    log = get_logger("executor")
    eff = log_range_done(log, 7, 1000, None, planned_rows=4000, actual_rows=1000, file="part-00001.parquet")
    assert eff == 0.25
    assert log_range_done(log, 8, 0, 10, planned_rows=0, actual_rows=0) == 1.0
    log_sparse_region(log, 10, 2**63, rows=4)
    a, b, c = lines(out)
    assert a["event"] == "range_done" and a["efficiency"] == 0.25 and a["hi"] is None and a["file"] == "part-00001.parquet"
    assert b["efficiency"] == 1.0
    assert c["event"] == "sparse_region" and c["level"] == "warning" and c["hi"] == str(2**63)
    assert c["density"] == pytest.approx(4 / (2**63 - 10))
