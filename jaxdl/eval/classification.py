"""Accuracy and loss of a classifier over whole splits."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.eval.budget import fitting_rows
from jaxdl.losses.dense import accuracy, cross_entropy


def make_evaluator(apply_fn, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, chunk: int = 8192):
    """evaluate(params) -> {'<split>_loss', '<split>_accuracy'} over whole splits (jitted, in
    blocks of at most `chunk` rows, fewer when a block's activations would take more than
    half the device's memory)."""

    @jax.jit
    def scores(params, X, y):
        logits = apply_fn(params, X)
        return cross_entropy(logits=logits, labels=y).sum(), accuracy(logits=logits, labels=y).sum()

    device_splits = {name: (jnp.asarray(X), jnp.asarray(y)) for name, (X, y) in splits.items()}
    sized = {}  # the block size and its compiled program, found at the first evaluation

    def block_args(params, X, y):
        def make(rows):
            return (jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params),
                    jax.ShapeDtypeStruct((rows, *X.shape[1:]), X.dtype), jax.ShapeDtypeStruct((rows,), y.dtype))
        return make

    def evaluate(params) -> dict:
        out = {}
        for name, (X, y) in device_splits.items():
            if name not in sized:
                sized[name] = fitting_rows(scores, block_args(params, X, y), min(chunk, len(y)),
                                           what="evaluating the classifier")
            rows, compiled = sized[name]
            total_loss, total_acc = 0.0, 0.0
            for i in range(0, len(y), rows):
                block = compiled if i + rows <= len(y) else scores  # a shorter last block: compiled on its own
                loss, acc = block(params, X[i:i + rows], y[i:i + rows])
                total_loss, total_acc = total_loss + float(loss), total_acc + float(acc)
            out[f"{name}_loss"] = total_loss / len(y)
            out[f"{name}_accuracy"] = total_acc / len(y)
        return out

    return evaluate


def final_accuracy(apply_fn, params, data) -> dict:
    """Loss and accuracy of `params` on a ClassificationData's train and test splits, printed."""
    splits = {"train": (data.X_train, data.y_train), "test": (data.X_test, data.y_test)}
    scores = make_evaluator(apply_fn, splits)(params)
    print(f"test accuracy {scores['test_accuracy']:.4f}  train accuracy {scores['train_accuracy']:.4f}")
    return scores
