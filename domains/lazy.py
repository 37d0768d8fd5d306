"""Lazy package exports: a package names its public API without importing torch, PySyft or pandas.

Every package of ``domains/`` exports its names this way, so ``from domains.site import lifecycle``
or ``import domains`` in the CLI costs milliseconds: a name's module is imported on first use.

>>> __all__, __getattr__, __dir__ = lazy_exports("demo", {"sqrt": "math"})
>>> __getattr__("sqrt")(9.0)
3.0
>>> __getattr__("cbrt")
Traceback (most recent call last):
...
AttributeError: module 'demo' has no attribute 'cbrt'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``, whose ``exports`` maps each
    public name to the module that defines it."""
    names = sorted(exports)

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def dir_() -> list[str]:
        return names

    return names, getattr_, dir_
