"""The epoch loop. It knows nothing of models, devices or files: it calls
`epoch_fn(state, epoch_key) -> (state, step_metrics)` once per epoch and hands each epoch to
its hooks (hooks.py: NaN guard, evaluation, early stopping, metrics log, progress,
checkpoints, signals), in order. Epoch e (0-based) uses `fold_in(key, e)`, so the data
order and every draw depend only on (seed, epoch): a resumed run is bit for bit the
uninterrupted one.

A hook is any object with some of `start(loop)`, `after_epoch(loop)`, `end(loop)` and
`close(loop)` (always called, also when a hook raised); add your own (a metrics writer, say)
to the list the harness passes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np


@dataclass
class Best:
    """Early-stopping bookkeeping (checkpointed with the state)."""

    value: float | None = None
    epoch: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    params: Any = None  # host params at the best evaluation


@dataclass
class Loop:
    """What the loop and its hooks share."""

    state: Any  # the train state, on the devices
    epoch: int  # epochs done (the one just finished inside after_epoch), 1-based in records
    max_epochs: int
    start_epoch: int = 0  # where this invocation started (a resumed run: its checkpoint)
    best: Best = field(default_factory=Best)
    records: list[dict] = field(default_factory=list)  # every epoch's row, also those before a resume
    record: dict = field(default_factory=dict)  # this epoch's row; hooks add to it
    bad_step: int | None = None  # the first step whose loss or gradients were not finite
    num_steps: int = 0
    seconds: list[float] = field(default_factory=list)  # training seconds of each epoch run here
    stop: bool = False  # a hook asks the loop to stop after this epoch


def epoch_record(epoch: int, step_metrics: dict) -> tuple[dict, int | None, int]:
    """Means of the step metrics as `train_<name>`, the first step whose loss/grads were not
    finite (or None), and the number of steps."""
    host = jax.device_get(step_metrics)
    finite = np.asarray(host.pop("finite", True)).reshape(-1)
    bad = None if finite.all() else int(np.argmin(finite))
    record: dict[str, Any] = {"epoch": epoch}
    for name, values in host.items():
        arr = np.asarray(values, np.float64)
        record[f"train_{name}"] = float(arr.mean()) if arr.size else float("nan")
    return record, bad, finite.size


def _call(hooks, method: str, loop: Loop) -> None:
    for hook in hooks:
        fn = getattr(hook, method, None)
        if fn is not None:
            fn(loop)


def fit(loop: Loop, epoch_fn, key, hooks: list) -> Loop:
    """Epochs loop.epoch + 1 .. loop.max_epochs (or until a hook sets `loop.stop`)."""
    try:
        _call(hooks, "start", loop)
        while loop.epoch < loop.max_epochs and not loop.stop:
            t0 = time.perf_counter()
            loop.state, step_metrics = epoch_fn(loop.state, jax.random.fold_in(key, loop.epoch))
            jax.block_until_ready(loop.state)
            loop.seconds.append(time.perf_counter() - t0)
            loop.epoch += 1
            loop.record, loop.bad_step, loop.num_steps = epoch_record(loop.epoch, step_metrics)
            _call(hooks, "after_epoch", loop)
        _call(hooks, "end", loop)
    finally:
        _call(hooks, "close", loop)
    return loop
