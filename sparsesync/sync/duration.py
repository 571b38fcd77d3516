"""Durations on the command line: ``--keep 7d``, ``--lookback 10m``.

A duration always carries its unit: a bare ``7`` is refused (it read as 7 *seconds*, which is rarely what
``--keep 7`` meant), naming the option and the way to write it.
"""

from __future__ import annotations

import re

from sparsesync.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EXAMPLES = "90s, 10m, 12h, 7d or 2w"


def parse_duration(text: str, option: str = "--keep") -> float:
    """``90s``, ``10m``, ``12h``, ``7d``, ``2w`` → seconds; a bare number or anything else is a UsageError."""
    text = str(text)
    bare = _NUMBER.match(text)
    if bare:
        n = bare.group(1)
        raise UsageError(f"{option} {n} has no unit", hint=f"write {n}d, {n}h, {n}m or {n}s (e.g. {EXAMPLES})")
    m = _DURATION.match(text)
    if not m:
        raise UsageError(f"{option} {text!r} is not a duration", hint=f"write a number and a unit, e.g. {EXAMPLES}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]
