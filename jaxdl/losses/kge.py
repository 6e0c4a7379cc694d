"""Knowledge-graph embedding losses, and the training objective that samples negatives.

Pure losses on scores (higher = more plausible), per positive, shape (B,):

    margin ranking           mean_k max(0, margin - s(pos) + s(neg_k))
    negative sampling        -(log sigma(s(pos)) + sum_k w_k log sigma(-s(neg_k))) / 2
      uniform weights        w_k = 1 / K
      self-adversarial       w_k = stop_gradient(softmax_k(alpha * s(neg_k)))   (Sun et al., 2019)

For TransE/RotatE the score already contains the margin gamma (s = gamma - distance), so
the negative-sampling loss is exactly the -log sigma(gamma - d) - sum w log sigma(d - gamma)
of Sun et al. (2019), and PyKEEN's NSSA loss with margin = gamma. The 1/2 follows Sun et
al.'s code (KnowledgeGraphEmbedding: the mean of the positive and the negative part).
Self-adversarial weights are constants for the gradient: harder negatives count more, but
no gradient flows through their weights; alpha -> 0 gives uniform weights (both tested).

The N3 regulariser (Lacroix et al., 2018), which ComplEx and DistMult need on large graphs,
adds weight * mean over the batch of sum_i |h_i|^3 + |r_i|^3 + |t_i|^3, |z| the modulus of a
complex entry (ComplEx, RotatE entities; RotatE's relations have modulus 1 and are left
out) or the absolute value of a real one (TransE, DistMult): `n3_penalty`, switched on in
`kge_loss` by `regularizer='n3'` and a `regularizer_weight`.

Masks: `mask_BxK` (False = a negative that is a known true triple, see
`jaxdl.data.kg.corrupt`) takes that negative out of the loss; `mask_B` (False = a padding
positive) takes the whole row out of the mean.

`kge_loss` composes sampling, scoring and a loss for one batch; `make_loss_fn` closes it
over the hyper-parameters as `loss_fn(params, batch, key)` for `make_train_step`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl.data.kg import Negatives, TripleSet, corrupt
from jaxdl.models import kge as kge_models

LOSSES = ("nssa", "ns", "margin")
REGULARIZERS = ("none", "n3")


def _masked_softmax(logits_BxK, mask_BxK=None):
    if mask_BxK is None:
        return jax.nn.softmax(logits_BxK, axis=-1)
    w = jax.nn.softmax(jnp.where(mask_BxK, logits_BxK, -jnp.inf), axis=-1)
    return jnp.where(mask_BxK, w, 0.0)  # a row with every negative masked gets all-zero weights


def uniform_weights(neg_scores_BxK, mask_BxK=None):
    """1/K per negative (1/#unmasked where masked)."""
    return _masked_softmax(jnp.zeros_like(neg_scores_BxK), mask_BxK)


def self_adversarial_weights(neg_scores_BxK, *, temperature: float, mask_BxK=None):
    """stop_gradient(softmax(temperature * scores)) over the K negatives of each positive."""
    return jax.lax.stop_gradient(_masked_softmax(temperature * neg_scores_BxK, mask_BxK))


def negative_sampling_loss(*, pos_scores_B, neg_scores_BxK, weights_BxK):
    """Per positive: -(log sigma(pos) + sum_k w_k log sigma(-neg_k)) / 2 (stable log_sigmoid)."""
    positive = jax.nn.log_sigmoid(pos_scores_B)
    negative = (weights_BxK * jax.nn.log_sigmoid(-neg_scores_BxK)).sum(-1)
    return -(positive + negative) / 2


def margin_ranking_loss(*, pos_scores_B, neg_scores_BxK, margin: float, mask_BxK=None):
    """Per positive: mean over its (unmasked) negatives of max(0, margin - pos + neg)."""
    hinge = jax.nn.relu(margin - pos_scores_B[:, None] + neg_scores_BxK)
    return (hinge * uniform_weights(neg_scores_BxK, mask_BxK)).sum(-1)


def loss_from_scores(pos_scores_B, neg_scores_BxK, *, loss: str = "nssa", temperature: float = 1.0,
                     margin: float = 1.0, mask_BxK=None):
    """Per-positive loss (B,) of the named kind: 'nssa' (self-adversarial), 'ns' (uniform
    negative sampling) or 'margin' (margin ranking)."""
    if loss == "nssa":
        w = self_adversarial_weights(neg_scores_BxK, temperature=temperature, mask_BxK=mask_BxK)
        return negative_sampling_loss(pos_scores_B=pos_scores_B, neg_scores_BxK=neg_scores_BxK, weights_BxK=w)
    if loss == "ns":
        w = uniform_weights(neg_scores_BxK, mask_BxK)
        return negative_sampling_loss(pos_scores_B=pos_scores_B, neg_scores_BxK=neg_scores_BxK, weights_BxK=w)
    if loss == "margin":
        return margin_ranking_loss(pos_scores_B=pos_scores_B, neg_scores_BxK=neg_scores_BxK, margin=margin,
                                   mask_BxK=mask_BxK)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def _masked_mean(x_B, mask_B=None, weight_B=None):
    """Mean over the rows where `mask_B` (all rows if None; 0 if none is marked), weighted
    by `weight_B` when given: sum(w x) / sum(w) over the marked rows."""
    if mask_B is None and weight_B is None:
        return x_B.mean()
    weight = jnp.ones_like(x_B) if mask_B is None else mask_B.astype(x_B.dtype)
    if weight_B is not None:
        weight = weight * weight_B.astype(x_B.dtype)
        return (x_B * weight).sum() / jnp.maximum(weight.sum(), jnp.finfo(x_B.dtype).tiny)
    return (x_B * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def _cubed_moduli(v_xD, complex_layout: bool):
    """sum_i |v_i|^3 over the last axis: moduli of [real half, imaginary half] entries, or
    absolute values. (|z|^3 = (|z|^2)^1.5 has gradient 3 |z| z, 0 at z = 0.)"""
    if not complex_layout:
        return (jnp.abs(v_xD) ** 3).sum(-1)
    re, im = jnp.split(v_xD, 2, axis=-1)
    return ((re * re + im * im) ** 1.5).sum(-1)


def n3_per_triple(model: kge_models.KGEModel, params, triples_Bx3):
    """(B,): |h|_3^3 + |r|_3^3 + |t|_3^3 of each triple (Lacroix et al., 2018), the norm
    taken over complex moduli for ComplEx and RotatE entities; RotatE's relations (unit
    rotations, a constant) are left out."""
    ent, rel = params["entity"], params["relation"]
    complex_entities = model.name in kge_models.COMPLEX_MODELS
    total_B = (_cubed_moduli(ent[triples_Bx3[:, 0]], complex_entities)
               + _cubed_moduli(ent[triples_Bx3[:, 2]], complex_entities))
    if model.name == "rotate":
        return total_B
    return total_B + _cubed_moduli(rel[triples_Bx3[:, 1]], model.name == "complex")


def n3_penalty(model: kge_models.KGEModel, params, triples_Bx3, mask_B=None):
    """The N3 regulariser of a batch: mean over its (unmasked) triples of `n3_per_triple`."""
    return _masked_mean(n3_per_triple(model, params, triples_Bx3), mask_B)


def batch_negatives(batch: dict, key, *, num_entities, num_negatives: int, corrupt_mode: str = "both",
                    known: TripleSet | None = None, shared: bool = False) -> Negatives:
    """The K negatives of each positive of `batch['triples']` (see `corrupt`). A batch may
    carry its own filter set ('known_key_N', 'known_tail_N', 'known_relations') and pool of
    replacements ('pool_E', 'pool_size'), e.g. one federated client's training triples and
    entities (`jaxdl.train.federated.negative_extras`); they take precedence over `known`.
    `shared`: one draw of K replacements for the whole batch (see `corrupt`)."""
    if "known_key_N" in batch:
        known = TripleSet(batch["known_key_N"], batch["known_tail_N"], batch["known_relations"])
    return corrupt(key, batch["triples"], num_entities=num_entities, num_negatives=num_negatives, mode=corrupt_mode,
                   known=known, pool_P=batch.get("pool_E"), pool_size=batch.get("pool_size"), shared=shared)


def kge_loss(model: kge_models.KGEModel, params, triples_Bx3, key, *, num_entities, num_negatives: int,
             loss: str = "nssa", temperature: float = 1.0, margin: float = 1.0, corrupt_mode: str = "both",
             known: TripleSet | None = None, mask_B=None, regularizer: str = "none",
             regularizer_weight: float = 0.0, negatives: Negatives | None = None, weight_B=None):
    """One batch: draw K negatives per positive from `key` (see `corrupt`; or take the
    given `negatives`), score positives and negatives, return (mean loss, metrics). `mask_B`
    marks real (not padding) rows; `weight_B` (e.g. `jaxdl.data.kg.subsampling_weights`)
    makes the loss a weighted mean over them. With `regularizer='n3'` the loss adds
    `regularizer_weight * n3_penalty` (reported unweighted as metrics['n3'])."""
    if negatives is None:
        negatives = corrupt(key, triples_Bx3, num_entities=num_entities, num_negatives=num_negatives,
                            mode=corrupt_mode, known=known)
    h, r, t = triples_Bx3[:, 0], triples_Bx3[:, 1], triples_Bx3[:, 2]
    pos_B = kge_models.score(model, params, h, r, t)
    neg_BxK = kge_models.score_corrupted(model, params, triples_Bx3, negatives.replacement_BxK,
                                         negatives.corrupt_head)
    per_positive = loss_from_scores(pos_B, neg_BxK, loss=loss, temperature=temperature, margin=margin,
                                    mask_BxK=negatives.mask_BxK)
    mean = lambda x_B: _masked_mean(x_B, mask_B)  # noqa: E731
    metrics = {"pos_score": mean(pos_B), "neg_score": mean(neg_BxK.mean(-1))}
    data_loss = _masked_mean(per_positive, mask_B, weight_B)
    if regularizer == "n3":
        penalty = n3_penalty(model, params, triples_Bx3, mask_B)
        metrics["n3"] = penalty
        return data_loss + regularizer_weight * penalty, metrics
    return data_loss, metrics


def make_loss_fn(model: kge_models.KGEModel, *, num_entities, num_negatives: int, loss: str = "nssa",
                 temperature: float = 1.0, margin: float = 1.0, corrupt_mode: str = "both",
                 known: TripleSet | None = None, regularizer: str = "none", regularizer_weight: float = 0.0,
                 shared_negatives: bool = False):
    """`loss_fn(params, batch, key) -> (loss, metrics)` for `make_train_step`; `batch` is
    {'triples': int32 (B, 3)} with an optional {'mask': bool (B,)} for padded rows and
    {'weight': (B,)} for a weighted mean over the triples. `shared_negatives`: one draw of
    K negatives per batch instead of per positive (see `jaxdl.data.kg.corrupt`)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if regularizer not in REGULARIZERS:
        raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {regularizer!r}")
    if not regularizer_weight >= 0 or (regularizer == "none" and regularizer_weight != 0):
        raise ValueError(f"regularizer_weight must be >= 0, and 0 without a regularizer; got {regularizer_weight} "
                         f"with regularizer {regularizer!r}")

    def loss_fn(params, batch, key):
        negatives = batch_negatives(batch, key, num_entities=num_entities, num_negatives=num_negatives,
                                    corrupt_mode=corrupt_mode, known=known, shared=shared_negatives)
        return kge_loss(model, params, batch["triples"], key, negatives=negatives, num_entities=num_entities,
                        num_negatives=num_negatives, loss=loss, temperature=temperature, margin=margin,
                        corrupt_mode=corrupt_mode, known=known, mask_B=batch.get("mask"),
                        regularizer=regularizer, regularizer_weight=regularizer_weight, weight_B=batch.get("weight"))

    return loss_fn
