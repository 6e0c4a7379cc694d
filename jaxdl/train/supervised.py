"""Supervised training wired end to end: the recipe behind linreg, softmax and mlp.

data (host arrays) -> model (init/apply) -> loss -> train_step -> scan epoch -> fit loop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import distributed, losses
from jaxdl.config import TrainConfig, doc, to_dict
from jaxdl.data.classification import DATASETS
from jaxdl.parallel import check_divisible, data_parallel, select_devices
from jaxdl.runs.plots import plot_curves
from jaxdl.runs.run import Run
from jaxdl.train.epoch import shuffled_indices, take_rows
from jaxdl.train.loop import fit, median_seconds
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import init_state

BOOK_FASHION_MNIST = {"lr": 0.1, "batch_size": 256, "max_epochs": 10}  # D2L's softmax/MLP settings


@dataclass
class ClassifierConfig(TrainConfig):
    """Fields shared by the dense classifiers (softmax regression, MLP).

    Defaults on digits: lr 0.5, batch 64, 100 epochs, N(0, 0.01^2) weights, from-scratch SGD.
    With --dataset fashion_mnist the book's settings apply: lr 0.1, batch 256, 10 epochs.
    """

    dataset: str = field(default="digits", metadata=doc("data set", choices=DATASETS))
    data_dir: str = field(default="", metadata=doc("folder with the Fashion-MNIST IDX files (else cache/download)"))
    loss: str = field(default="ce", metadata=doc("cross-entropy or squared loss on one-hot targets", choices=("ce", "mse")))
    max_epochs: int = field(default=100, metadata=doc("epochs", gt=0))
    lr: float = field(default=0.5, metadata=doc("learning rate", gt=0))
    batch_size: int = field(default=64, metadata=doc("minibatch size", gt=0))
    sigma: float = field(default=0.01, metadata=doc("weight init N(0, sigma^2) (the book: 0.01)", ge=0))
    weight_init: str = field(default="normal", metadata=doc("weight initialiser", choices=("normal", "xavier", "he")))
    optimizer: str = field(default="sgd", metadata=doc("optimizer", choices=("sgd", "optax_sgd", "momentum", "adam")))
    ckpt_every: int = field(default=10, metadata=doc("checkpoint every N epochs", gt=0))

    PRESETS: ClassVar = {"dataset": {"fashion_mnist": BOOK_FASHION_MNIST}}


def classification_loss(apply_fn, kind: str = "ce"):
    """loss_fn(params, batch, key) for {'X': (B, D), 'y': (B,)}.

    'ce': cross-entropy on logits (log_softmax). 'mse': squared loss between the softmax
    probabilities and the one-hot target, summed over classes -- its gradient vanishes when
    a confident prediction is wrong, which is why cross-entropy trains classifiers better.
    """

    def loss_fn(params, batch, key):
        del key
        logits = apply_fn(params, batch["X"])
        if kind == "ce":
            per_example = losses.cross_entropy(logits=logits, labels=batch["y"])
        else:
            onehot = jax.nn.one_hot(batch["y"], logits.shape[-1], dtype=logits.dtype)
            per_example = losses.squared_loss(pred=jax.nn.softmax(logits), target=onehot).sum(-1)
        acc = losses.accuracy(logits=logits, labels=batch["y"]).mean()
        return per_example.mean(), {"accuracy": acc}

    return loss_fn


def make_evaluator(apply_fn, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, chunk: int = 8192):
    """evaluate(params) -> {'<split>_accuracy', '<split>_loss'} over whole splits (jitted)."""

    @jax.jit
    def scores(params, X, y):
        logits = apply_fn(params, X)
        return (losses.cross_entropy(logits=logits, labels=y).sum(),
                losses.accuracy(logits=logits, labels=y).sum())

    device_splits = {name: (jnp.asarray(X), jnp.asarray(y)) for name, (X, y) in splits.items()}

    def evaluate(params) -> dict:
        out = {}
        for name, (X, y) in device_splits.items():
            total_loss, total_acc = 0.0, 0.0
            for i in range(0, len(y), chunk):
                l, a = scores(params, X[i:i + chunk], y[i:i + chunk])
                total_loss, total_acc = total_loss + float(l), total_acc + float(a)
            out[f"{name}_loss"] = total_loss / len(y)
            out[f"{name}_accuracy"] = total_acc / len(y)
        return out

    return evaluate


def train(cfg, *, experiment: str, params, loss_fn, data: dict, evaluate_params=None, monitor=None,
          patience=None, eval_every: int = 1, resume_hint: str | None = None):
    """Train `params` on in-memory `data` (a dict of arrays with a leading example axis).

    Uses cfg.{seed, lr, batch_size, max_epochs, optimizer, devices, parallel, ckpt_every,
    out, resume, progress}. `resume_hint`: the command an interruption message names
    (default: resume this run folder). Returns (run, FitResult).
    """
    devices = select_devices(cfg.devices)
    n = len(jax.tree.leaves(data)[0])
    if cfg.batch_size > n:
        from jaxdl.errors import JaxdlError

        raise JaxdlError(f"--batch-size {cfg.batch_size}: larger than the {n} training examples")
    check_divisible(cfg.batch_size, len(devices))
    run = distributed.open_run(experiment, to_dict(cfg), out=cfg.out, resume=cfg.resume,
                               devices=[d.id for d in devices])  # several processes: process 0 writes
    try:
        optimizer = make_optimizer(getattr(cfg, "optimizer", "sgd"), cfg.lr)
        key = jax.random.key(cfg.seed)
        dp = data_parallel(loss_fn, optimizer, partial(shuffled_indices, batch_size=cfg.batch_size), data,
                           devices=devices, mode=cfg.parallel, batch_size=cfg.batch_size, load_batch=take_rows)
        state = dp.place(init_state(params, optimizer))
        evaluate = None
        if evaluate_params is not None:
            evaluate = lambda s: evaluate_params(jax.device_get(dp.to_host(s)).params)  # noqa: E731
        t0 = time.perf_counter()
        result = fit(run=run, state=state, epoch_fn=dp.epoch_fn, key=jax.random.fold_in(key, 1),
                     max_epochs=cfg.max_epochs, ckpt_every=cfg.ckpt_every, evaluate=evaluate,
                     eval_every=eval_every, monitor=monitor, patience=patience,
                     to_host=dp.to_host, from_host=dp.from_host, progress=cfg.progress and run.is_writer,
                     resume_hint=resume_hint or f"{distributed.command_prefix()} exp {experiment} --resume {run.dir}")
        result.extra["train_seconds"] = time.perf_counter() - t0
        result.extra["median_epoch_seconds"] = median_seconds(result.epoch_seconds)
        result.state = dp.to_host(result.state)
        if dp.replica_digests is not None:  # several processes: the same parameters on each
            result.extra["replica_digests"] = dp.replica_digests
    except BaseException:
        run.close()
        raise
    return run, result


def finish(run: Run, result, summary: dict, *, title: str = "") -> Run:
    """Write summary.json (finished) and curves.png, release the lock."""
    summary = {"finished": True, "epochs": result.epochs_done, **summary}
    for k in ("train_seconds", "median_epoch_seconds", "replica_digests"):
        if k in result.extra and k not in summary:
            summary[k] = result.extra[k]
    if run.is_writer:
        plot_curves(run.metrics(), run.dir / "curves.png", title=title or run.experiment)
    run.write_summary(summary)
    run.close()
    return run




def train_classifier(cfg, *, experiment: str, params, apply_fn, data, extra_summary: dict | None = None) -> Run:
    """The softmax/MLP recipe: train `params` with `apply_fn` on `data` (a ClassificationData),
    evaluate on the test split every epoch, report final train/test accuracy, finish the run."""
    evaluate = make_evaluator(apply_fn, {"test": (data.X_test, data.y_test)})
    run, result = train(cfg, experiment=experiment, params=params, loss_fn=classification_loss(apply_fn, cfg.loss),
                        data={"X": data.X_train, "y": data.y_train}, evaluate_params=evaluate)
    final = make_evaluator(apply_fn, {"train": (data.X_train, data.y_train),
                                      "test": (data.X_test, data.y_test)})(result.state.params)
    print(f"test accuracy {final['test_accuracy']:.4f}  train accuracy {final['train_accuracy']:.4f}")
    return finish(run, result, {"dataset": cfg.dataset, "loss": cfg.loss, **(extra_summary or {}), **final})
