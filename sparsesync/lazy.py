"""Modules loaded on first attribute access, for imports only some runs need (start-up cost, issue 11)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name`` as a module object that is really imported the first time one of its attributes is read.

    ``pyarrow.compute`` costs ~40 ms of CPU to import, and ``execute`` on an empty table never calls it;
    modules that use it bind ``pc = lazy_module("pyarrow.compute")`` instead of importing it. Already
    imported modules are returned as they are.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:  # as a real import would: ``pyarrow.compute`` reachable as an attribute of ``pyarrow``
        setattr(sys.modules[parent], child, module)
    return module


__all__ = ["lazy_module"]
