"""Softmax regression (D2L 4.1-4.4) on scikit-learn's digits by default.

    make exp NAME=softmax                         # digits, offline
    make exp NAME=softmax ARGS="--loss mse"       # squared loss on one-hot targets, for contrast
    make exp NAME=softmax ARGS="--dataset fashion_mnist --data-dir DIR"   # the book's setting

Defaults on digits (1,437 train / 360 test images of 8x8): lr 0.5, batch 64, 100 epochs,
sigma = 0.01 init, from-scratch SGD. Expect test accuracy >= 0.94 (a real run: see README).
With --dataset fashion_mnist the book's settings apply: lr 0.1, batch 256, 10 epochs
(expect ~0.83 test accuracy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import jax

from jaxdl.config import TrainConfig, doc
from jaxdl.data.classification import DATASETS, load_classification
from jaxdl.models.dense import softmax_apply, softmax_init
from jaxdl.train import supervised

BOOK = {"lr": 0.1, "batch_size": 256, "max_epochs": 10}

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "3"]


@dataclass
class Config(TrainConfig):
    """Softmax regression."""

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

    PRESETS: ClassVar = {"dataset": {"fashion_mnist": BOOK}}


def main(cfg: Config):
    data = load_classification(cfg.dataset, data_dir=cfg.data_dir, split_seed=cfg.seed)
    params = softmax_init(jax.random.key(cfg.seed), data.num_features, data.num_classes,
                          weight_init=cfg.weight_init, sigma=cfg.sigma)
    evaluate = supervised.make_evaluator(softmax_apply, {"test": (data.X_test, data.y_test)})
    run, result = supervised.train(cfg, experiment="softmax", params=params,
                                   loss_fn=supervised.classification_loss(softmax_apply, cfg.loss),
                                   data={"X": data.X_train, "y": data.y_train}, evaluate_params=evaluate)
    final = supervised.make_evaluator(softmax_apply, {"train": (data.X_train, data.y_train),
                                                      "test": (data.X_test, data.y_test)})(result.state.params)
    print(f"test accuracy {final['test_accuracy']:.4f}  train accuracy {final['train_accuracy']:.4f}")
    return supervised.finish(run, result, {"dataset": cfg.dataset, "loss": cfg.loss, **final})
