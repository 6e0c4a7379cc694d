"""Start-up: how soon `make exp NAME=mlp` trains, with JAX's persistent compilation cache cold
(an empty cache folder) and warm (the folder the previous run filled).

  first_epoch_cold_ms / first_epoch_warm_ms   from starting `python -m jaxdl exp mlp` to its
                                              first epoch's line (interpreter start, imports,
                                              data, compilation and the epoch itself)
  warm_speedup                                cold / warm (median over rounds)

Each round runs a cold start in a fresh folder, then a warm start in that folder, in child
processes, so both pay the same interpreter and import costs.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.registry import BenchContext, Workload

REPO = Path(__file__).resolve().parents[1]
ARGS = ["exp", "mlp", "--max-epochs", "2", "--no-tensorboard"]


def time_to_first_epoch(cache: Path, out: Path) -> float:
    """Milliseconds from the child's start to its first per-epoch line on stdout."""
    env = {**os.environ, "JAXDL_COMPILE_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "jaxdl", *ARGS, "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    for line in proc.stdout:
        if first is None and " epoch 1/" in line:
            first = (time.perf_counter() - t0) * 1e3
    if proc.wait() != 0 or first is None:
        raise RuntimeError(f"`python -m jaxdl {' '.join(ARGS)}` failed (exit {proc.returncode})")
    return first


def run_startup(ctx: BenchContext) -> dict:
    rounds = 1 if ctx.quick else 3
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            cache = Path(tmp) / f"cache{r}"
            cold.append(time_to_first_epoch(cache, Path(tmp) / f"cold{r}"))
            warm.append(time_to_first_epoch(cache, Path(tmp) / f"warm{r}"))
    record = {"name": "startup_mlp", "rounds": rounds, "first_epoch_cold_ms": statistics.median(cold),
              "first_epoch_warm_ms": statistics.median(warm)}
    record["warm_speedup"] = record["first_epoch_cold_ms"] / record["first_epoch_warm_ms"]
    ctx.notes.append(f"startup_mlp: first epoch {record['first_epoch_cold_ms'] / 1e3:.2f} s after a cold start, "
                     f"{record['first_epoch_warm_ms'] / 1e3:.2f} s warm (compilation cache): "
                     f"{record['warm_speedup']:.2f}x sooner")
    return record


def workloads() -> list[Workload]:
    return [Workload("startup_mlp", run_startup, group="startup")]
