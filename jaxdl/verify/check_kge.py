"""Hand-derived gradients of the TransE and ComplEx (+ N3) negative-sampling losses.

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
(no `stop_gradient`) and must fail: the hand formula holds only with detached weights. A
third draws one set of K replacements for the whole batch (`corrupt(shared=True)`): the
formula is unchanged, and the training path's distance table with its written-out gradient
(`jaxdl.models.kge.pairwise_distances`) must match it.

ComplEx (Trouillon et al., 2016) with the N3 regulariser (Lacroix et al., 2018). Complex
vectors are stored as [real half, imaginary half]; s = Re(sum_i h_i r_i conj(t_i)) is

    s = sum_i re_h re_r re_t + im_h re_r im_t + re_h im_r im_t - im_h im_r re_t,

so, writing a real gradient in the same [re, im] layout,

    ds/d(re_h) = re_r re_t + im_r im_t,   ds/d(im_h) = re_r im_t - im_r re_t   i.e. conj(r) o t
    ds/d(re_r) = re_h re_t + im_h im_t,   ds/d(im_r) = re_h im_t - im_h re_t   i.e. conj(h) o t
    ds/d(re_t) = re_h re_r - im_h im_r,   ds/d(im_t) = re_h im_r + im_h re_r   i.e. h o r

(s is linear in each of h, r, t). The loss is the training loss `kge_loss` itself: the same
key draws the same negatives, each sharing its positive's relation and one of its
entities; dL/ds+ = -sigma(-s+) / 2 and dL/ds_k = w_k sigma(s_k) / 2 as above. The batch
mean runs over the B' unmasked rows (a padding row contributes nothing). The N3 term adds
lambda / B' * sum over each triple's h, r, t of sum_i |z_i|^3; with z = a + ib,
|z|^3 = (a^2 + b^2)^(3/2), so

    d|z|^3/da = 3 |z| a,   d|z|^3/db = 3 |z| b,   i.e. the real gradient 3 |z| z,

added to each of the triple's three rows (0 at z = 0). A last check applies N3 to the real
and imaginary parts separately (3 |a| a, 3 |b| b: DistMult's N3 on the stacked reals) and
must fail: N3 is a norm of the complex moduli.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.kg import corrupt
from jaxdl.losses import kge as kge_losses
from jaxdl.models import kge
from jaxdl.verify.registry import Check

E, R, D, B, K = 7, 3, 5, 4, 6
GAMMA, ALPHA = 2.0, 1.5
LAMBDA = 0.3  # N3 weight


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

    return hand_gradient(params, triples, neg_h, neg_t), _float64_grad(loss, params)


def _shared_autodiff():
    """The same loss with one draw of K replacements shared by the batch, scored by the
    training path (`score_corrupted` with (1, K) replacements: the L1 distance table and its
    written-out gradient) against the hand formula on the spelled-out negatives."""
    params, triples, _, _ = _problem()
    rng = np.random.default_rng(20240902)
    corrupt_head, draws_1xK = rng.random((B, 1)) < 0.5, rng.integers(0, E, (1, K))
    neg_h = np.where(corrupt_head, draws_1xK, triples[:, :1])
    neg_t = np.where(corrupt_head, triples[:, 2:], draws_1xK)
    model = kge.KGEModel("transe", dim=D, gamma=GAMMA, p=1)

    def loss(p):
        pos = kge.score(model, p, triples[:, 0], triples[:, 1], triples[:, 2])
        neg = kge.score_corrupted(model, p, jnp.asarray(triples), jnp.asarray(draws_1xK), jnp.asarray(corrupt_head))
        return kge_losses.loss_from_scores(pos, neg, loss="nssa", temperature=ALPHA).mean()

    return hand_gradient(params, triples, neg_h, neg_t), _float64_grad(loss, params)


def _float64_grad(loss, params):
    """jax.grad of `loss` at `params` in float64 (x64 scoped), as numpy arrays."""
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        return jax.tree.map(np.asarray, jax.grad(loss)(p64))


# ---------------------------------------------------------------------------------------
# ComplEx and N3
# ---------------------------------------------------------------------------------------
COMPLEX = kge.KGEModel("complex", dim=D)
MASK_B = np.array([True, True, False, True])  # one padding row


def _complex_problem():
    rng = np.random.default_rng(20240902)
    params = {"entity": rng.normal(size=(E, 2 * D)), "relation": rng.normal(size=(R, 2 * D))}
    triples = np.stack([rng.integers(0, E, B), rng.integers(0, R, B), rng.integers(0, E, B)], axis=1)
    return params, triples


def _split(v):
    return v[..., :D], v[..., D:]


def _product(a, b, conj_a=False):
    """a o b (conj(a) o b) in the [re, im] layout."""
    (re_a, im_a), (re_b, im_b) = _split(a), _split(b)
    im_a = -im_a if conj_a else im_a
    return np.concatenate([re_a * re_b - im_a * im_b, re_a * im_b + im_a * re_b], -1)


def complex_score_gradients(h, r, t):
    """(ds/dh, ds/dr, ds/dt) of s = Re<h, r, conj(t)>: conj(r) o t, conj(h) o t, h o r."""
    return _product(r, t, conj_a=True), _product(h, t, conj_a=True), _product(h, r)


def n3_gradient(v, *, per_part: bool = False):
    """d sum_i |z_i|^3 / dv = 3 |z| z per complex entry (per_part: 3 |x| x per real, wrong)."""
    if per_part:
        return 3 * np.abs(v) * v
    re, im = _split(v)
    modulus = np.sqrt(re * re + im * im)
    return 3 * np.concatenate([modulus, modulus], -1) * v


def hand_complex_gradient(params, triples, neg_h, neg_t, *, weight: float, per_part: bool = False):
    """The ComplEx NSSA (+ weight * N3) gradient above, in numpy, over the rows of MASK_B."""
    ent, rel = params["entity"], params["relation"]
    h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
    complex_score = lambda a, b, c: (_product(a, b) * c).sum(-1)  # noqa: E731  <h o r, t>_R
    s_pos = complex_score(ent[h], rel[r], ent[t])  # (B,)
    s_neg = complex_score(ent[neg_h], rel[r][:, None, :], ent[neg_t])  # (B, K)
    w = np.exp(ALPHA * s_neg - (ALPHA * s_neg).max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    rows = MASK_B / MASK_B.sum()  # the masked batch mean
    g_pos = -_sigmoid(-s_pos) / 2 * rows  # dL/ds+
    g_neg = w * _sigmoid(s_neg) / 2 * rows[:, None]  # dL/ds_k
    g_ent, g_rel = np.zeros_like(ent), np.zeros_like(rel)
    dh, dr, dt = complex_score_gradients(ent[h], rel[r], ent[t])
    np.add.at(g_ent, h, g_pos[:, None] * dh)
    np.add.at(g_rel, r, g_pos[:, None] * dr)
    np.add.at(g_ent, t, g_pos[:, None] * dt)
    dh, dr, dt = complex_score_gradients(ent[neg_h], rel[r][:, None, :], ent[neg_t])
    np.add.at(g_ent, neg_h.ravel(), (g_neg[..., None] * dh).reshape(-1, 2 * D))
    np.add.at(g_rel, r, (g_neg[..., None] * dr).sum(1))
    np.add.at(g_ent, neg_t.ravel(), (g_neg[..., None] * dt).reshape(-1, 2 * D))
    scale = (weight * rows)[:, None]
    np.add.at(g_ent, h, scale * n3_gradient(ent[h], per_part=per_part))
    np.add.at(g_rel, r, scale * n3_gradient(rel[r], per_part=per_part))
    np.add.at(g_ent, t, scale * n3_gradient(ent[t], per_part=per_part))
    return {"entity": g_ent, "relation": g_rel}


def _complex_autodiff(*, weight: float, per_part: bool = False):
    params, triples = _complex_problem()
    regularizer = "n3" if weight else "none"
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        key = jax.random.key(3)
        neg = corrupt(key, jnp.asarray(triples), num_entities=E, num_negatives=K)

        def loss(p):
            return kge_losses.kge_loss(COMPLEX, p, jnp.asarray(triples), key, num_entities=E, num_negatives=K,
                                       temperature=ALPHA, mask_B=jnp.asarray(MASK_B), regularizer=regularizer,
                                       regularizer_weight=weight)[0]

        auto = jax.tree.map(np.asarray, jax.grad(loss)(p64))
        neg_h, neg_t = np.asarray(neg.heads_BxK), np.asarray(neg.tails_BxK)
    return hand_complex_gradient(params, triples, neg_h, neg_t, weight=weight, per_part=per_part), auto


def _n3_autodiff():
    params, triples = _complex_problem()
    auto = _float64_grad(lambda p: LAMBDA * kge_losses.n3_penalty(COMPLEX, p, jnp.asarray(triples)), params)
    g_ent, g_rel = np.zeros_like(params["entity"]), np.zeros_like(params["relation"])
    ent, rel = params["entity"], params["relation"]
    for side in (0, 2):
        np.add.at(g_ent, triples[:, side], LAMBDA / B * n3_gradient(ent[triples[:, side]]))
    np.add.at(g_rel, triples[:, 1], LAMBDA / B * n3_gradient(rel[triples[:, 1]]))
    return {"entity": g_ent, "relation": g_rel}, auto


def checks() -> list[Check]:
    shapes = f"entity:({E},{D}) relation:({R},{D}) batch {B} x {K} negatives"
    complex_shapes = f"entity:({E},2x{D}) relation:({R},2x{D}) batch {B} (1 padding) x {K} negatives"
    return [
        Check("TransE-L1 self-adversarial NSSA loss: d/d(entity, relation)", "backprop", shapes,
              lambda: _autodiff(detach=True), rtol=1e-9),
        Check("TransE-L1 NSSA loss with weights NOT detached (hand formula must fail)", "backprop", shapes,
              lambda: _autodiff(detach=False), rtol=1e-9, expect_fail=True),
        Check("TransE-L1 NSSA loss, K negatives shared by the batch: d/d(entity, relation)", "backprop", shapes,
              _shared_autodiff, rtol=1e-9),
        Check("ComplEx self-adversarial NSSA training loss: d/d(entity, relation)", "backprop", complex_shapes,
              lambda: _complex_autodiff(weight=0.0), rtol=1e-9),
        Check("N3 penalty of ComplEx triples: d/d(entity, relation) = 3 |z| z", "backprop",
              f"entity:({E},2x{D}) relation:({R},2x{D}) batch {B}", _n3_autodiff, rtol=1e-9),
        Check("ComplEx NSSA + N3 training loss: d/d(entity, relation)", "backprop", complex_shapes,
              lambda: _complex_autodiff(weight=LAMBDA), rtol=1e-9),
        Check("ComplEx NSSA + N3 of real and imaginary parts apart (hand formula must fail)", "backprop",
              complex_shapes, lambda: _complex_autodiff(weight=LAMBDA, per_part=True), rtol=1e-9, expect_fail=True),
    ]
