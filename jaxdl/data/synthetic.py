"""Synthetic data with a known answer."""
from __future__ import annotations

import jax
import jax.numpy as jnp

TRUE_W = (2.0, -3.4)
TRUE_B = 4.2


def linreg_data(key, num_examples: int, *, w=TRUE_W, b=TRUE_B, noise: float = 0.01):
    """y = X w + b + eps, X ~ N(0, I), eps ~ N(0, noise^2): the book's synthetic regression set.

    Returns (X_NxD float32, y_N float32).
    """
    w = jnp.asarray(w, jnp.float32)
    kx, ke = jax.random.split(key)
    X = jax.random.normal(kx, (num_examples, w.shape[0]), jnp.float32)
    y = X @ w + b + noise * jax.random.normal(ke, (num_examples,), jnp.float32)
    return X, y
