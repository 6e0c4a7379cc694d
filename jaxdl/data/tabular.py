"""Data sets that scikit-learn ships (always available offline): digits and breast cancer."""
from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ClassificationData:
    """Train/test arrays on the host; X float32 (N, D), y int32 (N,)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    feature_names: tuple[str, ...] = field(default=())
    image_shape: tuple[int, ...] | None = None

    @property
    def num_features(self) -> int:
        return int(self.X_train.shape[1])


def split_indices(n: int, test_fraction: float, seed: int):
    """A reproducible permutation split: (train_idx, test_idx)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def shipped_digits() -> np.ndarray:
    """scikit-learn's digits table (1,797 rows: 64 pixels 0..16, then the label), read from
    the file scikit-learn ships, without importing scikit-learn (and SciPy): about a second
    sooner to a first epoch. Falls back to `sklearn.datasets.load_digits`."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    files = [Path(f) / "datasets" / "data" / "digits.csv.gz" for f in folders]
    path = next((p for p in files if p.is_file()), None)
    if path is not None:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        if table.shape == (1797, 65):
            return table
    from sklearn.datasets import load_digits as _load

    d = _load()
    return np.column_stack([d.data, d.target])


def load_digits(*, test_fraction: float = 0.2, split_seed: int = 0) -> ClassificationData:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""
    table = shipped_digits()
    X = (table[:, :-1] / 16.0).astype(np.float32)
    y = table[:, -1].astype(np.int32)
    tr, te = split_indices(len(y), test_fraction, split_seed)
    names = tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8))
    return ClassificationData(X[tr], y[tr], X[te], y[te], 10, names, (8, 8))


def load_breast_cancer(*, test_fraction: float = 0.2, split_seed: int = 0) -> ClassificationData:
    """scikit-learn's breast-cancer table (569 rows, 30 named features), standardised
    with the training split's mean and standard deviation."""
    from sklearn.datasets import load_breast_cancer as _load  # deferred: scikit-learn is slow to import

    d = _load()
    X = d.data.astype(np.float64)
    y = d.target.astype(np.int32)
    tr, te = split_indices(len(y), test_fraction, split_seed)
    mu, sd = X[tr].mean(0), X[tr].std(0)
    X = ((X - mu) / sd).astype(np.float32)
    return ClassificationData(X[tr], y[tr], X[te], y[te], 2, tuple(d.feature_names))
