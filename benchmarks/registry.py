"""Benchmark workloads, registered per room.

Each room adds a module `benchmarks/workloads_<room>.py` exposing
`workloads() -> list[Workload]`; `discover()` imports every such module. A workload's
`run(ctx)` returns one record (a dict) for bench.json: at least `name`; timings in
milliseconds named `<what>_ms` (`eager_ms`, `jit_ms`, `compile_ms`, `scan_ms`, `loop_ms`,
`peer_<peer>_ms`), `gflop` where it applies (the harness adds `peak_fraction`), and any
other figures (ratios, accuracies) under clear names.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import benchmarks


@dataclass
class BenchContext:
    quick: bool  # brief runs (the test suite's smoke run)
    threads: int  # CPU threads given to every framework alike
    peak_gflops: float | None = None  # float32 matmul throughput measured in this run
    out_dir: Path | None = None
    shared_data: Path | None = None  # ../shared/data when present (benchmarks may use it; tests must not)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Workload:
    name: str
    run: Callable[[BenchContext], dict]
    group: str = "core"


def discover() -> list[Workload]:
    """Every room's workloads, rooms in name order. A room whose module fails to import
    (or whose `workloads()` raises) appears as one workload named after the room that
    raises that error when run, so the other rooms still run and the failure is recorded."""
    found: list[Workload] = []
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith("workloads_"):
            room = info.name[len("workloads_"):]
            try:
                found.extend(importlib.import_module(f"benchmarks.{info.name}").workloads())
            except Exception as e:  # noqa: BLE001 -- reported as that room's failure
                found.append(Workload(f"{room} (import)", _raiser(e), group=room))
    return found


def _raiser(error: Exception) -> Callable[[BenchContext], dict]:
    def run(ctx: BenchContext) -> dict:
        raise error

    return run
