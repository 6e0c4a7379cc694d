"""The loop's concerns, one small piece each (see loop.py for the hook protocol).

In the harness's order, after every epoch: `NanGuard` stops on a NaN/inf loss or gradient;
`Evaluate` adds the evaluation to the epoch's row; `EarlyStopping` keeps the best params and
stops after `patience` evaluations without improvement; `MetricsLog` appends the row to
metrics.jsonl and `TensorBoard` to an event file; `ProgressBar` draws on a terminal, `LogLines`
prints one plain line per epoch elsewhere; `Checkpointer` saves every N epochs, at the end and
when stopping; `SignalStop` turns SIGINT/SIGTERM/SIGHUP into a checkpoint and `Interrupted`.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from jaxdl.errors import Interrupted, JaxdlError, NumericalFault
from jaxdl.harness.loop import Best, Loop
from jaxdl.runs import checkpoint
from jaxdl.runs.run import CKPT_DIR, Run


def _all_finite(tree) -> bool:
    return all(np.isfinite(a).all() for a in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(a).dtype, np.inexact))


class Checkpointer:
    """Saves the host state, the best params, the run's key and the early-stopping
    bookkeeping every `every` epochs, at the last epoch, when stopping early and at the end;
    only the writing process writes. `restore` continues from the newest checkpoint.
    Nothing non-finite is ever saved, so the last checkpoint is the last good state."""

    def __init__(self, run: Run, *, every: int, key, to_host: Callable, params_of: Callable, resume_command: str,
                 manager_options: dict | None = None, share: Callable | None = None):
        self.run, self.every, self.to_host, self.params_of = run, every, to_host, params_of
        self.resume_command, self.share = resume_command, share
        self.key_data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        self._folder, self._options, self._mngr = run.dir / CKPT_DIR, manager_options or {}, None
        if run.is_writer and self._folder.exists() and (not self._folder.is_dir() or any(self._folder.iterdir())):
            self._mngr = self.mngr  # something to restore (or refuse) now; a fresh run opens it at its first save
        self.saved: set[int] = set(self._mngr.all_steps()) if self._mngr is not None else set()

    @property
    def mngr(self):
        """The checkpoint manager (the writing process only), opened on first use."""
        if self._mngr is None and self.run.is_writer:
            self._mngr = checkpoint.manager(self._folder, **self._options)
        return self._mngr

    def restore(self, host_state, max_epochs: int) -> Loop:
        """A Loop at the newest checkpoint (state still on the host), or at epoch 0."""
        template = {"state": host_state, "best_params": self.params_of(host_state), "key": self.key_data}
        restored = checkpoint.restore(self._mngr, template) if self._mngr is not None else None
        if self.share is not None:  # several processes: process 0 read it, the others receive it
            restored = self.share(restored, template)
        if restored is None:
            return Loop(state=host_state, epoch=0, max_epochs=max_epochs)
        tree, meta, start = restored
        if not np.array_equal(np.asarray(tree["key"]), np.asarray(self.key_data)):
            raise JaxdlError(f"{self.run.dir}: its checkpoint was made with another seed; resume with the "
                             f"run's own --seed")
        if start > max_epochs:
            raise JaxdlError(f"{self.run.dir}: the run has reached epoch {start}; give --max-epochs {start} "
                             f"or more (it is {max_epochs})")
        best = Best(meta.get("best_value"), meta.get("best_epoch"), meta.get("bad_evals", 0),
                    bool(meta.get("stopped_early", False)))
        best.params = tree["best_params"] if best.epoch is not None else None
        print(f"resumed {self.run.dir} at epoch {start}" + (" (it had stopped early)" if best.stopped_early else ""),
              flush=True)
        return Loop(state=tree["state"], epoch=start, max_epochs=max_epochs, start_epoch=start, best=best,
                    stop=best.stopped_early)

    def kept(self) -> str:
        return f"last good checkpoint: epoch {max(self.saved)}" if self.saved else "no checkpoint was written yet"

    def save(self, loop: Loop) -> None:
        if self.mngr is None or loop.epoch in self.saved:
            return
        host = jax.device_get(self.to_host(loop.state))
        params = self.params_of(host)
        if not _all_finite(params):
            self.run.note = f"NaN/inf parameters after epoch {loop.epoch}"
            raise NumericalFault(f"the parameters became NaN/inf in epoch {loop.epoch} (its loss and gradients "
                                 f"were finite); {self.kept()}; to find the operation: {self.resume_command} "
                                 f"--debug-nans")
        b = loop.best
        checkpoint.save(self.mngr, loop.epoch,
                        {"state": host, "best_params": b.params if b.params is not None else params,
                         "key": self.key_data},
                        {"epoch": loop.epoch, "best_value": b.value, "best_epoch": b.epoch, "bad_evals": b.bad_evals,
                         "stopped_early": b.stopped_early})
        self.saved.add(loop.epoch)

    def after_epoch(self, loop: Loop) -> None:
        if loop.epoch % self.every == 0 or loop.epoch == loop.max_epochs or loop.stop:
            self.save(loop)

    def end(self, loop: Loop) -> None:
        if loop.epoch > loop.start_epoch:
            self.save(loop)


class NanGuard:
    """A NaN/inf loss or gradient stops the run (NumericalFault, exit 3) naming the epoch, the
    step, the last good checkpoint and the command that replays it op by op."""

    def __init__(self, run: Run, checkpointer: Checkpointer):
        self.run, self.checkpointer = run, checkpointer

    def after_epoch(self, loop: Loop) -> None:
        if loop.bad_step is None:
            return
        self.run.note = f"NaN/inf at epoch {loop.epoch}, step {loop.bad_step + 1}"
        raise NumericalFault(f"loss or gradient became NaN/inf at epoch {loop.epoch}, step {loop.bad_step + 1} of "
                             f"{loop.num_steps}; {self.checkpointer.kept()}; to find the operation, replay it op by op "
                             f"from there: {self.checkpointer.resume_command} --debug-nans (or try a smaller --lr)")


class Evaluate:
    """`evaluate(params)` every `every` epochs and at the last, into the epoch's row; the
    evaluated host params are left in `self.params` for EarlyStopping."""

    def __init__(self, evaluate: Callable, *, every: int, to_host: Callable, params_of: Callable):
        self.evaluate, self.every, self.to_host, self.params_of = evaluate, every, to_host, params_of
        self.params = None

    def after_epoch(self, loop: Loop) -> None:
        self.params = None
        if loop.epoch % self.every == 0 or loop.epoch == loop.max_epochs:
            self.params = jax.device_get(self.params_of(self.to_host(loop.state)))
            loop.record.update(self.evaluate(self.params))


class EarlyStopping:
    """Watches `metric` ('max' or 'min') after each evaluation: keeps the best params, and
    stops after `patience` evaluations without improvement (None: never stops). An
    evaluation improves only when it beats the best by more than `min_delta`; a tie or a
    smaller gain counts as a bad evaluation and leaves the best as it was."""

    def __init__(self, evaluation: Evaluate, metric: str, mode: str, patience: int | None, min_delta: float = 0.0):
        if mode not in ("max", "min") or min_delta < 0:
            raise ValueError(f"mode must be 'max' or 'min' and min_delta >= 0, got {mode!r}, {min_delta}")
        self.evaluation, self.metric, self.patience, self.min_delta = evaluation, metric, patience, min_delta
        self.sign = 1.0 if mode == "max" else -1.0

    def after_epoch(self, loop: Loop) -> None:
        if self.evaluation.params is None:
            return
        value, best = loop.record[self.metric], loop.best
        if best.value is None or self.sign * (value - best.value) > self.min_delta:
            best.value, best.epoch, best.bad_evals, best.params = float(value), loop.epoch, 0, self.evaluation.params
        else:
            best.bad_evals += 1
            best.stopped_early = self.patience is not None and best.bad_evals >= self.patience
            loop.stop = best.stopped_early


class MetricsLog:
    """Appends each epoch's row to metrics.jsonl (and its seconds to timing.jsonl)."""

    def __init__(self, run: Run):
        self.run = run

    def after_epoch(self, loop: Loop) -> None:
        loop.records.append(loop.record)
        self.run.append_metrics(loop.record, seconds=loop.seconds[-1])


def _status(record: dict, metric: str | None, last: dict) -> str:
    """'loss 0.1234  valid_mrr 0.5678': the training loss and the monitored metric's latest value."""
    if metric is not None and metric in record:
        last[metric] = record[metric]
    text = f"loss {record.get('train_loss', math.nan):.4g}"
    return text + (f"  {metric} {last[metric]:.4f}" if metric in last else "")


class ProgressBar:
    """A rich progress bar on a terminal: epochs done of max, the training loss and the
    monitored metric."""

    def __init__(self, label: str, *, monitor: str | None = None, enabled: bool = True):
        self.label, self.monitor, self.enabled = label, monitor, enabled
        self.bar = self.task = None
        self.last: dict = {}

    def start(self, loop: Loop) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            disable=not self.enabled, transient=False)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=loop.max_epochs, completed=loop.epoch, status="")

    def after_epoch(self, loop: Loop) -> None:
        self.bar.update(self.task, completed=loop.epoch, status=_status(loop.record, self.monitor, self.last))

    def close(self, loop: Loop) -> None:
        if self.bar is not None:
            self.bar.stop()


class LogLines:
    """One plain line per epoch, for a log file or a pipe (SLURM, nohup, `| tee`), where a
    progress bar would show nothing until the end:

        fede isolation  epoch 5/300  loss 0.1234  valid_mrr 0.5678  12.3 s
    """

    def __init__(self, label: str, *, monitor: str | None = None, stream=None):
        self.label, self.monitor, self.stream = label, monitor, stream or sys.stdout
        self.last: dict = {}
        self.t0 = time.perf_counter()

    def start(self, loop: Loop) -> None:
        self.t0 = time.perf_counter()

    def after_epoch(self, loop: Loop) -> None:
        print(f"{self.label}  epoch {loop.epoch}/{loop.max_epochs}  {_status(loop.record, self.monitor, self.last)}  "
              f"{time.perf_counter() - self.t0:.1f} s", file=self.stream, flush=True)


class TensorBoard:
    """Every new epoch's row as TensorBoard scalars in `log_dir` (tensorboardX's event writer;
    `tensorboard --logdir runs/` shows them): `train_loss` as train/loss, `valid_mrr` as
    valid/mrr (FedE's per-client ones too), step = epoch. A resumed run writes only the
    epochs metrics.jsonl did not have."""

    def __init__(self, log_dir, *, logged_upto: int = 0):
        self.log_dir, self.logged_upto = log_dir, logged_upto
        self.writer = None

    def after_epoch(self, loop: Loop) -> None:
        if loop.epoch <= self.logged_upto:
            return
        if self.writer is None:
            from tensorboardX import SummaryWriter  # imported only by runs that write scalars

            self.writer = SummaryWriter(str(self.log_dir))
        for name, value in loop.record.items():
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name.replace("_", "/", 1), value, loop.epoch)
        self.writer.flush()

    def close(self, loop: Loop) -> None:
        if self.writer is not None:
            self.writer.close()


class SignalStop:
    """A SIGINT/SIGTERM/SIGHUP received during an epoch (`received`, from
    `jaxdl.runs.signals.deferred`) ends the run after that epoch: checkpoint, then
    `Interrupted` naming the command that resumes. `agree` makes several processes stop
    after the same epoch (a signal any of them received counts for all)."""

    def __init__(self, run: Run, received: list[int], checkpointer: Checkpointer, *,
                 agree: Callable[[list[int]], int] | None = None):
        self.run, self.received, self.checkpointer, self.agree = run, received, checkpointer, agree

    def _arrived(self) -> bool:
        if self.agree is not None:
            signum = self.agree(self.received)
            if signum and not self.received:
                self.received.append(signum)
        return bool(self.received)

    def _interrupt(self, loop: Loop) -> Interrupted:
        name, hint = signal.Signals(self.received[0]).name, self.checkpointer.resume_command
        if loop.epoch > loop.start_epoch or loop.start_epoch > 0:
            self.checkpointer.save(loop)
            what = f"{name} at epoch {loop.epoch}: checkpoint of epoch {loop.epoch} saved in {self.run.dir}; " \
                   f"resume with: {hint}"
        else:
            what = f"{name} before the first epoch finished; nothing to checkpoint; start it again with: {hint}"
        self.run.note = f"{name} at epoch {loop.epoch}"
        return Interrupted(what, self.received[0])

    def start(self, loop: Loop) -> None:  # arrived while restoring
        if self._arrived():
            raise self._interrupt(loop)

    after_epoch = end = start
