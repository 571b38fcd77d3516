"""Durations on the command line: ``--keep 7d``, ``--lookback 10m``."""

from __future__ import annotations

import re

from sparsesync.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str = "--keep") -> float:
    """``90``, ``90s``, ``10m``, ``12h``, ``7d``, ``2w`` → seconds; anything else is a UsageError."""
    m = _DURATION.match(str(text))
    if not m:
        raise UsageError(f"{option} {text!r} is not a duration", hint="use e.g. 90s, 10m, 12h, 7d or 2w")
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
