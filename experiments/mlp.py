"""Multilayer perceptron (D2L 5.1-5.2): one hidden ReLU layer of 256 by default.

    make exp NAME=mlp                              # digits, offline
    make exp NAME=mlp ARGS="--hidden 256,128"      # two hidden layers
    make exp NAME=mlp ARGS="--dataset fashion_mnist --data-dir DIR"   # the book's setting

Defaults on digits: hidden 256, sigma = 0.01 init, zero biases, lr 0.5, batch 64,
100 epochs, from-scratch SGD; expect test accuracy >= 0.96 (README: a real run). With
--dataset fashion_mnist the book's settings apply: lr 0.1, batch 256, 10 epochs.
"""
from __future__ import annotations

from dataclasses import field
from functools import partial

import jax

from jaxdl import harness
from jaxdl.config import ClassifierOptions, TrainConfig, defaults, doc
from jaxdl.data.classification import load_classification
from jaxdl.errors import JaxdlError
from jaxdl.eval.classification import final_accuracy, make_evaluator
from jaxdl.losses.classification import classification_loss
from jaxdl.models.dense import mlp_apply, mlp_init
from jaxdl.train.epoch import shuffled_indices, take_rows
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import init_state

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "3", "--hidden", "32"]


@defaults(max_epochs=100, lr=0.5, batch_size=64, ckpt_every=10)
class Config(ClassifierOptions, TrainConfig):
    """MLP classifier."""

    hidden: str = field(default="256", metadata=doc("hidden layer sizes, comma-separated (the book: 256)"))

    def hidden_sizes(self) -> tuple[int, ...]:
        try:
            sizes = tuple(int(h) for h in self.hidden.split(",") if h.strip())
        except ValueError:
            raise JaxdlError(f"--hidden {self.hidden!r}: expected sizes like 256 or 256,128") from None
        if not sizes or min(sizes) < 1:
            raise JaxdlError(f"--hidden {self.hidden!r}: sizes must be positive")
        return sizes

    def validate(self) -> None:
        ClassifierOptions.validate(self)
        self.hidden_sizes()


def build(cfg: Config, data) -> harness.Task:
    make_params = partial(mlp_init, jax.random.key(cfg.seed), data.num_features, cfg.hidden_sizes(), data.num_classes,
                          weight_init=cfg.weight_init, sigma=cfg.sigma)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr)

    def report(run, result: harness.Result) -> dict:
        return {"dataset": cfg.dataset, "loss": cfg.loss, "hidden": list(cfg.hidden_sizes()),
                **final_accuracy(mlp_apply, result.params, data)}

    return harness.Task(
        state=lambda: init_state(make_params(), optimizer),
        loss_fn=classification_loss(mlp_apply, cfg.loss), optimizer=optimizer,
        epoch=harness.Batches({"X": data.X_train, "y": data.y_train},
                              partial(shuffled_indices, batch_size=cfg.batch_size), take_rows, cfg.batch_size),
        evaluate=make_evaluator(mlp_apply, {"test": (data.X_test, data.y_test)}), report=report,
        title=f"MLP {cfg.hidden} on {cfg.dataset} ({cfg.loss}, {cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size})")


def main(cfg: Config):
    data = load_classification(cfg.dataset, data_dir=cfg.data_dir, split_seed=cfg.seed, target=cfg.target)
    return harness.run(cfg, "mlp", lambda: build(cfg, data))
