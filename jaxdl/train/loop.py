"""The one training loop, shared by every experiment.

`fit` knows nothing about models: it calls `epoch_fn(state, epoch_key) -> (state, metrics)`
(a jitted `lax.scan` epoch, a vmapped federated round, a pmapped epoch, ...) once per
epoch, and around it does what every run needs:

  * keys: epoch e uses `fold_in(key, e)`, so the data order and every draw depend only
    on (seed, epoch): an interrupted and resumed run is bit-for-bit the uninterrupted one;
  * metrics: per-epoch means of the step metrics, plus `evaluate(state)` every
    `eval_every` epochs, appended to metrics.jsonl;
  * checkpoints every `ckpt_every` epochs, at the end, and on SIGINT/SIGTERM (the current
    epoch finishes first), then `Interrupted` is raised with the command that resumes;
  * a NaN/inf loss or gradient stops the run (`NumericalFault`) naming epoch and step;
  * early stopping on a monitored evaluation metric with `patience` (keeps the best params);
  * a progress bar.
"""
from __future__ import annotations

import math
import signal
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxdl.errors import Interrupted, JaxdlError, NumericalFault
from jaxdl.runs import checkpoint
from jaxdl.runs.run import CKPT_DIR, Run


@dataclass
class FitResult:
    state: Any
    records: list[dict]
    epoch_seconds: list[float]
    epochs_done: int
    best_params: Any = None  # host copy of the params at the best monitored evaluation
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


@contextmanager
def _signals_deferred():
    """Record SIGINT/SIGTERM instead of dying; a second SIGINT interrupts at once."""
    received: list[int] = []
    previous = {}

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)

    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _epoch_record(epoch: int, step_metrics: dict) -> tuple[dict, int | None]:
    """Means of the step metrics, and the first step whose loss/grads were not finite."""
    host = jax.device_get(step_metrics)
    finite = np.asarray(host.pop("finite", True)).reshape(-1)
    bad = None if finite.all() else int(np.argmin(finite))
    record: dict[str, Any] = {"epoch": epoch}
    for name, values in host.items():
        arr = np.asarray(values, np.float64)
        record[f"train_{name}"] = float(arr.mean()) if arr.size else float("nan")
    return record, bad


def _progress(enabled: bool, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def fit(
    *,
    run: Run,
    state,
    epoch_fn: Callable[[Any, jax.Array], tuple[Any, dict]],
    key: jax.Array,
    max_epochs: int,
    ckpt_every: int = 5,
    evaluate: Callable[[Any], dict] | None = None,
    eval_every: int = 1,
    monitor: tuple[str, str] | None = None,
    patience: int | None = None,
    params_of: Callable[[Any], Any] = lambda s: s.params,
    to_host: Callable[[Any], Any] = lambda s: s,
    from_host: Callable[[Any], Any] = lambda s: s,
    progress: bool = True,
    resume_hint: str = "",
) -> FitResult:
    """Train for epochs start..max_epochs (resuming from the run's newest checkpoint)."""
    mngr = checkpoint.manager(run.dir / CKPT_DIR) if run.is_writer else None
    key_data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    host_state = to_host(state)
    template = {"state": host_state, "best_params": params_of(host_state), "key": key_data}
    start, best_value, best_epoch, bad_evals, best_params = 0, None, None, 0, None
    restored = checkpoint.restore(mngr, template) if mngr is not None else None
    if restored is not None:
        tree, meta, start = restored
        if not np.array_equal(np.asarray(tree["key"]), np.asarray(key_data)):
            raise JaxdlError(f"{run.dir}: checkpoint was made with a different seed")
        state = from_host(tree["state"])
        best_value, best_epoch, bad_evals = meta.get("best_value"), meta.get("best_epoch"), meta.get("bad_evals", 0)
        best_params = tree["best_params"] if best_epoch is not None else None
        print(f"resumed {run.dir} at epoch {start}", flush=True)

    records = [r for r in run.metrics() if r.get("epoch", 0) <= start]
    seconds: list[float] = []
    sign = 1.0 if monitor is None or monitor[1] == "max" else -1.0
    stopped_early = False

    def save(epoch: int) -> None:
        if mngr is None:
            return
        host = to_host(state)
        best = best_params if best_params is not None else params_of(host)
        checkpoint.save(mngr, epoch, {"state": host, "best_params": best, "key": key_data},
                        {"epoch": epoch, "best_value": best_value, "best_epoch": best_epoch, "bad_evals": bad_evals})

    epoch = start
    with _signals_deferred() as received, _progress(progress, run.experiment) as bar:
        task = bar.add_task(run.experiment, total=max_epochs, completed=start, status="")
        while epoch < max_epochs and not stopped_early:
            t0 = time.perf_counter()
            state, step_metrics = epoch_fn(state, jax.random.fold_in(key, epoch))
            jax.block_until_ready(state)
            epoch += 1
            record, bad_step = _epoch_record(epoch, step_metrics)
            if bad_step is not None:
                last = sorted(mngr.all_steps())[-1] if mngr is not None and mngr.all_steps() else None
                kept = f"last good checkpoint: epoch {last}" if last is not None else "no checkpoint was written yet"
                raise NumericalFault(f"loss or gradient became NaN/inf at epoch {epoch}, step {bad_step + 1}; "
                                     f"{kept}; rerun with --debug-nans to find the operation")
            if evaluate is not None and (epoch % eval_every == 0 or epoch == max_epochs):
                record.update(evaluate(state))
                if monitor is not None:
                    value = record[monitor[0]]
                    if best_value is None or sign * value > sign * best_value:
                        best_value, best_epoch, bad_evals = float(value), epoch, 0
                        best_params = jax.device_get(params_of(to_host(state)))
                    else:
                        bad_evals += 1
                        stopped_early = patience is not None and bad_evals >= patience
            seconds.append(time.perf_counter() - t0)
            records.append(record)
            run.append_metrics(record, seconds=seconds[-1])
            loss = record.get("train_loss", math.nan)
            bar.update(task, completed=epoch, status=f"loss {loss:.4g}")
            if epoch % ckpt_every == 0 or epoch == max_epochs or stopped_early or received:
                save(epoch)
            if received:
                name = signal.Signals(received[0]).name
                hint = resume_hint or f"--resume {run.dir}"
                raise Interrupted(f"{name} at epoch {epoch}: checkpoint saved in {run.dir}; resume with: {hint}",
                                  received[0])
        if epoch > start and mngr is not None and epoch not in mngr.all_steps():
            save(epoch)

    return FitResult(state, records, seconds, epoch, best_params, best_epoch, best_value, stopped_early)


def median_seconds(seconds: list[float]) -> float | None:
    return statistics.median(seconds) if seconds else None
