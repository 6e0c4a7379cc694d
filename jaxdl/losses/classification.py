"""The classification objective of the dense classifiers (softmax regression, the MLP)."""
from __future__ import annotations

import jax

from jaxdl.losses.dense import accuracy, cross_entropy, squared_loss


def classification_loss(apply_fn, kind: str = "ce"):
    """loss_fn(params, batch, key) for {'X': (B, D), 'y': (B,)}.

    'ce': cross-entropy on logits (log_softmax). 'mse': squared loss between the softmax
    probabilities and the one-hot target, summed over classes -- its gradient vanishes when
    a confident prediction is wrong, which is why cross-entropy trains classifiers better.
    """

    def loss_fn(params, batch, key):
        del key
        logits = apply_fn(params, batch["X"])
        if kind == "ce":
            per_example = cross_entropy(logits=logits, labels=batch["y"])
        else:
            onehot = jax.nn.one_hot(batch["y"], logits.shape[-1], dtype=logits.dtype)
            per_example = squared_loss(pred=jax.nn.softmax(logits), target=onehot).sum(-1)
        return per_example.mean(), {"accuracy": accuracy(logits=logits, labels=batch["y"]).mean()}

    return loss_fn
