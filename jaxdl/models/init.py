"""Initialisers: pure functions `(key, shape, dtype) -> array`.

The book draws weights from N(0, sigma^2) with sigma = 0.01: small random weights
break symmetry without exploding or vanishing activations in shallow nets. Xavier
(Glorot) and He scale the variance by fan-in/out for deeper nets, for comparison.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def normal(key, shape, dtype=jnp.float32, *, sigma: float = 0.01):
    """N(0, sigma^2) entries."""
    return sigma * jax.random.normal(key, shape, dtype)


def zeros(key, shape, dtype=jnp.float32):
    """All zeros (biases). `key` is accepted and ignored so all initialisers share a signature."""
    del key
    return jnp.zeros(shape, dtype)


def _fans(shape):
    fan_in = shape[0] if len(shape) >= 1 else 1
    fan_out = shape[1] if len(shape) >= 2 else 1
    return fan_in, fan_out


def xavier_uniform(key, shape, dtype=jnp.float32):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)): variance 2/(fan_in+fan_out)."""
    fan_in, fan_out = _fans(shape)
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -a, a)


def xavier_normal(key, shape, dtype=jnp.float32):
    """N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return math.sqrt(2.0 / (fan_in + fan_out)) * jax.random.normal(key, shape, dtype)


def he_normal(key, shape, dtype=jnp.float32):
    """N(0, 2 / fan_in): keeps ReLU activations' variance constant across layers."""
    fan_in, _ = _fans(shape)
    return math.sqrt(2.0 / fan_in) * jax.random.normal(key, shape, dtype)


WEIGHT_INITS = {
    "normal": normal,
    "xavier": xavier_uniform,
    "xavier_normal": xavier_normal,
    "he": he_normal,
}


def weight_init(name: str, sigma: float = 0.01):
    """Look up a weight initialiser by config name; `sigma` applies to 'normal' only."""
    if name == "normal":
        return lambda key, shape, dtype=jnp.float32: normal(key, shape, dtype, sigma=sigma)
    return WEIGHT_INITS[name]
