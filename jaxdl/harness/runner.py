"""`run(cfg, experiment, build)`: the one harness every experiment goes through.

    run folder  ->  build the Task  ->  place it on the devices  ->  restore  ->  fit  ->  report

It opens the run folder (process 0 writes it; several processes agree on it), lets the
experiment build its Task (or its Parts, trained as sub-runs in sub-folders and combined),
places the step or round on the devices (jaxdl.devices), restores the newest checkpoint,
runs the loop with its hooks, and writes summary.json and curves.png.
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax

from jaxdl import devices
from jaxdl.config import to_dict
from jaxdl.devices import processes
from jaxdl.errors import JaxdlError
from jaxdl.harness import hooks
from jaxdl.harness.loop import fit
from jaxdl.harness.task import Batches, Outcome, Part, Result, Rounds, Task
from jaxdl.runs import signals
from jaxdl.runs.run import Run, resume_command
from jaxdl.train.step import make_train_step


def open_run(experiment: str, cfg, layout: devices.Layout, *, out: str = "", resume: str = "") -> Run:
    """Create (or reopen, with `resume`) and lock a run folder: process 0 does it, and the
    other processes of a job learn its path, or the error that stopped it."""
    opened: dict[str, Run] = {}

    def open_here() -> str:
        opened["run"] = Run.open(experiment, to_dict(cfg), out=out, resume=resume, devices=layout.names)
        return str(opened["run"].dir)

    run_dir = processes.on_writer(open_here)
    return opened.get("run") or Run(Path(run_dir), experiment, is_writer=False)


def place(task: Task, layout: devices.Layout) -> devices.Placed:
    """The task's epoch on the devices: a data-parallel step over batches, or a round over clients.
    A state given as a function is made here, once its size is known to fit."""
    if callable(task.state):
        task.state = devices.make_checked(task.state)
    if isinstance(task.epoch, Rounds):
        return devices.client_parallel(task.epoch.build, task.state, task.epoch.data, layout=layout)
    if task.train_step is not None:  # a step of the experiment's own: not data-parallel
        if len(layout.devices) > 1:
            print(f"notice: this experiment's step is not data-parallel; it trains on {layout.devices[0]}",
                  file=sys.stderr)
        layout, step = layout.first_only(), task.train_step
    else:
        step = make_train_step(task.loss_fn, task.optimizer, **layout.step_reduction)
    epoch: Batches = task.epoch
    n = jax.tree.leaves(epoch.data)[0].shape[0]
    if epoch.batch_size is not None and epoch.batch_size > n:
        raise JaxdlError(f"--batch-size {epoch.batch_size}: larger than the {n} training examples")
    return devices.data_parallel(step, epoch.make_batches, epoch.data, layout=layout, batch_size=epoch.batch_size,
                                 load_batch=epoch.load_batch, example_state=task.state)


def _watchers(run: Run, cfg, task: Task, label: str) -> list:
    """What a person watches: TensorBoard scalars (unless --no-tensorboard), and a progress
    bar on a terminal or plain lines in a log file or pipe (unless --no-progress)."""
    if not run.is_writer:
        return []
    metric = task.monitor[0] if task.monitor else None
    out = []
    if getattr(cfg, "tensorboard", True):
        out.append(hooks.TensorBoard(run.dir / "tensorboard", logged_upto=max(run.logged_epochs(), default=0)))
    if cfg.progress:
        out.append(hooks.ProgressBar(label, monitor=metric) if sys.stdout.isatty() else
                   hooks.LogLines(label, monitor=metric))
    return out


def train(run: Run, cfg, task: Task, placed: devices.Placed, *, hint: str, label: str) -> Result:
    """Train `task` (placed on its devices) in `run` from its newest checkpoint to
    cfg.max_epochs, or until early stopping."""
    if cfg.max_epochs < 1 or cfg.ckpt_every < 1 or task.eval_every < 1:
        raise JaxdlError(f"max_epochs, ckpt_every and eval_every must be >= 1 "
                         f"(got {cfg.max_epochs}, {cfg.ckpt_every}, {task.eval_every})")
    epoch_fn = placed.epoch_fn
    if task.summarize is not None:
        def epoch_fn(state, key):
            state, step_metrics = placed.epoch_fn(state, key)
            return state, task.summarize(jax.device_get(step_metrics))
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    several = processes.count() > 1
    with signals.deferred() as received:
        ckpt = hooks.Checkpointer(run, every=cfg.ckpt_every, key=key, to_host=placed.to_host, params_of=task.params_of,
                                  resume_command=hint, manager_options=processes.checkpoint_options(),
                                  share=processes.share_restored if several else None)
        loop = ckpt.restore(task.state, cfg.max_epochs)
        run.commit()  # the checkpoint fits this config: now record the invocation
        if loop.epoch and run.is_writer:
            run.check_metrics(loop.epoch)
        elif run.is_writer and run.logged_epochs():
            print(f"notice: {run.dir} has no checkpoint to resume from: training starts again at epoch 1 (the "
                  f"epochs already in metrics.jsonl are recomputed and checked against it)", file=sys.stderr)
        loop.records = [r for r in run.metrics() if isinstance(r.get("epoch"), int) and r["epoch"] <= loop.epoch]
        loop.state = placed.place(loop.state)
        chain = [hooks.NanGuard(run, ckpt)]
        if task.evaluate is not None:
            evaluation = hooks.Evaluate(task.evaluate, every=task.eval_every, to_host=placed.to_host,
                                        params_of=task.params_of)
            chain.append(evaluation)
            if task.monitor is not None:
                chain.append(hooks.EarlyStopping(evaluation, *task.monitor, task.patience, task.min_delta))
        chain += [hooks.MetricsLog(run), *_watchers(run, cfg, task, label), ckpt,
                  hooks.SignalStop(run, received, ckpt, agree=processes.first_signal if several else None)]
        t0 = time.perf_counter()
        loop = fit(loop, epoch_fn, key, chain)
        train_seconds = time.perf_counter() - t0
    signals.set_context(f"after training (checkpoint of epoch {loop.epoch} saved) but before the run was "
                        f"finished; finish it with: {hint}")
    state = jax.device_get(placed.to_host(loop.state))
    params = jax.device_get(task.params_of(state))
    return Result(state, params, loop.best.params if loop.best.params is not None else params, loop.best.epoch,
                  loop.best.value, loop.best.stopped_early, loop.epoch, loop.records, loop.seconds, train_seconds,
                  placed.replica_digests)


def finish(run: Run, task: Task, result: Result, summary: dict) -> dict:
    """Write summary.json (finished) and curves.png; returns the summary."""
    summary = {"finished": True, "epochs": result.epochs_done, **summary}
    extra = {"train_seconds": result.train_seconds,
             "median_epoch_seconds": statistics.median(result.epoch_seconds) if result.epoch_seconds else None,
             "replica_digests": result.replica_digests}
    summary.update({k: v for k, v in extra.items() if k not in summary and v is not None})
    if run.is_writer and task.plot is not None:
        task.plot(run.metrics(), run.dir / "curves.png", title=task.title or run.experiment)
    run.write_summary(summary)
    return summary


def _train_part(run: Run, cfg, task: Task, placed, *, hint: str, label: str) -> Outcome:
    result = train(run, cfg, task, placed, hint=hint, label=label)
    return Outcome(result, task.report(run, result))


def run(cfg, experiment: str, build: Callable[[], Task | dict[str, Part]], *,
        combine: Callable[[Run, dict[str, Outcome]], dict] | None = None,
        save_inputs: Callable[[Run], None] | None = None) -> Run:
    """Train what `build()` returns and finish the run; returns the (closed) Run.

    `build()` returns a Task, trained in the run's folder, or `{name: Part}`: each part is
    trained in `run.dir/name` (a run of its own, resumed with the top one; part '' trains in
    the top folder itself), one after another, and `combine(run, outcomes)` gives the top
    summary. A Task is built and placed before the run folder is created, so bad input or
    settings leave nothing behind. `save_inputs(run)` writes what a resumed run must read
    back (a data split, say) into the new folder before training.
    """
    layout = devices.layout(cfg.devices, cfg.parallel)
    plan = build()
    placed = place(plan, layout) if isinstance(plan, Task) else None
    with open_run(experiment, cfg, layout, out=cfg.out, resume=cfg.resume) as top:
        hint = resume_command(experiment, top.dir, prefix=processes.command_prefix())
        if save_inputs is not None and top.is_writer:
            save_inputs(top)
        if isinstance(plan, Task):
            outcome = _train_part(top, cfg, plan, placed, hint=hint, label=plan.label or experiment)
            finish(top, plan, outcome.result, outcome.summary)
            return top
        outcomes, tasks = {}, {}
        for name, part in plan.items():
            tasks[name] = task = part.build()
            label = task.label or f"{experiment} {name}".strip()
            if name == "":
                outcomes[name] = _train_part(top, part.cfg, task, place(task, layout), hint=hint, label=label)
                continue
            folder = top.dir / name
            again = (folder / "config.json").is_file()
            sub_cfg = dataclasses.replace(part.cfg, out=str(folder), resume="")
            with open_run(experiment, sub_cfg, layout, out="" if again else str(folder),
                          resume=str(folder) if again else "") as sub:
                outcome = _train_part(sub, part.cfg, task, place(task, layout), hint=hint, label=label)
                outcomes[name] = Outcome(outcome.result, finish(sub, task, outcome.result, outcome.summary))
        summary = combine(top, outcomes) if combine is not None else {}
        if "" in outcomes:
            finish(top, tasks[""], outcomes[""].result, summary)
        else:
            top.write_summary({"finished": True, **summary})
    return top
