"""Timing that a benchmark can quote: warm-up, repeats, median and spread, synchronised."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def time_call(fn: Callable, *args, warmup: int = 2, repeats: int = 10, min_seconds: float = 0.0) -> dict:
    """Call `fn(*args)` `warmup` times, then at least `repeats` times (and at least
    `min_seconds` in total), each timed to `block_until_ready`. Returns
    {'median_ms', 'p10_ms', 'p90_ms', 'repeats'}."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    samples = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {"median_ms": statistics.median(samples), "p10_ms": samples[int(0.1 * (len(samples) - 1))],
            "p90_ms": samples[int(0.9 * (len(samples) - 1))], "repeats": len(samples)}


def time_once(fn: Callable, *args) -> float:
    """Milliseconds of one synchronised call (e.g. the first call of a jitted function,
    which includes tracing and compilation)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) * 1e3
