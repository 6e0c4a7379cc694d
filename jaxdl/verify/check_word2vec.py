"""Hand-derived gradients of the word2vec losses, checked against autodiff.

Negative sampling, one example with centre vector v_c (skip-gram) or hidden vector
h = mean of the context vectors (CBOW), true target o and K noise words k:

    L = -log sigma(u_o . h) - sum_k log sigma(-u_k . h)

With d/ds [-log sigma(s)] = sigma(s) - 1 and d/ds [-log sigma(-s)] = sigma(s), i.e.
dL/ds_t = sigma(s_t) - y_t (y = 1 for the true target, 0 for noise):

    dL/dh   = (sigma(u_o . h) - 1) u_o + sum_k sigma(u_k . h) u_k
    dL/du_o = (sigma(u_o . h) - 1) h
    dL/du_k = sigma(u_k . h) h

Masked targets contribute nothing; skip-gram adds dL/dh to the centre's row of W_in,
CBOW adds dL/dh / n to each of the n valid context rows; every dL/du_t is added to row t
of W_out (rows repeat: they accumulate). Full softmax over V words, s = W_out v_c:
dL/ds = softmax(s) - onehot(o), dL/dv_c = W_out^T (p - y), dL/dW_out = (p - y) v_c^T.

Checked in float64 (scoped `jax.enable_x64`) against `jax.grad` of the losses in
`jaxdl.losses.word2vec` applied to the models in `jaxdl.models.word2vec`. A wrong
derivation -- forgetting the -1 of the true target -- is registered and must fail.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.losses import word2vec as losses
from jaxdl.models import word2vec as w2v
from jaxdl.verify.registry import Check

V, D, B, K, C = 11, 4, 6, 3, 4


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _problem():
    rng = np.random.default_rng(20240915)
    params = {"W_in": rng.normal(scale=0.7, size=(V, D)), "W_out": rng.normal(scale=0.7, size=(V, D))}
    center = rng.integers(0, V, B)
    targets = rng.integers(0, V, (B, 1 + K))
    targets[0, 1:] = targets[0, 0]  # repeated rows must accumulate
    mask = rng.random((B, 1 + K)) < 0.8
    mask[:, 0] = True
    mask[-1] = False  # a padding example
    contexts = rng.integers(0, V, (B, C))
    context_mask = rng.random((B, C)) < 0.7
    context_mask[:, 0] = True
    return params, center, targets, mask, contexts, context_mask


def _labels():
    return np.concatenate([np.ones(1), np.zeros(K)])


def hand_ns_rows(h, U, mask, *, forget_minus_one: bool = False):
    """dL/dh (B, D) and dL/du_t (B, T, D) for h (B, D), target rows U (B, T, D)."""
    s = np.einsum("bd,btd->bt", h, U)
    y = 0.0 if forget_minus_one else _labels()[None, :]
    g = (_sigmoid(s) - y) * mask
    return np.einsum("bt,btd->bd", g, U), g[..., None] * h[:, None, :]


def hand_skipgram(params, center, targets, mask, *, forget_minus_one=False):
    W_in, W_out = params["W_in"], params["W_out"]
    g_h, g_U = hand_ns_rows(W_in[center], W_out[targets], mask, forget_minus_one=forget_minus_one)
    grads = {"W_in": np.zeros_like(W_in), "W_out": np.zeros_like(W_out)}
    np.add.at(grads["W_in"], center, g_h)
    np.add.at(grads["W_out"], targets.ravel(), g_U.reshape(-1, D))
    return grads


def hand_cbow(params, contexts, context_mask, targets, mask):
    W_in, W_out = params["W_in"], params["W_out"]
    n = context_mask.sum(1, keepdims=True)
    h = (W_in[contexts] * context_mask[..., None]).sum(1) / n
    g_h, g_U = hand_ns_rows(h, W_out[targets], mask)
    grads = {"W_in": np.zeros_like(W_in), "W_out": np.zeros_like(W_out)}
    np.add.at(grads["W_in"], contexts.ravel(), ((context_mask / n)[..., None] * g_h[:, None, :]).reshape(-1, D))
    np.add.at(grads["W_out"], targets.ravel(), g_U.reshape(-1, D))
    return grads


def hand_skipgram_shared(params, center, positives, negatives, mask_BxK, example_mask):
    """Negatives shared by the batch: with g_b = sig(s_b) - 1 and G_bk = sig(s_bk) (masked),
    dL/dv_c = g_b u_o + sum_k G_bk u_k, dL/du_o = g_b v_c, dL/du_k = sum_b G_bk v_c."""
    W_in, W_out = params["W_in"], params["W_out"]
    h, U_pos, U_neg = W_in[center], W_out[positives], W_out[negatives]
    g = (_sigmoid((h * U_pos).sum(1)) - 1.0) * example_mask
    G = _sigmoid(h @ U_neg.T) * mask_BxK
    grads = {"W_in": np.zeros_like(W_in), "W_out": np.zeros_like(W_out)}
    np.add.at(grads["W_in"], center, g[:, None] * U_pos + G @ U_neg)
    np.add.at(grads["W_out"], positives, g[:, None] * h)
    np.add.at(grads["W_out"], negatives, G.T @ h)
    return grads


def _autodiff_shared():
    params, center, targets, mask, _, _ = _problem()
    positives, negatives = targets[:, 0], targets[0, 1:].copy()
    negatives[1] = negatives[0]  # a noise word drawn twice accumulates
    example_mask = mask[:, 0] & mask.any(1)
    mask_BxK = mask[:, 1:] & example_mask[:, None]
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        rows = np.concatenate([positives, negatives])
        auto = jax.tree.map(np.asarray, jax.grad(lambda p: losses.shared_ns_loss(
            p["W_in"][center], p["W_out"][rows], jnp.asarray(mask_BxK), jnp.asarray(example_mask)))(p64))
    return hand_skipgram_shared(params, center, positives, negatives, mask_BxK, example_mask), auto


def hand_full_softmax(params, center, context):
    W_in, W_out = params["W_in"], params["W_out"]
    v = W_in[center]
    s = v @ W_out.T
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = p - np.eye(V)[context]  # (B, V)
    grads = {"W_in": np.zeros_like(W_in), "W_out": delta.T @ v}
    np.add.at(grads["W_in"], center, delta @ W_out)
    return grads


def _autodiff(kind: str):
    params, center, targets, mask, contexts, context_mask = _problem()
    labels = _labels()

    def ns(logits):
        return losses.negative_sampling_loss(logits_BxT=logits, labels_BxT=labels[None, :],
                                             mask_BxT=mask.astype(logits.dtype)).sum()

    def loss(p):
        if kind == "cbow":
            return ns(w2v.cbow_apply(p, contexts, context_mask, targets))
        if kind == "softmax":
            return losses.full_softmax_loss(logits_BxV=w2v.full_softmax_apply(p, center), targets_B=targets[:, 0]).sum()
        return ns(w2v.skipgram_apply(p, center, targets))

    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        auto = jax.tree.map(np.asarray, jax.grad(loss)(p64))
    if kind == "cbow":
        hand = hand_cbow(params, contexts, context_mask, targets, mask)
    elif kind == "softmax":
        hand = hand_full_softmax(params, center, targets[:, 0])
    else:
        hand = hand_skipgram(params, center, targets, mask, forget_minus_one=kind == "wrong")
    return hand, auto


def checks() -> list[Check]:
    shapes = f"W_in,W_out:({V},{D}) batch {B} x (1+{K}) targets"
    return [
        Check("skip-gram NS loss: dL/dv_c = (sig(u_o.v_c)-1)u_o + sum_k sig(u_k.v_c)u_k; dL/du_o, dL/du_k",
              "backprop", shapes, lambda: _autodiff("skipgram"), rtol=1e-9),
        Check("CBOW NS loss: dL/dv_j = dL/dh / n for each of the n context vectors", "backprop",
              shapes + f", {C} context slots", lambda: _autodiff("cbow"), rtol=1e-9),
        Check("skip-gram NS loss, negatives shared by the batch: dL/du_k = sum_b sig(u_k.v_b) v_b", "backprop",
              f"W_in,W_out:({V},{D}) batch {B}, {K} shared noise words", _autodiff_shared, rtol=1e-9),
        Check("full-softmax skip-gram: dL/ds = softmax(s) - onehot(o)", "backprop", shapes,
              lambda: _autodiff("softmax"), rtol=1e-9),
        Check("skip-gram NS loss with the true target's -1 forgotten (must fail)", "backprop", shapes,
              lambda: _autodiff("wrong"), rtol=1e-9, expect_fail=True),
    ]
