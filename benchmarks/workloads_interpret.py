"""Shapley values: `jaxdl.interpret` beside the `shap` library, on one small tanh MLP.

The function explained is a one-hidden-layer tanh MLP with random weights (D -> 32 -> 1,
weights N(0, 1/fan_in), biases N(0, 0.1^2)); the explained rows and the background rows
are N(0, 1) draws. Both sides explain the same function:

  jaxdl   `interpret.shapley(f, x, background)` with f the jnp MLP in float32; `jit_ms` is
          the median wall time per explained row (steady state; `compile_ms` the first
          call), `jit_cpu_ms` the process CPU time per row.
  shap    its exact explainer `shap.explainers.Exact(f, shap.maskers.Independent(bg))`
          and its Kernel explainer, each handed the function twice -- as NumPy code
          (float64, as one would write it for shap) and as the jitted float32 JAX function
          wrapped to return NumPy -- and credited with the faster of the two
          (`peer_shap_ms`, `peer_shap_given`; both in `shap_numpy_f_ms` / `shap_jax_f_ms`,
          CPU time in `shap_*_cpu_ms`). Per-row time = one call explaining `rows` rows,
          divided by `rows`, after a warm-up call (numba, jit) on a throwaway background.
  Timings alternate between the two sides over `rounds` rounds (medians), so both see the
  same machine load; CPU times (every thread of the process) are less sensitive than wall
  times to other programs sharing the cores, and `cpu_speedup_vs_shap` is their ratio.

Workloads (and their targets):
  shapley_exact_d16_1row, shapley_exact_d16_bg50: exact values against one baseline row
    and against a 50-row background; `speedup_vs_shap` = peer / jaxdl wall time (target
    >= 20); `max_abs_diff_vs_shap` and `max_abs_diff_vs_bruteforce` compare jaxdl's float64
    values (x64 scoped to the check) with shap's (NumPy float64 f) and with an independent
    NumPy brute force over all coalitions (target <= 1e-6). `f_alone_ms` is jitted f run
    once on all 2^D * N masked rows, prebuilt: the cost of the evaluations themselves,
    which no exact black-box method avoids.
  shapley_sampling_d30_bg50: D = 30 (shap's exact explainer refuses it). Reference: jaxdl's
    sampler with `reference_pairs` antithetic pairs (its standard errors are recorded: a
    small fraction of the errors compared). The Kernel explainer runs with its default
    sample count (2 D + 2048 coalitions) and `l1_reg=False` (its default,
    'num_features(10)', keeps only 10 of the 30 features: that MAE is recorded too, as
    `shap_default_l1_mae`). jaxdl's sampler runs over a ladder of pair counts; the reported
    row is the largest count whose wall time per row is at most a tenth of Kernel's
    (target: its MAE <= Kernel's). MAE = mean |estimate - reference| over rows x features.

Quick mode: D = 8 (exact) and 10 (sampling), 5 background rows, no shap (its import alone
takes seconds): a smoke run of the same code.
"""
from __future__ import annotations

import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import interpret
from benchmarks.peers import import_peer
from benchmarks.registry import BenchContext, Workload
from benchmarks.timing import time_once
from benchmarks.workloads_core import target

SEED = 0
HIDDEN = 32
EXACT = {"full": {"d": 16, "rows": 2, "rounds": 3}, "quick": {"d": 8, "rows": 1, "rounds": 1}}
SAMPLING = {"full": {"d": 30, "background": 50, "rows": 8, "rounds": 3, "reference_pairs": 200_000,
                     "ladder": (50, 100, 200, 300, 400, 600, 800, 1200, 1600, 3200)},
            "quick": {"d": 10, "background": 5, "rows": 1, "rounds": 1, "reference_pairs": 10,
                      "ladder": (10,)}}
# Reference shap 0.51 timings the speed-up targets were set against (ms per explained row),
# kept in the record for comparison as `target_reference_shap_ms`.
REFERENCE_SHAP_MS = {"exact_d16_1row": 74.0, "exact_d16_bg50": 1300.0, "kernel_d30_bg50": 88.0}


def tanh_mlp(d: int, seed: int, hidden: int = HIDDEN) -> dict:
    """Random float64 weights of a D -> hidden -> 1 tanh MLP."""
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(size=(d, hidden)) / np.sqrt(d), "b1": 0.1 * rng.normal(size=hidden),
            "w2": rng.normal(size=hidden) / np.sqrt(hidden), "c": 0.1 * rng.normal()}


def numpy_fn(p: dict):
    """The MLP as NumPy float64 code (what a shap user writes)."""
    def f(X):
        return np.tanh(np.asarray(X, np.float64) @ p["W1"] + p["b1"]) @ p["w2"] + p["c"]
    return f


def jnp_fn(p: dict, dtype):
    """The MLP as a jnp function of a batch (B, D) -> (B,), weights in `dtype`."""
    W1, b1, w2, c = (np.asarray(p[k], dtype) for k in ("W1", "b1", "w2", "c"))

    def f(X):
        return jnp.tanh(X @ W1 + b1) @ w2 + c
    return f


def wrapped_for_shap(f_jnp):
    """The jitted float32 JAX function behind a NumPy interface."""
    jitted = jax.jit(f_jnp)

    def f(X):
        return np.asarray(jitted(jnp.asarray(X, jnp.float32)), np.float64)
    return f


def import_shap(ctx: BenchContext):
    if ctx.quick:
        return None
    return import_peer(ctx, "shap", "Shapley peer figures")


def record_peers(record: dict, peers, wall: dict, cpu: dict) -> str:
    """Per-peer medians into `record` (`shap_<peer>_ms`, its rounds, `_cpu_ms`), and the
    fastest peer as `peer_shap_ms` / `peer_shap_given`; returns that peer's name."""
    for name in peers:
        record[f"shap_{name}_ms"] = statistics.median(wall[name])
        record[f"shap_{name}_ms_rounds"] = wall[name]
        record[f"shap_{name}_cpu_ms"] = statistics.median(cpu[name])
    best = min(peers, key=lambda k: record[f"shap_{k}_ms"])
    record["peer_shap_ms"], record["peer_shap_given"] = record[f"shap_{best}_ms"], best
    return best


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, *, repeats: int) -> tuple[float, float]:
    """(median wall ms, mean process CPU ms) per call over `repeats` synchronised calls, after one
    warm-up call. CPU time counts every thread of this process: it is what the work costs,
    less sensitive than wall time to other programs sharing the cores."""
    jax.block_until_ready(fn())
    walls, cpu0 = [], _cpu_seconds()
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        walls.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(walls), (_cpu_seconds() - cpu0) * 1e3 / repeats


def bruteforce_shapley(f_np, x: np.ndarray, background: np.ndarray, *, chunk: int = 2048) -> np.ndarray:
    """Exact interventional Shapley values in NumPy float64, independently of jaxdl:
    v(S) for every coalition, then phi_i = sum_{S lacking i} |S|!(D-|S|-1)!/D! (v(S+i) - v(S))."""
    d = len(x)
    ids = np.arange(1 << d)
    members = ((ids[:, None] >> np.arange(d)) & 1).astype(bool)
    value = np.empty(1 << d)
    for start in range(0, 1 << d, chunk):
        m = members[start:start + chunk]
        Z = np.where(m[:, None, :], x, background[None])
        value[start:start + chunk] = f_np(Z.reshape(-1, d)).reshape(len(m), -1).mean(1)
    size = members.sum(1)
    fact = [float(np.prod(np.arange(1, k + 1))) for k in range(d + 1)]
    phi = np.zeros(d)
    for i in range(d):
        lacking = ids[~members[:, i]]
        k = size[lacking]
        weight = np.array([fact[s] * fact[d - s - 1] / fact[d] for s in range(d)])[k]
        phi[i] = np.sum(weight * (value[lacking | (1 << i)] - value[lacking]))
    return phi


def _shap_exact(shap, f, X: np.ndarray, background: np.ndarray) -> tuple[float, float, object]:
    """(wall ms, CPU ms) per row of one call of shap's exact explainer over the rows of X."""
    explainer = shap.explainers.Exact(f, shap.maskers.Independent(background, max_samples=len(background)))
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = explainer(X, silent=True)
    return (time.perf_counter() - t0) * 1e3 / len(X), (_cpu_seconds() - cpu0) * 1e3 / len(X), result


def _warm_shap(shap, f, d: int) -> None:
    """Compile shap's numba kernels and f's jit on a throwaway 1-row background, so that no
    timed call pays for them."""
    zeros = np.zeros((1, d))
    shap.explainers.Exact(f, shap.maskers.Independent(zeros, max_samples=1))(zeros, silent=True)


def _time_f_alone(f32, x: np.ndarray, background: np.ndarray, *, repeats: int) -> tuple[float, float]:
    """(wall ms, CPU ms) of the evaluations alone: jitted f once over every masked row of x
    against the background (all 2^D coalitions), prebuilt."""
    d = len(x)
    members = ((np.arange(1 << d)[:, None] >> np.arange(d)) & 1).astype(bool)
    all_rows = jnp.asarray(np.where(members[:, None, :], x, background[None]).reshape(-1, d), jnp.float32)
    jit_f = jax.jit(f32)
    return timed(lambda: jit_f(all_rows), repeats=repeats)


def _exact_accuracy_f64(params: dict, X: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, dict]:
    """jaxdl's exact values in float64 (x64 scoped here) for the rows of X, and their figures:
    the time per row (`jit_f64_ms`) and the gaps to an independent NumPy brute force and to
    efficiency (the values summing to f(x) - E f(background))."""
    n = len(background)
    f_np = numpy_fn(params)
    with jax.enable_x64(True):
        f64 = jnp_fn(params, np.float64)
        bg64 = jnp.asarray(background if n > 1 else background[0], jnp.float64)
        ours64 = np.stack([np.asarray(interpret.shapley(f64, jnp.asarray(x, jnp.float64), bg64).values) for x in X])
        jit_f64_ms, _ = timed(lambda: interpret.shapley(f64, jnp.asarray(X[0]), bg64).values, repeats=3)
    reference = np.stack([bruteforce_shapley(f_np, x, background) for x in X])
    return ours64, {"jit_f64_ms": jit_f64_ms,
                    "max_abs_diff_vs_bruteforce": float(np.abs(ours64 - reference).max()),
                    "efficiency_gap_f64": float(np.abs(ours64.sum(1) - (f_np(X) - f_np(background).mean())).max())}


def _exact_targets(record: dict) -> list:
    """The exact workloads' targets: speed-up over shap (wall and CPU time), agreement in float64."""
    return [
        target("speed-up per row over shap's exact explainer (wall time)", record.get("speedup_vs_shap"), 20.0,
               at_most=False),
        target("speed-up per row over shap's exact explainer (CPU time)", record.get("cpu_speedup_vs_shap"), 20.0,
               at_most=False),
        target("max |jaxdl - shap| in float64", record.get("max_abs_diff_vs_shap"), 1e-6),
        target("max |jaxdl - brute force| in float64", record["max_abs_diff_vs_bruteforce"], 1e-6),
    ]


def run_exact(ctx: BenchContext, n_background: int) -> dict:
    s = EXACT["quick" if ctx.quick else "full"]
    d, rows, rounds = s["d"], s["rows"], s["rounds"]
    n = min(n_background, 5) if ctx.quick else n_background
    rows = 1 if n > 1 else rows  # shap needs seconds per row against a background
    params = tanh_mlp(d, SEED)
    rng = np.random.default_rng(SEED + 1)
    X, background = rng.normal(size=(rows, d)), rng.normal(size=(n, d))
    f32 = jnp_fn(params, np.float32)
    X32, bg32 = jnp.asarray(X, jnp.float32), jnp.asarray(background if n > 1 else background[0], jnp.float32)

    def ours():
        return interpret.shapley(f32, X32[0], bg32).values

    compile_ms = time_once(ours)
    shap = import_shap(ctx)
    peers = {"numpy_f": numpy_fn(params), "jax_f": wrapped_for_shap(f32)} if shap else {}
    for f in peers.values():
        _warm_shap(shap, f, d)
    ours_wall, ours_cpu, peer_wall, peer_cpu = [], [], {k: [] for k in peers}, {k: [] for k in peers}
    shap_numpy_result = None
    for _ in range(rounds):
        wall, cpu = timed(ours, repeats=3 if ctx.quick else (5 if n > 1 else 20))
        ours_wall.append(wall)
        ours_cpu.append(cpu)
        for name, f in peers.items():
            wall, cpu, result = _shap_exact(shap, f, X, background)
            peer_wall[name].append(wall)
            peer_cpu[name].append(cpu)
            if name == "numpy_f":
                shap_numpy_result = result
    record = {"d": d, "background_rows": n, "rows": rows, "rounds": rounds, "hidden": HIDDEN,
              "compile_ms": compile_ms, "jit_ms": statistics.median(ours_wall), "jit_ms_rounds": ours_wall,
              "jit_cpu_ms": statistics.median(ours_cpu), "evaluations_per_row": (1 << d) * n}

    record["f_alone_ms"], record["f_alone_cpu_ms"] = _time_f_alone(f32, X[0], background,
                                                                   repeats=3 if ctx.quick else 5)
    ours64, accuracy = _exact_accuracy_f64(params, X, background)
    record.update(accuracy)
    record["target_reference_shap_ms"] = REFERENCE_SHAP_MS[f"exact_d16_{'1row' if n_background == 1 else 'bg50'}"]
    if peers:
        record["shap_version"] = shap.__version__
        record_peers(record, peers, peer_wall, peer_cpu)
        record["speedup_vs_shap"] = record["peer_shap_ms"] / record["jit_ms"]
        record["cpu_speedup_vs_shap"] = min(record[f"shap_{k}_cpu_ms"] for k in peers) / record["jit_cpu_ms"]
        record["max_abs_diff_vs_shap"] = float(np.abs(ours64 - shap_numpy_result.values).max())
    else:
        record["note"] = "shap not run (quick mode or not installed)"
    record["targets"] = _exact_targets(record)
    return record


def _kernel(shap, f, X, background, l1_reg, seed: int) -> tuple[float, float, np.ndarray]:
    """(wall ms, CPU ms) per row of one Kernel-explainer call over the rows of X, and its values."""
    explainer = shap.KernelExplainer(f, background)
    np.random.seed(seed)  # the Kernel explainer draws coalitions from NumPy's global generator
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    values = np.asarray(explainer.shap_values(X, l1_reg=l1_reg, silent=True))
    wall, cpu = (time.perf_counter() - t0) * 1e3 / len(X), (_cpu_seconds() - cpu0) * 1e3 / len(X)
    return wall, cpu, values.reshape(len(X), -1)


def _sampling_reference(f32, X32, bg32, *, num_samples: int, key) -> tuple[np.ndarray, np.ndarray]:
    """The reference values (rows, D) of the sampling workload -- jaxdl's sampler with
    `num_samples` antithetic pairs -- and their standard errors."""
    reference = [interpret.shapley(f32, X32[r], bg32, method="sampling", num_samples=num_samples,
                                   key=jax.random.fold_in(key, 10_000 + r)) for r in range(len(X32))]
    return (np.stack([np.asarray(r.values) for r in reference]),
            np.stack([np.asarray(r.stderr) for r in reference]))


def _sampling_mae(ours, num_samples: int, ref_values: np.ndarray) -> float:
    """Mean |estimate - reference| over rows x features of `ours(num_samples, row)`."""
    estimates = np.stack([np.asarray(ours(num_samples, r)) for r in range(len(ref_values))])
    return float(np.abs(estimates - ref_values).mean())


def _time_sampling_rounds(ours, ladder: list[dict], shap, peers: dict, X: np.ndarray, background: np.ndarray, *,
                          rounds: int, repeats: int) -> tuple[dict, dict, np.ndarray | None]:
    """Time jaxdl's sampler at every step of the ladder and shap's Kernel explainer on every peer
    function, alternating over `rounds`; each step gets its median `ms` / `cpu_ms` (its `walls` /
    `cpus` lists consumed). Returns the peers' (wall ms, CPU ms) per round and the values of
    Kernel's first run on the NumPy function."""
    kernel_wall, kernel_cpu, kernel_values = {k: [] for k in peers}, {k: [] for k in peers}, None
    for i in range(rounds):
        for step in ladder:
            wall, cpu = timed(lambda: ours(step["num_samples"]), repeats=repeats)
            step["walls"].append(wall)
            step["cpus"].append(cpu)
        for name, f in peers.items():
            wall, cpu, values = _kernel(shap, f, X, background, False, seed=SEED + i)
            kernel_wall[name].append(wall)
            kernel_cpu[name].append(cpu)
            if name == "numpy_f" and kernel_values is None:
                kernel_values = values
    for step in ladder:
        step["ms"], step["cpu_ms"] = statistics.median(step.pop("walls")), statistics.median(step.pop("cpus"))
    return kernel_wall, kernel_cpu, kernel_values


def _ladder_choice(ladder: list[dict], *, kernel_ms: float, kernel_cpu_ms: float, kernel_mae: float) -> dict:
    """The reported step of the ladder: the largest pair count within a tenth of Kernel's wall
    time per row (else the smallest), its figures and MAE ratio; and the same choice by CPU time."""
    within = [step for step in ladder if step["ms"] <= kernel_ms / 10]
    chosen = within[-1] if within else ladder[0]
    out = {"jit_ms": chosen["ms"], "jit_cpu_ms": chosen["cpu_ms"], "mae": chosen["mae"],
           "num_samples": chosen["num_samples"], "time_fraction_of_kernel": chosen["ms"] / kernel_ms,
           "mae_ratio_vs_kernel": chosen["mae"] / kernel_mae if within else None}
    # the same choice by CPU time (less sensitive to other programs on the machine)
    within_cpu = [step for step in ladder if step["cpu_ms"] <= kernel_cpu_ms / 10]
    if within_cpu:
        out.update({"num_samples_cpu_budget": within_cpu[-1]["num_samples"],
                    "mae_ratio_vs_kernel_cpu_budget": within_cpu[-1]["mae"] / kernel_mae})
    return out


def run_sampling(ctx: BenchContext) -> dict:
    s = SAMPLING["quick" if ctx.quick else "full"]
    d, n, rows, rounds = s["d"], s["background"], s["rows"], s["rounds"]
    params = tanh_mlp(d, SEED + 2)
    rng = np.random.default_rng(SEED + 3)
    X, background = rng.normal(size=(rows, d)), rng.normal(size=(n, d))
    f32 = jnp_fn(params, np.float32)
    X32, bg32 = jnp.asarray(X, jnp.float32), jnp.asarray(background, jnp.float32)
    key = jax.random.key(SEED)

    ref_values, ref_stderr = _sampling_reference(f32, X32, bg32, num_samples=s["reference_pairs"], key=key)
    record = {"d": d, "background_rows": n, "rows": rows, "rounds": rounds, "hidden": HIDDEN,
              "reference_pairs": s["reference_pairs"], "reference_mean_stderr": float(ref_stderr.mean()),
              "reference_max_stderr": float(ref_stderr.max())}

    def ours(num_samples, r=0):
        return interpret.shapley(f32, X32[r], bg32, method="sampling", num_samples=num_samples,
                                 key=jax.random.fold_in(key, r)).values

    ladder = [{"num_samples": num_samples, "mae": _sampling_mae(ours, num_samples, ref_values),
               "walls": [], "cpus": []} for num_samples in s["ladder"]]

    shap = import_shap(ctx)
    peers = {"numpy_f": numpy_fn(params), "jax_f": wrapped_for_shap(f32)} if shap else {}
    for f in peers.values():  # warm-up: shap's first call, f's jit
        _kernel(shap, f, X[:1], background[:2], False, seed=SEED)
    kernel_wall, kernel_cpu, kernel_values = _time_sampling_rounds(ours, ladder, shap, peers, X, background,
                                                                   rounds=rounds, repeats=3 if ctx.quick else 10)
    record["ladder"] = ladder
    if not peers:
        best = ladder[-1]
        record.update({"jit_ms": best["ms"], "jit_cpu_ms": best["cpu_ms"], "mae": best["mae"],
                       "num_samples": best["num_samples"], "note": "shap not run (quick mode or not installed)",
                       "targets": [target("MAE / Kernel's MAE, at <= 1/10 of its wall time", None, 1.0)]})
        return record

    record["shap_version"] = shap.__version__
    best = record_peers(record, peers, kernel_wall, kernel_cpu)
    record["peer_shap_nsamples"] = 2 * d + 2048
    record["peer_shap_mae"] = float(np.abs(kernel_values - ref_values).mean())
    _, _, default_values = _kernel(shap, peers["numpy_f"], X, background, "num_features(10)", seed=SEED)
    record["shap_default_l1_mae"] = float(np.abs(default_values - ref_values).mean())
    record["target_reference_shap_ms"] = REFERENCE_SHAP_MS["kernel_d30_bg50"]
    record.update(_ladder_choice(ladder, kernel_ms=record["peer_shap_ms"],
                                 kernel_cpu_ms=record[f"shap_{best}_cpu_ms"], kernel_mae=record["peer_shap_mae"]))
    record["targets"] = [
        target("MAE / Kernel's MAE, at <= 1/10 of its wall time", record["mae_ratio_vs_kernel"], 1.0),
        target("MAE / Kernel's MAE, at <= 1/10 of its CPU time", record.get("mae_ratio_vs_kernel_cpu_budget"), 1.0),
    ]
    return record


def workloads() -> list[Workload]:
    return [
        Workload("shapley_exact_d16_1row", lambda ctx: run_exact(ctx, 1), group="interpret"),
        Workload("shapley_exact_d16_bg50", lambda ctx: run_exact(ctx, 50), group="interpret"),
        Workload("shapley_sampling_d30_bg50", run_sampling, group="interpret"),
    ]
