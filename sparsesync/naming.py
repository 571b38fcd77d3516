"""Folder names for tables at a destination.

A table's files live under ``<dest>/<folder>/`` where ``folder`` is the table's name when that name is a
safe single path segment, and an encoded form otherwise (a name such as ``../x`` or ``a/b`` must never
reach outside its folder or into another table's). The encoding is injective and never collides with a
plain name: plain names have no ``%``, encoded names always do.
"""

from __future__ import annotations

import re

__all__ = ["table_folder", "is_plain_folder"]

_PLAIN = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_$.\-]{0,199}")
MAX_ENCODED = 160  # characters of an encoded folder name, at most
_KEEP = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$-")


def is_plain_folder(name: str) -> bool:
    """True when ``name`` can serve as its own folder name (one segment, not ``.``/``..``, no ``%``)."""
    return bool(_PLAIN.fullmatch(name))


def table_folder(name: str) -> str:
    """The folder that holds ``name``'s files at a destination: the name itself, or ``%``-encoded.

    Encoded: ``%`` followed by the UTF-8 bytes of the name, each byte outside ``[A-Za-z0-9_$-]`` as
    ``%XX`` (so ``../x`` becomes ``%%2E%2E%2Fx``). An encoding longer than :data:`MAX_ENCODED` characters
    (a 64-character non-ASCII name takes up to 769; a filesystem allows 255 per segment, and the plan
    file ``<folder>-<plan_id>.json`` needs room too) is cut at a whole byte and ends in ``~`` plus 16 hex
    digits of the name's SHA-256 (``~`` never occurs in an uncut encoding: it would be ``%7E``).
    """
    if is_plain_folder(name):
        return name
    encoded = "%" + "".join(chr(b) if chr(b) in _KEEP else f"%{b:02X}" for b in name.encode("utf-8"))
    if len(encoded) <= MAX_ENCODED:
        return encoded
    import hashlib

    cut = MAX_ENCODED - 17
    if "%" in encoded[cut - 2:cut]:  # never cut inside a %XX
        cut = encoded.rindex("%", cut - 2, cut)
    return encoded[:cut] + "~" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
