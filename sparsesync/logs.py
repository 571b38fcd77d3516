"""Structured logs: one JSON object per event when piped, readable text on a terminal.

Usage::

    from sparsesync.logs import configure, get_logger
    configure(fmt="auto")                     # json unless the stream is a terminal
    log = get_logger("sparsesync.executor")
    log.info("range_done", range=3, planned_rows=100000, actual_rows=99812, efficiency=0.998)
    log.warning("sparse_region", lo=5000, hi=9000000000, density=3.3e-7)

A JSON line holds ``ts`` (UTC ISO 8601), ``level``, ``logger``, ``event`` and the fields. Secrets never
get out: every message and field passes a redaction filter that masks URL passwords
(``scheme://user:pass@`` → ``scheme://user:***@``) and the values of keys named like password,
secret or token — whichever logger or handler emits them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import IO, Any, Mapping

ROOT = "sparsesync"
FORMATS = ("auto", "json", "text")
MASK = "***"

# scheme://user:password@  — the password is everything up to the last '@' before host (no '/' in it).
# The password runs to the LAST @ before the host: a raw @ inside it must not leave its tail unmasked.
_URL_PASSWORD = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^\s/]*)(?P<at>@)")
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential", re.IGNORECASE)
# key=value / "key": "value" pairs inside free text, for keys that name a secret
_INLINE_SECRET = re.compile(
    r"(?P<k>\b[\w-]*(?:password|passwd|secret|token|api[_-]?key)[\w-]*\b)(?P<sep>\"?\s*[:=]\s*\"?)(?P<v>[^\s\",;&]+)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """Mask URL passwords and ``password=…``-style pairs in free text."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('pre')}{MASK if m.group('pw') else ''}{m.group('at')}", text)
    return _INLINE_SECRET.sub(lambda m: f"{m.group('k')}{m.group('sep')}{MASK}", text)


def redact_value(key: str | None, value: Any) -> Any:
    """A field value made safe: secrets by key name are masked, strings are scrubbed, containers recursed."""
    if key is not None and _SECRET_KEY.search(key) and value is not None:
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(None, v) for v in value]
    return value


class RedactFilter(logging.Filter):
    """Scrubs the message, its arguments and the structured fields of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not leak args either
            msg = str(record.msg)
        record.msg, record.args = redact_text(msg), None
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {k: redact_value(k, v) for k, v in fields.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def _jsonable(v: Any) -> Any:
    # Keys beyond 2^53 stay exact: big ints are written as strings, like in plans.
    if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
        return v
    if isinstance(v, int):
        return v if abs(v) < 2**53 else str(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    return str(v)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for k, v in (getattr(record, "fields", None) or {}).items():
            if k not in obj:
                obj[k] = _jsonable(v)
            else:
                obj[f"field_{k}"] = _jsonable(v)
        if record.exc_info or record.exc_text:
            obj["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level event key=value …`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc).strftime("%H:%M:%S")
        parts = [ts, f"{record.levelname.lower():<7}", record.getMessage()]
        for k, v in (getattr(record, "fields", None) or {}).items():
            parts.append(f"{k}={_text_value(v)}")
        line = " ".join(parts)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def _text_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    s = str(v)
    return json.dumps(s, ensure_ascii=False) if (" " in s or not s) else s


class EventLogger(logging.LoggerAdapter):
    """``log.info("event", key=value, …)``: keyword arguments become the event's fields."""

    def process(self, msg, kwargs):
        reserved = {"exc_info", "stack_info", "stacklevel", "extra"}
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in reserved}
        extra = dict(kwargs.pop("extra", None) or {})
        extra["fields"] = {**extra.get("fields", {}), **fields}
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str = ROOT) -> EventLogger:
    """A logger under ``sparsesync`` whose keyword arguments are structured fields."""
    if name != ROOT and not name.startswith(ROOT + "."):
        name = f"{ROOT}.{name}"
    logger = logging.getLogger(name)
    _ensure_filter(logger)
    return EventLogger(logger, {})


def _ensure_filter(logger: logging.Logger) -> None:
    # Filters on a logger apply to records created there; attach to each sparsesync logger we hand out.
    if not any(isinstance(f, RedactFilter) for f in logger.filters):
        logger.addFilter(RedactFilter())


def resolve_format(fmt: str, stream: IO[str]) -> str:
    """``auto`` → ``text`` on a terminal, ``json`` otherwise."""
    if fmt not in FORMATS:
        from sparsesync.errors import UsageError

        raise UsageError(f"unknown log format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    try:
        return "text" if isatty and isatty() else "json"
    except (ValueError, OSError):  # closed stream
        return "json"


def configure(fmt: str = "auto", level: int | str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Send ``sparsesync`` logs to ``stream`` (default stderr) as JSON lines or text; returns the handler.

    Calling again replaces the previous handler, so commands (and tests) can reconfigure freely.
    """
    stream = stream if stream is not None else sys.stderr
    chosen = resolve_format(fmt, stream)
    root = logging.getLogger(ROOT)
    for h in list(root.handlers):
        if getattr(h, "_sparsesync", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream)
    handler._sparsesync = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    # The handler filters too: records from child loggers not made by get_logger still get scrubbed.
    handler.addFilter(RedactFilter())
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    root.propagate = False
    _ensure_filter(root)
    return handler


def reset() -> None:
    """Undo :func:`configure`: remove its handler, let records propagate again, clear the level."""
    root = logging.getLogger(ROOT)
    for h in list(root.handlers):
        if getattr(h, "_sparsesync", False):
            root.removeHandler(h)
    root.propagate = True
    root.setLevel(logging.NOTSET)


# ---- the roadmap's monitoring events ---------------------------------------------------------------------
def log_range_done(log: EventLogger, index: int, lo: int, hi: int | None, planned_rows: int, actual_rows: int, **fields: Any) -> float:
    """``range_done`` with ``efficiency`` = actual / planned rows (1.0 when both are 0); returns it.

    An efficiency far below 1 is the roadmap's sparse-chunk signal; above 1 means the estimate was low.
    """
    efficiency = (actual_rows / planned_rows) if planned_rows else (1.0 if actual_rows == 0 else float(actual_rows))
    log.info(
        "range_done", range=index, lo=lo, hi=hi, planned_rows=planned_rows, actual_rows=actual_rows,
        efficiency=round(efficiency, 6), **fields,
    )
    return efficiency


def log_sparse_region(log: EventLogger, lo: int, hi: int, rows: int, **fields: Any) -> None:
    """``sparse_region`` (a warning) with ``density`` = rows per key over ``[lo, hi)``."""
    log.warning("sparse_region", lo=lo, hi=hi, rows=rows, density=rows / max(1, hi - lo), **fields)
