"""Modules imported on first attribute access, for imports only some runs need (start-up cost, issue 11)."""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType


class _LazyModule(ModuleType):
    """Stands for module ``name`` until an attribute is read; then imports it (once, under a lock) and
    forwards every attribute read to it.

    Not ``importlib.util.LazyLoader``: on Python 3.11 two threads touching a LazyLoader module for the first
    time at once can see it half-initialised (``module 'pyarrow.compute' has no attribute 'cast'`` with
    ``--workers 2``). Here the real import runs through the ordinary, thread-safe import machinery.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_lock"] = threading.Lock()
        self.__dict__["_lazy_module"] = None

    def _lazy_load(self) -> ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is None:
            with self.__dict__["_lazy_lock"]:
                module = self.__dict__["_lazy_module"]
                if module is None:
                    module = importlib.import_module(self.__name__)
                    self.__dict__["_lazy_module"] = module
        return module

    def __getattr__(self, attr: str):
        return getattr(self._lazy_load(), attr)

    def __dir__(self):
        return dir(self._lazy_load())


def lazy_module(name: str) -> ModuleType:
    """``name`` as a module object that is really imported the first time one of its attributes is read.

    ``pyarrow.compute`` costs ~40 ms of CPU to import, and ``execute`` on an empty table never calls it;
    modules that use it bind ``pc = lazy_module("pyarrow.compute")`` instead of importing it. An already
    imported module is returned as it is.
    """
    if name in sys.modules:
        return sys.modules[name]
    return _LazyModule(name)


__all__ = ["lazy_module"]
