"""Linear regression, softmax regression and the MLP, written from scratch.

Parameter pytrees (the same names everywhere, including hand-written backprop):
  linear regression: {'w': (D,), 'b': ()}                      y_B = X_BxD @ w + b
  softmax regression: {'w': (C, D), 'b': (C,)}                  logits_BxC = X @ wᵀ + b
  MLP: [{'w': (H1, D), 'b': (H1,)}, ..., {'w': (C, Hk), 'b': (C,)}]  ReLU between layers

A dense layer's weight is stored (out, in), as in `torch.nn.Linear`; the book writes
O = XW + b with W (in, out), which is the transpose of ours. The reason is speed: the
weight gradient is then dL/dW = GᵀX, an (out, in) product that XLA:CPU runs faster than
the XᵀG an (in, out) weight needs (see the README's benchmark section). The numbers drawn
at initialisation are the same either way: weights are drawn (in, out) and transposed, so
fan-in and fan-out mean what they always do.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxdl.models import init as inits


def linreg_init(key, num_inputs: int, *, sigma: float = 0.01, dtype=jnp.float32):
    """w ~ N(0, sigma^2), b = 0."""
    return {"w": inits.normal(key, (num_inputs,), dtype, sigma=sigma), "b": jnp.zeros((), dtype)}


def linreg_apply(params, X_BxD):
    """Predictions y_B = X w + b."""
    return X_BxD @ params["w"] + params["b"]


def dense_init(key, fan_in: int, fan_out: int, *, weight_init="normal", sigma=0.01, dtype=jnp.float32):
    """One affine layer {'w': (fan_out, fan_in), 'b': zeros(fan_out)}."""
    w_init = inits.weight_init(weight_init, sigma)
    return {"w": w_init(key, (fan_in, fan_out), dtype).T, "b": jnp.zeros((fan_out,), dtype)}


def dense_apply(layer, X_BxD):
    """X Wᵀ + b: (B, in) -> (B, out)."""
    return X_BxD @ layer["w"].T + layer["b"]


def softmax_init(key, num_inputs: int, num_classes: int, *, weight_init="normal", sigma=0.01):
    """Softmax regression is a single affine layer producing logits."""
    return dense_init(key, num_inputs, num_classes, weight_init=weight_init, sigma=sigma)


def softmax_apply(params, X_BxD):
    """Logits (B, C); probabilities are `jax.nn.softmax(logits)`."""
    return dense_apply(params, X_BxD)


def mlp_init(key, num_inputs: int, hidden: Sequence[int], num_classes: int, *, weight_init="normal", sigma=0.01):
    """A list of affine layers D -> hidden... -> C."""
    sizes = [num_inputs, *hidden, num_classes]
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        dense_init(k, a, b, weight_init=weight_init, sigma=sigma)
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp_apply(params, X_BxD):
    """ReLU after every layer but the last; returns logits (B, C)."""
    H = X_BxD
    for layer in params[:-1]:
        H = jax.nn.relu(dense_apply(layer, H))
    return dense_apply(params[-1], H)
