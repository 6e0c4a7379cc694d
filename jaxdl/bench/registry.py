"""Benchmark workloads, registered per room.

Each room adds a module `jaxdl/bench/workloads_<room>.py` exposing
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
    import jaxdl.bench as pkg

    found: list[Workload] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("workloads_"):
            found.extend(importlib.import_module(f"jaxdl.bench.{info.name}").workloads())
    return found
