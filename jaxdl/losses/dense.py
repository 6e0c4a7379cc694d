"""Regression and classification losses.

Squared loss is maximum likelihood under Gaussian noise: -log N(y | y_hat, sigma^2)
= (y - y_hat)^2 / (2 sigma^2) + log(sigma) + log(2 pi)/2, so for fixed sigma both have
the same minimiser (tested).

Cross-entropy comes in two forms: `cross_entropy_naive` (softmax, then log) is kept to
teach and overflows for logits ~ 100; `cross_entropy` uses `log_softmax` (log-sum-exp
trick) and is the one every model trains with.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def squared_loss(*, pred, target):
    """Per-example 1/2 (y_hat - y)^2."""
    return 0.5 * (pred - target) ** 2


def gaussian_nll(*, pred, target, sigma=1.0):
    """Per-example negative log-likelihood of `target` under N(pred, sigma^2)."""
    sigma = jnp.asarray(sigma, jnp.result_type(pred))
    return 0.5 * ((target - pred) / sigma) ** 2 + jnp.log(sigma) + 0.5 * jnp.log(2 * jnp.pi)


def softmax_naive(logits_BxC):
    """exp(o) / sum exp(o) exactly as written in the book; overflows for large logits."""
    e = jnp.exp(logits_BxC)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy_naive(*, logits, labels):
    """Per-example -log softmax(o)[y], computed the naive way (teaching only)."""
    p = softmax_naive(logits)
    return -jnp.log(jnp.take_along_axis(p, labels[..., None], axis=-1)[..., 0])


def cross_entropy(*, logits, labels):
    """Per-example -log p[y] with the stable `log_softmax`."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def accuracy(*, logits, labels):
    """Per-example 1.0 where argmax matches the label."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def masked_mean(values, mask=None):
    """Mean over examples, counting only where `mask` is true (padding excluded)."""
    if mask is None:
        return values.mean()
    mask = mask.astype(values.dtype)
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)
