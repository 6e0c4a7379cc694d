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

import jax

from jaxdl.config import doc
from jaxdl.data.classification import load_classification
from jaxdl.errors import JaxdlError
from jaxdl.models.dense import mlp_apply, mlp_init
from jaxdl.train import supervised

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "3", "--hidden", "32"]


@dataclass
class Config(supervised.ClassifierConfig):
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
        self.hidden_sizes()


def main(cfg: Config):
    data = load_classification(cfg.dataset, data_dir=cfg.data_dir, split_seed=cfg.seed)
    params = mlp_init(jax.random.key(cfg.seed), data.num_features, cfg.hidden_sizes(), data.num_classes,
                      weight_init=cfg.weight_init, sigma=cfg.sigma)
    return supervised.train_classifier(cfg, experiment="mlp", params=params, apply_fn=mlp_apply, data=data,
                                       extra_summary={"hidden": list(cfg.hidden_sizes())})
