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

from dataclasses import dataclass

import jax

from jaxdl.data.classification import load_classification
from jaxdl.models.dense import softmax_apply, softmax_init
from jaxdl.train import supervised

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "3"]


@dataclass
class Config(supervised.ClassifierConfig):
    """Softmax regression."""


def main(cfg: Config):
    data = load_classification(cfg.dataset, data_dir=cfg.data_dir, split_seed=cfg.seed)
    params = softmax_init(jax.random.key(cfg.seed), data.num_features, data.num_classes,
                          weight_init=cfg.weight_init, sigma=cfg.sigma)
    return supervised.train_classifier(cfg, experiment="softmax", params=params, apply_fn=softmax_apply, data=data)
