"""Softmax regression (D2L 4.1-4.4) on scikit-learn's digits by default.

    make exp NAME=softmax                         # digits, offline
    make exp NAME=softmax ARGS="--loss mse"       # squared loss on one-hot targets, for contrast
    make exp NAME=softmax ARGS="--dataset fashion_mnist --data-dir DIR"   # the book's setting

Defaults on digits (8x8 images, 10 classes): lr 0.5, batch 64, 100 epochs, sigma = 0.01
init, from-scratch SGD; expect test accuracy >= 0.94 (README: a real run). With
--dataset fashion_mnist the book's settings apply: lr 0.1, batch 256, 10 epochs.
"""
from __future__ import annotations

from functools import partial

import jax

from jaxdl import harness
from jaxdl.config import ClassifierOptions, TrainConfig, defaults
from jaxdl.data.classification import load_classification
from jaxdl.eval.classification import final_accuracy, make_evaluator
from jaxdl.losses.classification import classification_loss
from jaxdl.models.dense import softmax_apply, softmax_init
from jaxdl.train.epoch import shuffled_indices, take_rows
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import init_state

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "3"]


@defaults(max_epochs=100, lr=0.5, batch_size=64, ckpt_every=10)
class Config(ClassifierOptions, TrainConfig):
    """Softmax regression."""


def build(cfg: Config, data) -> harness.Task:
    make_params = partial(softmax_init, jax.random.key(cfg.seed), data.num_features, data.num_classes,
                          weight_init=cfg.weight_init, sigma=cfg.sigma)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr)

    def report(run, result: harness.Result) -> dict:
        return {"dataset": cfg.dataset, "loss": cfg.loss, **final_accuracy(softmax_apply, result.params, data)}

    return harness.Task(
        state=lambda: init_state(make_params(), optimizer),
        loss_fn=classification_loss(softmax_apply, cfg.loss), optimizer=optimizer,
        epoch=harness.Batches({"X": data.X_train, "y": data.y_train},
                              partial(shuffled_indices, batch_size=cfg.batch_size), take_rows, cfg.batch_size),
        evaluate=make_evaluator(softmax_apply, {"test": (data.X_test, data.y_test)}), report=report,
        title=f"softmax regression on {cfg.dataset} ({cfg.loss}, {cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size})")


def main(cfg: Config):
    data = load_classification(cfg.dataset, data_dir=cfg.data_dir, split_seed=cfg.seed, target=cfg.target)
    return harness.run(cfg, "softmax", lambda: build(cfg, data))
