"""Data parallelism: per-step time and all-reduced bytes on 1, 2 and 4 devices.

The workload is the book's Fashion-MNIST MLP (784-256-10, batch 256, SGD lr 0.1) trained by
`jaxdl.devices.data_parallel` -- the epoch `make exp NAME=mlp` runs: one compiled scan of
steps per epoch, rows gathered inside each step -- on synthetic inputs of that shape.

  step_ms_<mode>_<n>    milliseconds per optimizer step (epoch time / steps) on n devices
                        with the global batch 256 split over them; `single` is the plain
                        jitted scan on one device.
  allreduce_bytes       bytes all-reduced per step, read from the compiled step's HLO (the
                        gradients of every parameter plus the loss and accuracy metrics);
                        the same for every n and both forms.

This process has one CPU device, so the devices are XLA's fake CPU devices in a child
process (`--xla_force_host_platform_device_count=4`), sharing this machine's cores: the
figures measure the overhead of the data-parallel program, not a speed-up.

What 4 GPUs would do follows from the bytes: a ring all-reduce moves 2 (N-1)/N x bytes in and
out of every device, taking that over the link bandwidth plus a fixed latency per
all-reduce. `expected_4gpu` states the assumed link bandwidths, latency and per-GPU compute
time (the step's FLOPs at an assumed sustained throughput), and the resulting speed-up
T1 / (T1 / 4 + T_allreduce). These are a model, not a measurement.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax

from benchmarks.registry import BenchContext, Workload
from benchmarks.timing import time_once
from benchmarks.workloads_core import classification_data, dense_train_gflop
from jaxdl.models import dense
from jaxdl.devices.data_parallel import Layout, data_parallel, step_allreduce_bytes
from jaxdl.train import epoch as ep
from jaxdl.train.optim import sgd
from jaxdl.train.step import init_state, make_train_step
from jaxdl.losses.classification import classification_loss

REPO = Path(__file__).resolve().parents[1]  # the checkout, where the child runs `python -m benchmarks...`
HIDDEN, INPUTS, CLASSES, BATCH, LR = 256, 784, 10, 256, 0.1
DEVICE_COUNTS = (1, 2, 4)
# Assumptions for the 4-GPU estimate (stated in the record and the README).
LINKS_GB_S = {"pcie4_x16": 25.0, "nvlink3": 240.0}  # effective all-reduce bus bandwidth per GPU
ALLREDUCE_LATENCY_US = 15.0  # a small NCCL all-reduce inside one machine
GPU_SUSTAINED_TFLOPS = 10.0  # float32 matmul throughput one GPU sustains on these small layers


def _child(config: dict) -> dict:
    """Runs in the child process (4 fake devices): time every (form, n)."""
    steps = config["steps"]
    data = jax.device_get(classification_data(jax.random.key(0), steps * BATCH, INPUTS, CLASSES))
    params = dense.mlp_init(jax.random.key(1), INPUTS, [HIDDEN], CLASSES)
    loss_fn, optimizer = classification_loss(dense.mlp_apply), sgd(LR)
    record = {"steps_per_epoch": steps, "devices_available": len(jax.devices()),
              "gflop_per_step": dense_train_gflop(BATCH, [INPUTS, HIDDEN, CLASSES])}
    runs = [("single", 1)] + [(mode, n) for mode in config["modes"] for n in config["counts"]]
    epochs = {}
    for mode, n in runs:
        layout = Layout(tuple(jax.devices()[:n]), mode)
        dp = data_parallel(make_train_step(loss_fn, optimizer, **layout.step_reduction),
                           partial(ep.shuffled_indices, batch_size=BATCH), data, layout=layout, batch_size=BATCH,
                           load_batch=ep.take_rows)
        epochs["single" if mode == "single" else f"{mode}_{n}"] = _threaded_epoch(dp, init_state(params, optimizer))
    # Round-robin: every round times each form once, so a change in the machine's load
    # (shared, noisy) hits all of them alike; medians over the rounds.
    samples = {name: [] for name in epochs}
    for epoch in epochs.values():
        time_once(epoch)  # compile and warm up
    for _ in range(config["repeats"]):
        for name, epoch in epochs.items():
            samples[name].append(time_once(epoch) / steps)
    for name, ms in samples.items():
        ms.sort()
        record[f"step_ms_{name}"] = statistics.median(ms)
        record[f"step_p10_ms_{name}"] = ms[int(0.1 * (len(ms) - 1))]
        record[f"step_p90_ms_{name}"] = ms[int(0.9 * (len(ms) - 1))]
    four = Layout(tuple(jax.devices()[:4]), "shard_map")
    record["allreduce_bytes"] = step_allreduce_bytes(make_train_step(loss_fn, optimizer, **four.step_reduction),
                                                     init_state(params, optimizer),
                                                     {k: v[:BATCH] for k, v in data.items()}, four.devices)
    record["param_bytes"] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    return record


def _threaded_epoch(dp, host_state):
    """A no-argument epoch call that carries the (donated) state from call to call."""
    box, key = [dp.place(host_state)], jax.random.key(2)

    def epoch():
        box[0], metrics = dp.epoch_fn(box[0], key)
        return box[0], metrics

    return epoch


def expected_4gpu(allreduce_bytes: int, gflop_per_step: float, *, n: int = 4) -> dict:
    """The stated model: compute T1 = FLOPs / sustained throughput on one GPU; on n GPUs
    T1 / n + latency + 2 (n-1)/n bytes / bandwidth."""
    t1_us = gflop_per_step * 1e9 / (GPU_SUSTAINED_TFLOPS * 1e12) * 1e6
    out = {"assumed_gpu_sustained_tflops": GPU_SUSTAINED_TFLOPS, "assumed_allreduce_latency_us": ALLREDUCE_LATENCY_US,
           "assumed_link_gb_s": dict(LINKS_GB_S), "gpu_step_us_1": t1_us,
           "ring_bytes_per_device": 2 * (n - 1) / n * allreduce_bytes}
    for link, gb_s in LINKS_GB_S.items():
        comm_us = ALLREDUCE_LATENCY_US + out["ring_bytes_per_device"] / (gb_s * 1e9) * 1e6
        out[f"allreduce_us_{link}"] = comm_us
        out[f"speedup_{n}gpu_{link}"] = t1_us / (t1_us / n + comm_us)
        # the global batch from which the all-reduce is at most 10% of the step (compute grows
        # with the batch, the all-reduce does not)
        out[f"batch_for_90pct_efficiency_{link}"] = math.ceil(9 * comm_us * n * BATCH / t1_us)
    return out


def run_data_parallel(ctx: BenchContext) -> dict:
    config = {"steps": 4 if ctx.quick else 24, "repeats": 2 if ctx.quick else 15,  # quick: a smoke run
              "modes": ["shard_map"] if ctx.quick else ["pmap", "shard_map"],
              "counts": [4] if ctx.quick else list(DEVICE_COUNTS)}
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_force_host_platform_device_count=4").strip()}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.workloads_parallel", json.dumps(config)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"the 4-device child failed: {proc.stderr.strip()[-2000:]}")
    record = {"name": "data_parallel_mlp", "batch": BATCH, "hidden": HIDDEN, **json.loads(proc.stdout.splitlines()[-1])}
    record["jit_ms"] = record["step_ms_single"]  # the table's column: one device, one step
    for mode in config["modes"]:
        for n in config["counts"]:
            record[f"overhead_{mode}_{n}"] = record[f"step_ms_{mode}_{n}"] / record["step_ms_single"]
    record["expected_4gpu"] = expected_4gpu(record["allreduce_bytes"], record["gflop_per_step"])
    ctx.notes.append("data_parallel_mlp: fake CPU devices share this machine's cores; per-step times measure "
                     "the data-parallel program's overhead, not a speed-up (see expected_4gpu in bench.json)")
    return record


def workloads() -> list[Workload]:
    return [Workload("data_parallel_mlp", run_data_parallel, group="parallel")]


if __name__ == "__main__":  # the child: python -m benchmarks.workloads_parallel CONFIG_JSON
    print(json.dumps(_child(json.loads(sys.argv[1]))))
