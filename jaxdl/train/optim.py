"""SGD written from scratch as an `optax.GradientTransformation`.

It updates every leaf of the parameter pytree, biases included (tested equal to
`optax.sgd`). Any optax optimizer can be used wherever this one is.
"""
from __future__ import annotations

import jax
import optax


def sgd(learning_rate: float) -> optax.GradientTransformation:
    """theta <- theta - lr * grad, for every leaf."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g: -learning_rate * g, grads), state

    return optax.GradientTransformation(init, update)


OPTIMIZERS = ("sgd", "optax_sgd", "momentum", "adam", "adamw")  # the names make_optimizer takes


def make_optimizer(name: str, lr: float, *, momentum: float = 0.0, weight_decay: float = 0.0):
    """Config name -> optimizer: 'sgd' (from scratch), 'optax_sgd', 'momentum', 'adam', 'adamw'."""
    if name == "sgd":
        opt = sgd(lr)
    elif name == "optax_sgd":
        opt = optax.sgd(lr)
    elif name == "momentum":
        opt = optax.sgd(lr, momentum=momentum or 0.9)
    elif name == "adam":
        opt = optax.adam(lr)
    elif name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    if weight_decay:
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt
