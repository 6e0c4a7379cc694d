"""Filtered link prediction: rank each test triple's head and tail against every entity.

For a triple (h, r, t) the tail query scores (h, r, e) for every entity e and the head
query scores (e, r, t); candidates that form another known true triple (train, valid or
test) are left out (the filtered setting of Bordes et al., 2013), the target itself is
kept. The rank of the target among the remaining candidates is

    rank = 1 + #{score > s*} + #{score == s*} / 2

the mean of the optimistic (1 + #greater) and the pessimistic (1 + #greater + #equal)
rank, so a model that scores everything alike gets the middle rank, not rank 1. A NaN
target score gets the worst rank. Metrics over both directions (2Q ranks):
MRR = mean(1/rank), MR = mean(rank), Hits@k = fraction with rank <= k.

`ranks_from_scores` and `link_prediction_ranks` are pure (jit/vmap them, e.g. over
federated clients); `make_evaluator` wires a whole graph: filters built once on the
host, then batches of queries ranked in one jitted `lax.map` per block.
"""
from __future__ import annotations

import math
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import psutil

from jaxdl.data.kg import KG, filter_masks
from jaxdl.models import kge as kge_models

HITS_AT = (1, 3, 10)


def ranks_from_scores(scores_BxE, targets_B, filter_BxE=None):
    """Tie-averaged filtered rank (float, 1-based) of each row's target among its candidates.

    filter_BxE: True for candidates to leave out (other true answers); None keeps all.
    """
    E = scores_BxE.shape[-1]
    target_B = jnp.take_along_axis(scores_BxE, targets_B[:, None], axis=-1)
    others = jnp.arange(E)[None, :] != targets_B[:, None]
    if filter_BxE is not None:
        others = others & ~filter_BxE
    greater = (others & (scores_BxE > target_B)).sum(-1)
    equal = (others & (scores_BxE == target_B)).sum(-1)
    rank = 1.0 + greater + equal / 2.0
    worst = 1.0 + others.sum(-1)
    return jnp.where(jnp.isnan(target_B[:, 0]), worst, rank).astype(jnp.float32)


def link_prediction_ranks(model: kge_models.KGEModel, params, triples_Bx3, tail_filter_BxE=None,
                          head_filter_BxE=None, entity_DxE=None):
    """(tail_rank_B, head_rank_B): ranks of t in (h, r, ?) and of h in (?, r, t).
    `entity_DxE`: `kge_models.entity_columns(params)`, given when ranking chunk after chunk."""
    h, r, t = triples_Bx3[:, 0], triples_Bx3[:, 1], triples_Bx3[:, 2]
    entity_DxE = kge_models.entity_columns(params) if entity_DxE is None else entity_DxE
    tail_ranks = ranks_from_scores(kge_models.score_all_tails(model, params, h, r, entity_DxE), t, tail_filter_BxE)
    head_ranks = ranks_from_scores(kge_models.score_all_heads(model, params, r, t, entity_DxE), h, head_filter_BxE)
    return tail_ranks, head_ranks


def ranking_metrics(ranks, mask=None) -> dict:
    """{'mrr', 'mr', 'hits@1', 'hits@3', 'hits@10'} over `ranks` (any shape); `mask` (same
    shape) False excludes padding. Returns jax scalars (vmap-friendly)."""
    ranks = jnp.asarray(ranks, jnp.float32)
    w = jnp.ones_like(ranks) if mask is None else jnp.asarray(mask, jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    out = {"mrr": (w / ranks).sum() / n, "mr": (w * ranks).sum() / n}
    for k in HITS_AT:
        out[f"hits@{k}"] = (w * (ranks <= k)).sum() / n
    return out


@partial(jax.jit, static_argnums=0)
def _rank_block(model, params, triples_CxBx3, tail_filter_CxBxE, head_filter_CxBxE):
    entity_DxE = kge_models.entity_columns(params)  # once, not per chunk

    def one(chunk):
        return jnp.stack(link_prediction_ranks(model, params, *chunk, entity_DxE=entity_DxE), axis=-1)

    return jax.lax.map(one, (triples_CxBx3, tail_filter_CxBxE, head_filter_CxBxE))


def default_batch_size(num_entities: int, entity_dim: int, *, floats: int = 1 << 22) -> int:
    """Queries per chunk so that a chunk's (B, E, D) broadcast stays near `floats` floats."""
    return max(1, min(1024, floats // max(1, num_entities * entity_dim)))


def fitted_batch_size(requested: int, num_entities: int, entity_dim: int) -> int:
    """`requested` queries per chunk, or fewer when a chunk's (B, E, D) broadcast (with its
    scores and filter masks) would not fit in half the memory available now -- evaluation
    adapts to the machine rather than failing (a notice says so)."""
    per_query = 4 * num_entities * (entity_dim + 4)
    fits = max(1, psutil.virtual_memory().available // 2 // per_query)
    if requested <= fits:
        return requested
    print(f"notice: --eval-batch-size {requested}: a chunk would need {requested * per_query / 2**30:.1f} GiB; "
          f"ranking {fits} queries at a time instead", file=sys.stderr)
    return int(fits)


def make_evaluator(model: kge_models.KGEModel, kg: KG, *, splits=("valid", "test"), batch_size: int | None = None,
                   known_triples=None, block_bytes: int = 1 << 27):
    """`evaluate(params) -> {'<split>_mrr', '<split>_mr', '<split>_hits@k'}` (floats).

    known_triples: the filter set (default: every split of `kg`). Filters are built on the
    host once when they fit in `block_bytes` (two bool (Q, E) masks), else per block.
    """
    E = kg.num_entities
    known = kg.all_triples() if known_triples is None else np.asarray(known_triples)
    B = fitted_batch_size(batch_size, E, model.entity_dim) if batch_size else default_batch_size(E, model.entity_dim)
    chunks_per_block = max(1, block_bytes // max(1, 2 * B * E))
    prepared = {}
    for name in splits:
        triples = kg.split(name)
        Q = len(triples)
        C = min(chunks_per_block, math.ceil(Q / B))  # chunks per block, the same for every block
        per_block = C * B
        blocks = []
        for start in range(0, Q, per_block):
            blocks.append((start, triples[start:start + per_block]))
        prepared[name] = (Q, C, blocks)
    cached: dict = {}

    def block_arrays(name, i, start, part, C):
        if (name, i) in cached:
            return cached[(name, i)]
        n = len(part)
        pad = C * B - n
        padded = np.concatenate([part, np.repeat(part[:1], pad, axis=0)]) if pad else part
        tail_f, head_f = filter_masks(known, padded, E)
        arrays = (jnp.asarray(padded.reshape(C, B, 3)), jnp.asarray(tail_f.reshape(C, B, E)),
                  jnp.asarray(head_f.reshape(C, B, E)))
        if len(prepared[name][2]) == 1:  # the whole split fits: keep it on device
            cached[(name, i)] = arrays
        return arrays

    def evaluate(params) -> dict:
        out = {}
        for name, (Q, C, blocks) in prepared.items():
            ranks = []
            for i, (start, part) in enumerate(blocks):
                r = _rank_block(model, params, *block_arrays(name, i, start, part, C))
                ranks.append(np.asarray(r).reshape(-1, 2)[: len(part)])
            all_ranks = np.concatenate(ranks).reshape(-1)
            for metric, value in ranking_metrics(all_ranks).items():
                out[f"{name}_{metric}"] = float(value)
        return out

    return evaluate
