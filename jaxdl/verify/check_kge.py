"""Hand-derived gradient of the TransE self-adversarial negative-sampling loss.

For one positive with distance vector d+ = h + r - t and K negatives d_k = h_k + r - t_k
(one side replaced), TransE with the L1 norm scores s = gamma - ||d||_1 and the loss is

    L = -( log sigma(s+) + sum_k w_k log sigma(-s_k) ) / 2,   w = softmax(alpha s) held constant.

With d/ds log sigma(s) = sigma(-s), d/ds log sigma(-s) = -sigma(s) and ds/dd = -sign(d):

    dL/dd+  =  sigma(-s+) / 2 * sign(d+)
    dL/dd_k = -w_k sigma(s_k) / 2 * sign(d_k)

and each d adds its gradient to the rows of h and r and subtracts it from the row of t;
the batch loss is the mean over B positives (so every term is divided by B). The check
scatters these into the entity and relation tables and compares them with `jax.grad` of
`jaxdl.losses.kge` (float64, scoped). A second check differentiates through the weights
(no `stop_gradient`) and must fail: the hand formula holds only with detached weights.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.losses import kge as kge_losses
from jaxdl.models import kge
from jaxdl.verify.registry import Check

E, R, D, B, K = 7, 3, 5, 4, 6
GAMMA, ALPHA = 2.0, 1.5


def _problem():
    rng = np.random.default_rng(20240901)
    params = {"entity": rng.normal(size=(E, D)), "relation": rng.normal(size=(R, D))}
    triples = np.stack([rng.integers(0, E, B), rng.integers(0, R, B), rng.integers(0, E, B)], axis=1)
    corrupt_head = rng.random((B, 1)) < 0.5
    draws = rng.integers(0, E, (B, K))
    neg_h = np.where(corrupt_head, draws, triples[:, :1])
    neg_t = np.where(corrupt_head, triples[:, 2:], draws)
    return params, triples, neg_h, neg_t


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def hand_gradient(params, triples, neg_h, neg_t):
    """The formula above, in numpy."""
    ent, rel = params["entity"], params["relation"]
    h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
    d_pos = ent[h] + rel[r] - ent[t]  # (B, D)
    d_neg = ent[neg_h] + rel[r][:, None, :] - ent[neg_t]  # (B, K, D)
    s_pos = GAMMA - np.abs(d_pos).sum(-1)
    s_neg = GAMMA - np.abs(d_neg).sum(-1)
    w = np.exp(ALPHA * s_neg - (ALPHA * s_neg).max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    g_pos = (_sigmoid(-s_pos) / 2)[:, None] * np.sign(d_pos) / B  # dL/dd+
    g_neg = (-w * _sigmoid(s_neg) / 2)[..., None] * np.sign(d_neg) / B  # dL/dd_k
    g_ent, g_rel = np.zeros_like(ent), np.zeros_like(rel)
    np.add.at(g_ent, h, g_pos)
    np.add.at(g_ent, t, -g_pos)
    np.add.at(g_rel, r, g_pos + g_neg.sum(1))
    np.add.at(g_ent, neg_h.ravel(), g_neg.reshape(-1, D))
    np.add.at(g_ent, neg_t.ravel(), -g_neg.reshape(-1, D))
    return {"entity": g_ent, "relation": g_rel}


def _autodiff(detach: bool):
    params, triples, neg_h, neg_t = _problem()
    model = kge.KGEModel("transe", dim=D, gamma=GAMMA, p=1)

    def loss(p):
        r = triples[:, 1]
        pos = kge.score(model, p, triples[:, 0], r, triples[:, 2])
        neg = kge.score(model, p, neg_h, r[:, None], neg_t)
        if detach:
            per = kge_losses.loss_from_scores(pos, neg, loss="nssa", temperature=ALPHA)
        else:
            w = jax.nn.softmax(ALPHA * neg, axis=-1)  # deliberately not detached
            per = kge_losses.negative_sampling_loss(pos_scores_B=pos, neg_scores_BxK=neg, weights_BxK=w)
        return per.mean()

    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        auto = jax.tree.map(np.asarray, jax.grad(loss)(p64))
    return hand_gradient(params, triples, neg_h, neg_t), auto


def checks() -> list[Check]:
    shapes = f"entity:({E},{D}) relation:({R},{D}) batch {B} x {K} negatives"
    return [
        Check("TransE-L1 self-adversarial NSSA loss: d/d(entity, relation)", "backprop", shapes,
              lambda: _autodiff(detach=True), rtol=1e-9),
        Check("TransE-L1 NSSA loss with weights NOT detached (hand formula must fail)", "backprop", shapes,
              lambda: _autodiff(detach=False), rtol=1e-9, expect_fail=True),
    ]
