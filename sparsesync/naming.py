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
_KEEP = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$-")


def is_plain_folder(name: str) -> bool:
    """True when ``name`` can serve as its own folder name (one segment, not ``.``/``..``, no ``%``)."""
    return bool(_PLAIN.fullmatch(name))


def table_folder(name: str) -> str:
    """The folder that holds ``name``'s files at a destination: the name itself, or ``%``-encoded.

    Encoded: ``%`` followed by the UTF-8 bytes of the name, each byte outside ``[A-Za-z0-9_$-]`` as
    ``%XX`` (so ``../x`` becomes ``%%2E%2E%2Fx``).
    """
    if is_plain_folder(name):
        return name
    return "%" + "".join(chr(b) if chr(b) in _KEEP else f"%{b:02X}" for b in name.encode("utf-8"))
