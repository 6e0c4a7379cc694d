"""What an experiment hands the harness: a `Task` says what to train, the harness does the rest.

An experiment builds params, a loss (or a round), batches, an optimizer, an evaluation and
its report; it never opens runs, wires checkpoints, signals, progress, devices or processes.

    Task(state=init_state(params, optimizer), loss_fn=loss_fn, optimizer=optimizer,
         epoch=Batches(data, make_batches), evaluate=evaluate, monitor=("valid_mrr", "max"),
         report=report)

`Batches` is minibatch training, data-parallel over the run's devices; `Rounds` is
federated training, every client of a round in one program with the client axis split over
the devices. `Part`s are sub-runs: an experiment that trains several models (FedE's three
settings, interpret's two data sets) returns `{name: Part}` and one `combine`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from jaxdl.runs.plots import plot_curves


@dataclass
class Batches:
    """An epoch of minibatches: `make_batches(data, key)` draws the epoch's batches (leaves
    (S, B, ...)), or per-step specs that `load_batch(data, spec)` turns into a batch inside
    the step. `data` is a pytree of host arrays; `batch_size` is the configured global batch."""

    data: Any
    make_batches: Callable
    load_batch: Callable | None = None
    batch_size: int | None = None


@dataclass
class Rounds:
    """Federated rounds over stacked clients (`jaxdl.train.federated`). `build(client_map)`
    returns the round `round_fn(state, data, key) -> (state, metrics)`: `client_map` is None
    on one device; on several, the device room's transform that runs a function of
    per-client arrays with the client axis split among the devices
    (`jaxdl.devices.clients`). `data` is the host ClientArrays."""

    build: Callable
    data: Any


@dataclass
class Result:
    """What training gave, for the experiment's report. Host copies (numpy)."""

    state: Any
    params: Any  # params_of(state): the model as it stands after the last epoch
    best_params: Any  # at the best monitored evaluation (params when nothing was monitored)
    best_epoch: int | None
    best_value: float | None
    stopped_early: bool
    epochs_done: int
    records: list[dict]  # every epoch's metrics row (metrics.jsonl)
    epoch_seconds: list[float]  # training seconds of each epoch this process ran
    train_seconds: float
    replica_digests: list[str] | None = None  # several processes: each one's parameter digest


@dataclass
class Task:
    """What to train.

    state: the initial train state (host; `init_state(params, optimizer)`, or FedE's), or a
        function of no arguments that makes it: the harness then checks, from its shapes
        alone, that it fits in memory before making it.
    epoch: `Batches` or `Rounds`.
    loss_fn, optimizer: the step `make_train_step(loss_fn, optimizer)` (Batches); or
    train_step: a step the experiment built itself (it runs on one device).
    summarize: optional `step_metrics -> epoch_metrics` on host (numpy) arrays (leaves of shape (1,)),
        for metrics that are not means over the steps.
    evaluate: `evaluate(params) -> {name: float}` every `eval_every` epochs and at the last.
    monitor: `(metric, 'max'|'min')` for early stopping with `patience` evaluations (an
        evaluation improves when it beats the best by more than `min_delta`); the best
        params are kept.
    params_of: host state -> the params to evaluate and keep.
    report: `report(run, result) -> summary` writes the experiment's outputs (files in
        `run.dir` when `run.is_writer`) and returns the summary's own fields.
    plot: `plot(records, path, title=...)` for curves.png (None: no plot); title: its title.
    label: what the progress bar says (default: the experiment).
    """

    state: Any
    epoch: Batches | Rounds
    loss_fn: Callable | None = None
    optimizer: Any = None
    train_step: Callable | None = None
    summarize: Callable | None = None
    evaluate: Callable[[Any], dict] | None = None
    eval_every: int = 1
    monitor: tuple[str, str] | None = None
    patience: int | None = None
    min_delta: float = 0.0
    params_of: Callable = attrgetter("params")
    report: Callable[[Any, Result], dict] = field(default=lambda run, result: {})
    plot: Callable | None = plot_curves
    title: str = ""
    label: str = ""


@dataclass
class Part:
    """A sub-run: its config (its own max_epochs, say) and `build(run) -> Task`."""

    cfg: Any
    build: Callable[[Any], Task]


@dataclass
class Outcome:
    """A trained part: the training result and its summary (a sub-run's: as written to its
    summary.json; the top folder's part: what its report gave)."""

    result: Result
    summary: dict
