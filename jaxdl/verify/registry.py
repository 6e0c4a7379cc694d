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

import jax

import jaxdl.verify


@dataclass(frozen=True)
class Check:
    name: str
    layout: str  # "numerator" | "denominator" | "backprop" | ...
    shapes: str  # human-readable, e.g. "x:(5,) A:(5,5)"
    compute: Callable[[], tuple[Any, Any]]  # () -> (hand, autodiff) pytrees of arrays
    rtol: float | None = None  # None: by dtype (float64 1e-9, float32 1e-4)
    expect_fail: bool = False  # a deliberately wrong derivation that must be reported failing


def discover() -> list[Check]:
    """Every check from every `jaxdl.verify.check_*` module, in module order. A module that
    fails to import (or whose `checks()` raises) appears as one check named after it that
    raises that error when computed, so the others still run and the failure is reported."""
    found: list[Check] = []
    for info in sorted(pkgutil.iter_modules(jaxdl.verify.__path__), key=lambda m: m.name):
        if info.name.startswith("check_"):
            try:
                found.extend(importlib.import_module(f"jaxdl.verify.{info.name}").checks())
            except Exception as e:  # noqa: BLE001 -- reported as that module's failure
                found.append(Check(f"{info.name} (import)", "-", "-", _raiser(e)))
    return found


def _raiser(error: Exception) -> Callable[[], tuple[Any, Any]]:
    def compute():
        raise error

    return compute


# The programs a check runs are tiny and run once: compiling them is nearly all the time
# `make verify` takes, and XLA's CPU backend compiles them faster without LLVM's
# optimisation passes, which only speed up the code that runs.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compile_fast(fn: Callable, *args):
    """`jax.jit(fn)` compiled for `args` with FAST_COMPILE options (no global setting)."""
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)
