"""The one train step: `train_step(state, batch, key) -> (state, metrics)`.

Built from a pure loss `loss_fn(params, batch, key) -> (loss, metrics)` and any optax
optimizer. The same step serves every model: dense classifiers, word2vec (padded windows
with masks, negatives drawn from `key`), knowledge-graph embedding (corrupted triples
drawn from `key`), federated clients (`jax.vmap` over a stacked client axis) and data
parallelism, where the device room (jaxdl/devices) says where values are averaged over
the devices: the gradients (`grad_reduce`) or the loss itself (`loss_reduce`).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


class TrainState(NamedTuple):
    params: PyTree
    opt_state: PyTree
    step: jax.Array  # int32 scalar: optimizer steps taken


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def all_finite(tree) -> jax.Array:
    """True when every leaf of `tree` is free of NaN and inf."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_train_step(
    loss_fn: Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, dict]],
    optimizer: optax.GradientTransformation,
    *,
    grad_reduce: Callable[[PyTree], PyTree] | None = None,
    loss_reduce: Callable[[PyTree], PyTree] | None = None,
):
    """Returns the pure `train_step(state, batch, key) -> (state, metrics)`.

    metrics: 'loss', the loss's own metrics, and 'finite' (loss and every gradient free
    of NaN/inf), all scalars. `grad_reduce` is applied to (grads, metrics) after
    differentiation; `loss_reduce` to (loss, metrics) inside it, so that autodiff carries
    the reduction into the gradients.
    """
    objective = loss_fn if loss_reduce is None else (lambda *args: loss_reduce(loss_fn(*args)))

    def train_step(state: TrainState, batch, key):
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params, batch, key)
        metrics = {"loss": loss, **aux}
        if grad_reduce is not None:
            grads, metrics = grad_reduce((grads, metrics))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["finite"] = all_finite((metrics["loss"], grads))
        return TrainState(params, opt_state, state.step + 1), metrics

    return train_step
