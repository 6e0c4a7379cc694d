"""Multilayer perceptron (D2L 5.1-5.2): one hidden ReLU layer of 256 by default.

    make exp NAME=mlp                              # digits, offline
    make exp NAME=mlp ARGS="--hidden 256,128"      # two hidden layers
    make exp NAME=mlp ARGS="--dataset fashion_mnist --data-dir DIR"   # the book's setting

Defaults on digits: hidden 256, sigma = 0.01 init, zero biases, lr 0.5, batch 64,
100 epochs, from-scratch SGD. Expect test accuracy >= 0.96 (a real run: see README).
With --dataset fashion_mnist the book's settings apply: lr 0.1, batch 256, 10 epochs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import jax

from jaxdl.config import TrainConfig, doc
from jaxdl.data.classification import DATASETS, load_classification
from jaxdl.errors import JaxdlError
from jaxdl.models.dense import mlp_apply, mlp_init
from jaxdl.train import supervised

BOOK = {"lr": 0.1, "batch_size": 256, "max_epochs": 10}

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "3", "--hidden", "32"]


@dataclass
class Config(TrainConfig):
    """MLP classifier."""

    dataset: str = field(default="digits", metadata=doc("data set", choices=DATASETS))
    data_dir: str = field(default="", metadata=doc("folder with the Fashion-MNIST IDX files (else cache/download)"))
    hidden: str = field(default="256", metadata=doc("hidden layer sizes, comma-separated (the book: 256)"))
    loss: str = field(default="ce", metadata=doc("loss", choices=("ce", "mse")))
    max_epochs: int = field(default=100, metadata=doc("epochs", gt=0))
    lr: float = field(default=0.5, metadata=doc("learning rate", gt=0))
    batch_size: int = field(default=64, metadata=doc("minibatch size", gt=0))
    sigma: float = field(default=0.01, metadata=doc("weight init N(0, sigma^2) (the book: 0.01)", ge=0))
    weight_init: str = field(default="normal", metadata=doc("weight initialiser", choices=("normal", "xavier", "he")))
    optimizer: str = field(default="sgd", metadata=doc("optimizer", choices=("sgd", "optax_sgd", "momentum", "adam")))
    ckpt_every: int = field(default=10, metadata=doc("checkpoint every N epochs", gt=0))

    PRESETS: ClassVar = {"dataset": {"fashion_mnist": BOOK}}

    def hidden_sizes(self) -> tuple[int, ...]:
        try:
            sizes = tuple(int(h) for h in self.hidden.split(",") if h.strip())
        except ValueError:
            raise JaxdlError(f"--hidden {self.hidden!r}: expected sizes like 256 or 256,128") from None
        if not sizes or min(sizes) < 1:
            raise JaxdlError(f"--hidden {self.hidden!r}: sizes must be positive")
        return sizes

    def validate(self) -> None:
        self.hidden_sizes()


def main(cfg: Config):
    data = load_classification(cfg.dataset, data_dir=cfg.data_dir, split_seed=cfg.seed)
    params = mlp_init(jax.random.key(cfg.seed), data.num_features, cfg.hidden_sizes(), data.num_classes,
                      weight_init=cfg.weight_init, sigma=cfg.sigma)
    evaluate = supervised.make_evaluator(mlp_apply, {"test": (data.X_test, data.y_test)})
    run, result = supervised.train(cfg, experiment="mlp", params=params,
                                   loss_fn=supervised.classification_loss(mlp_apply, cfg.loss),
                                   data={"X": data.X_train, "y": data.y_train}, evaluate_params=evaluate)
    final = supervised.make_evaluator(mlp_apply, {"train": (data.X_train, data.y_train),
                                                  "test": (data.X_test, data.y_test)})(result.state.params)
    print(f"test accuracy {final['test_accuracy']:.4f}  train accuracy {final['train_accuracy']:.4f}")
    return supervised.finish(run, result, {"dataset": cfg.dataset, "hidden": list(cfg.hidden_sizes()), **final})
