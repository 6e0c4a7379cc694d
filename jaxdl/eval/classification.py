"""Accuracy and loss of a classifier over whole splits."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.losses.dense import accuracy, cross_entropy


def make_evaluator(apply_fn, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, chunk: int = 8192):
    """evaluate(params) -> {'<split>_loss', '<split>_accuracy'} over whole splits (jitted, in
    chunks of `chunk` rows)."""

    @jax.jit
    def scores(params, X, y):
        logits = apply_fn(params, X)
        return cross_entropy(logits=logits, labels=y).sum(), accuracy(logits=logits, labels=y).sum()

    device_splits = {name: (jnp.asarray(X), jnp.asarray(y)) for name, (X, y) in splits.items()}

    def evaluate(params) -> dict:
        out = {}
        for name, (X, y) in device_splits.items():
            total_loss, total_acc = 0.0, 0.0
            for i in range(0, len(y), chunk):
                loss, acc = scores(params, X[i:i + chunk], y[i:i + chunk])
                total_loss, total_acc = total_loss + float(loss), total_acc + float(acc)
            out[f"{name}_loss"] = total_loss / len(y)
            out[f"{name}_accuracy"] = total_acc / len(y)
        return out

    return evaluate


def final_accuracy(apply_fn, params, data) -> dict:
    """Loss and accuracy of `params` on a ClassificationData's train and test splits, printed."""
    scores = make_evaluator(apply_fn, {"train": (data.X_train, data.y_train), "test": (data.X_test, data.y_test)})(params)
    print(f"test accuracy {scores['test_accuracy']:.4f}  train accuracy {scores['train_accuracy']:.4f}")
    return scores
