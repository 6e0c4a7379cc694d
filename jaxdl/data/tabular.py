"""Data sets that scikit-learn ships (always available offline): digits and breast cancer."""
from __future__ import annotations

from dataclasses import dataclass, field

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


def load_digits(*, test_fraction: float = 0.2, split_seed: int = 0) -> ClassificationData:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""
    # Deferred: scikit-learn (with SciPy) is slow to import and only these two loaders use it.
    from sklearn.datasets import load_digits as _load

    d = _load()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    tr, te = split_indices(len(y), test_fraction, split_seed)
    names = tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8))
    return ClassificationData(X[tr], y[tr], X[te], y[te], 10, names, (8, 8))


def load_breast_cancer(*, test_fraction: float = 0.2, split_seed: int = 0) -> ClassificationData:
    """scikit-learn's breast-cancer table (569 rows, 30 named features), standardised
    with the training split's mean and standard deviation."""
    from sklearn.datasets import load_breast_cancer as _load  # deferred, as in load_digits

    d = _load()
    X = d.data.astype(np.float64)
    y = d.target.astype(np.int32)
    tr, te = split_indices(len(y), test_fraction, split_seed)
    mu, sd = X[tr].mean(0), X[tr].std(0)
    X = ((X - mu) / sd).astype(np.float32)
    return ClassificationData(X[tr], y[tr], X[te], y[te], 2, tuple(d.feature_names))
