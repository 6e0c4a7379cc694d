"""Packages whose submodules and re-exported names are imported when first named (PEP 562),
so that a run loads only the parts it uses."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_package(package: str, submodules: tuple[str, ...], exports: dict[str, str] | None = None
                 ) -> tuple[list[str], Callable, Callable]:
    """(__all__, __getattr__, __dir__) for `package`: `package.sub` imports the submodule
    `sub` on first use, and `package.name` for `name` in `exports` (name -> submodule)
    returns that submodule's attribute. `__all__` names the submodules (where each
    exported name is documented); `dir(package)` lists the exported names too."""
    exports = exports or {}
    names = sorted({*submodules, *exports})

    def __getattr__(name: str):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return names

    return sorted(submodules), __getattr__, __dir__
