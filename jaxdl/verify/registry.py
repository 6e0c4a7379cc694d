"""The registry `make verify` runs.

Each room adds its hand-derived derivatives in a module `jaxdl/verify/check_<room>.py`
exposing `checks() -> list[Check]`; `discover()` imports every such module. A check
returns the hand-written result and the autodiff reference; they are compared leaf by
leaf (max absolute and max relative error) at a tolerance suited to the dtype.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    layout: str  # "numerator" | "denominator" | "backprop" | ...
    shapes: str  # human-readable, e.g. "x:(5,) A:(5,5)"
    compute: Callable[[], tuple[Any, Any]]  # () -> (hand, autodiff) pytrees of arrays
    rtol: float | None = None  # None: by dtype (float64 1e-9, float32 1e-4)
    expect_fail: bool = False  # a deliberately wrong derivation that must be reported failing


def discover() -> list[Check]:
    """Every check from every `jaxdl.verify.check_*` module, in module order."""
    import jaxdl.verify as pkg

    found: list[Check] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("check_"):
            found.extend(importlib.import_module(f"jaxdl.verify.{info.name}").checks())
    return found
