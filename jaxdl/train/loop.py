"""The one training loop, shared by every experiment.

`fit` knows nothing about models: it calls `epoch_fn(state, epoch_key) -> (state, metrics)`
(a jitted `lax.scan` epoch, a vmapped federated round, a pmapped epoch, ...) once per
epoch, and around it does what every run needs:

  * keys: epoch e (0-based) uses `fold_in(key, e)`, so the data order and every draw depend
    only on (seed, epoch): an interrupted and resumed run is bit-for-bit the uninterrupted one;
  * metrics: per-epoch means of the step metrics, plus `evaluate(state)` every
    `eval_every` epochs, appended to metrics.jsonl (epochs numbered from 1);
  * checkpoints (jaxdl/runs/checkpoint.py) every `ckpt_every` epochs, at the end, and on
    SIGINT/SIGTERM/SIGHUP: the current epoch finishes first, then `Interrupted` is raised
    with the command that resumes (jaxdl/runs/signals.py says what a signal means when);
  * a NaN/inf loss or gradient stops the run (`NumericalFault`) naming the epoch and step;
    nothing non-finite is ever checkpointed, so the last checkpoint is the last good state;
  * early stopping on a monitored evaluation metric with `patience` (keeps the best params);
  * a progress bar.

A checkpoint holds the full state (params, optimizer state, step), the best params, the key
and the early-stopping bookkeeping; resuming restores them and continues at the next epoch.
"""
from __future__ import annotations

import math
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxdl.errors import Interrupted, JaxdlError, NumericalFault
from jaxdl.runs import checkpoint, signals
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


def _epoch_record(epoch: int, step_metrics: dict) -> tuple[dict, int | None, int]:
    """Means of the step metrics, the first step whose loss/grads were not finite (or
    None), and the number of steps."""
    host = jax.device_get(step_metrics)
    finite = np.asarray(host.pop("finite", True)).reshape(-1)
    bad = None if finite.all() else int(np.argmin(finite))
    record: dict[str, Any] = {"epoch": epoch}
    for name, values in host.items():
        arr = np.asarray(values, np.float64)
        record[f"train_{name}"] = float(arr.mean()) if arr.size else float("nan")
    return record, bad, finite.size


def _all_finite(tree) -> bool:
    return all(np.isfinite(a).all() for a in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(a).dtype, np.inexact))


def _progress(enabled: bool, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def _agree(received: list[int]) -> list[int]:
    """Several processes stop together: a signal that any of them received counts for all
    (one tiny collective per epoch; see jaxdl/distributed.py)."""
    if jax.process_count() > 1:
        from jaxdl.distributed import first_signal

        signum = first_signal(received)
        if signum and not received:
            received.append(signum)
    return received


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
    """Train for epochs start..max_epochs, resuming from the run's newest checkpoint.

    Args:
      run: the open run folder (metrics, checkpoints); only its writer process writes.
      state: the initial train state (used as is when there is no checkpoint, and as the
        template the checkpoint is restored into).
      epoch_fn: `(state, epoch_key) -> (state, step_metrics)`; step metrics are arrays with
        a leading step axis and may include a boolean 'finite'.
      key: the run's key; epoch e gets `fold_in(key, e)`.
      to_host / from_host: move a state off / onto the devices (for checkpoints).
      resume_hint: the command that resumes, for the interruption message.
    Returns:
      FitResult (state on the devices, all records, seconds per epoch of this process).
    Raises:
      Interrupted after checkpointing, on SIGINT/SIGTERM/SIGHUP; NumericalFault on NaN/inf;
      JaxdlError when a checkpoint is damaged or belongs to another config.
    """
    if max_epochs < 1 or ckpt_every < 1 or eval_every < 1:
        raise JaxdlError(f"max_epochs, ckpt_every and eval_every must be >= 1 "
                         f"(got {max_epochs}, {ckpt_every}, {eval_every})")
    hint = resume_hint or f"--resume {run.dir}"
    mngr = checkpoint.manager(run.dir / CKPT_DIR) if run.is_writer else None
    key_data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    start, best_value, best_epoch, bad_evals, best_params, stopped_early = 0, None, None, 0, None, False
    sign = 1.0 if monitor is None or monitor[1] == "max" else -1.0
    seconds: list[float] = []
    saved: set[int] = set()

    with signals.deferred() as received:
        restored = None
        if mngr is not None or jax.process_count() > 1:
            host_state = to_host(state)
            template = {"state": host_state, "best_params": params_of(host_state), "key": key_data}
            if mngr is not None:
                restored = checkpoint.restore(mngr, template)
                saved = set(mngr.all_steps())
            if jax.process_count() > 1:  # only process 0 reads the folder; it sends the others the state
                from jaxdl.distributed import share_restored

                restored = share_restored(restored, template)
            if restored is not None:
                tree, meta, start = restored
                if not np.array_equal(np.asarray(tree["key"]), np.asarray(key_data)):
                    raise JaxdlError(f"{run.dir}: its checkpoint was made with another seed; resume with the "
                                     f"run's own --seed")
                if start > max_epochs:
                    raise JaxdlError(f"{run.dir}: the run has reached epoch {start}; give --max-epochs {start} "
                                     f"or more (it is {max_epochs})")
                state = from_host(tree["state"])
                best_value, best_epoch = meta.get("best_value"), meta.get("best_epoch")
                bad_evals, stopped_early = meta.get("bad_evals", 0), bool(meta.get("stopped_early", False))
                best_params = tree["best_params"] if best_epoch is not None else None
                print(f"resumed {run.dir} at epoch {start}" + (" (it had stopped early)" if stopped_early else ""),
                      flush=True)
        run.commit()  # the checkpoint fits this config: now record the invocation
        records = [r for r in run.metrics() if isinstance(r.get("epoch"), int) and r["epoch"] <= start]

        def save(epoch: int) -> None:
            if mngr is None or epoch in saved:
                return
            host = jax.device_get(to_host(state))
            if not _all_finite(params_of(host)):
                run.note = f"NaN/inf parameters after epoch {epoch}"
                raise NumericalFault(f"the parameters became NaN/inf in epoch {epoch} (its loss and gradients "
                                     f"were finite); {_kept()}; to find the operation: {hint} --debug-nans")
            best = best_params if best_params is not None else params_of(host)
            checkpoint.save(mngr, epoch, {"state": host, "best_params": best, "key": key_data},
                            {"epoch": epoch, "best_value": best_value, "best_epoch": best_epoch,
                             "bad_evals": bad_evals, "stopped_early": stopped_early})
            saved.add(epoch)

        def _kept() -> str:
            return f"last good checkpoint: epoch {max(saved)}" if saved else "no checkpoint was written yet"

        def interrupt(epoch: int) -> Interrupted:
            name = signal.Signals(received[0]).name
            if epoch > start or start > 0:
                save(epoch)
                what = f"{name} at epoch {epoch}: checkpoint of epoch {epoch} saved in {run.dir}; resume with: {hint}"
            else:
                what = f"{name} before the first epoch finished; nothing to checkpoint; start it again with: {hint}"
            run.note = f"{name} at epoch {epoch}"
            return Interrupted(what, received[0])

        epoch = start
        with _progress(progress, run.experiment) as bar:
            task = bar.add_task(run.experiment, total=max_epochs, completed=start, status="")
            while epoch < max_epochs and not stopped_early:
                if _agree(received):  # arrived while restoring or while the last checkpoint was written
                    raise interrupt(epoch)
                t0 = time.perf_counter()
                state, step_metrics = epoch_fn(state, jax.random.fold_in(key, epoch))
                jax.block_until_ready(state)
                epoch += 1
                record, bad_step, num_steps = _epoch_record(epoch, step_metrics)
                if bad_step is not None:
                    run.note = f"NaN/inf at epoch {epoch}, step {bad_step + 1}"
                    raise NumericalFault(f"loss or gradient became NaN/inf at epoch {epoch}, step {bad_step + 1} "
                                         f"of {num_steps}; {_kept()}; to find the operation, replay it op by op "
                                         f"from there: {hint} --debug-nans (or try a smaller --lr)")
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
                if epoch % ckpt_every == 0 or epoch == max_epochs or stopped_early:
                    save(epoch)
            if epoch > start:
                save(epoch)
            if _agree(received):  # arrived during the last epoch or its checkpoint
                raise interrupt(epoch)
    signals.set_context(f"after training (checkpoint of epoch {epoch} saved) but before the run was "
                        f"finished; finish it with: {hint}")
    return FitResult(state, records, seconds, epoch, best_params, best_epoch, best_value, stopped_early)


def median_seconds(seconds: list[float]) -> float | None:
    return statistics.median(seconds) if seconds else None
