"""Model fusion, the FedE paper's fourth setting: per client, a learned combination of the
scores of its Isolation model and of its FedE model,

    s(h, r, t) = w_iso * s_iso(h, r, t) + w_fed * s_fed(h, r, t) + b,

three numbers per client fitted on the client's validation triples with both embedding
models frozen, as the FedE reference code does (`fusion.py`: a Linear(2, 1) over the two
scores, margin ranking loss with margin 10 against 256 tail corruptions drawn from the
client's entities and filtered against its validation tails, Adam lr 0.01, 500 epochs,
batches of 512). Here the corruptions are drawn once and both models' scores of them
computed once (the models are frozen, so an epoch only re-weights fixed scores); the
reference redraws them every epoch. Weights start at (1/2, 1/2) and b at 0: the plain
average of the two scores. (b shifts every candidate alike, so it changes no rank, and
under the margin loss its gradient is zero; it is kept as the reference's Linear(2, 1).)

Every client is fitted at once (`jax.vmap` over the client axis, one `lax.scan` over the
steps); `FusionScores` ranks with the fused score (jaxdl.eval.federated).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.data.federated import ClientData, pad_stack
from jaxdl.data.kg import TripleSet, corrupt, triple_set
from jaxdl.models import kge as kge_models

MARGIN, NEGATIVES, LR, EPOCHS, BATCH = 10.0, 256, 0.01, 500, 512  # the reference's fusion settings


class FusionData(NamedTuple):
    """Both frozen models' scores of each client's validation triples and of their fixed
    corruptions, stacked over clients: pos (C, Q, 2), neg (C, Q, K, 2), masks."""

    pos_CxQx2: jax.Array
    neg_CxQxKx2: jax.Array
    neg_mask_CxQxK: jax.Array  # False: a corruption that is a validation triple
    mask_CxQ: jax.Array  # False: padding rows


def init_fusion(num_clients: int) -> dict:
    """{'w': (C, 2) = 1/2, 'b': (C,) = 0}: every client starts from the plain average."""
    return {"w": jnp.full((num_clients, 2), 0.5, jnp.float32), "b": jnp.zeros((num_clients,), jnp.float32)}


def fuse(params_c: dict, scores_x2):
    """w . (s_iso, s_fed) + b for one client's stacked pair of scores (..., 2)."""
    return scores_x2 @ params_c["w"] + params_c["b"]


def fusion_loss(params_c: dict, pos_Bx2, neg_BxKx2, neg_mask_BxK, mask_B, *, margin: float = MARGIN):
    """Mean over real (row, negative) pairs of max(0, margin - s(pos) + s(neg))."""
    hinge = jax.nn.relu(margin - fuse(params_c, pos_Bx2)[:, None] + fuse(params_c, neg_BxKx2))
    weight = neg_mask_BxK & mask_B[:, None]
    return (hinge * weight).sum() / jnp.maximum(weight.sum(), 1)


def fusion_data(model_iso: kge_models.KGEModel, params_iso: dict, model_fed: kge_models.KGEModel, params_fed: dict,
                clients: list[ClientData], num_entities: int, key, *, num_negatives: int = NEGATIVES) -> FusionData:
    """Score every client's validation triples and `num_negatives` tail corruptions of each
    (drawn from the client's entities, those forming a validation triple masked) with both
    models. params_*: stacked per client (leading axis >= len(clients))."""
    valid, mask = pad_stack([c.valid if len(c.valid) else np.zeros((0, 3), np.int32) for c in clients])
    held = [c.entities().astype(np.int32) for c in clients]
    pool, _ = pad_stack([h[:, None] for h in held], num_entities)
    sets = [triple_set(c.valid, num_entities, max(c.num_relations, 1), size=valid.shape[1]) for c in clients]
    pair_key = jnp.stack([s.pair_key_N for s in sets])
    tail = jnp.stack([s.tail_N for s in sets])
    relations = jnp.asarray([max(c.num_relations, 1) for c in clients], jnp.int32)

    def one(p_iso, p_fed, triples_Qx3, pool_E, pool_size, key_pair, key_tail, num_relations, key):
        known = TripleSet(key_pair, key_tail, num_relations)
        neg = corrupt(key, triples_Qx3, num_entities=num_entities, num_negatives=num_negatives, mode="tail",
                      known=known, pool_P=pool_E, pool_size=pool_size)
        h, r, t = triples_Qx3[:, 0], triples_Qx3[:, 1], triples_Qx3[:, 2]

        def both(model, p):
            return (kge_models.score(model, p, h, r, t),
                    kge_models.score_corrupted(model, p, triples_Qx3, neg.replacement_BxK, neg.corrupt_head))

        (pos_i, neg_i), (pos_f, neg_f) = both(model_iso, p_iso), both(model_fed, p_fed)
        return jnp.stack([pos_i, pos_f], -1), jnp.stack([neg_i, neg_f], -1), neg.mask_BxK

    C, Q = valid.shape[:2]
    chunk = min(Q, 128)
    n_chunks = -(-Q // chunk)
    valid = np.pad(valid, ((0, 0), (0, n_chunks * chunk - Q), (0, 0)))

    def one_client(p_iso, p_fed, triples_Qx3, *rest):  # the client's queries a chunk at a time (memory: chunk x K x D)
        keys = jax.random.split(rest[-1], n_chunks)
        out = jax.lax.map(lambda a: one(p_iso, p_fed, a[0], *rest[:-1], a[1]),
                          (triples_Qx3.reshape(n_chunks, chunk, 3), keys))
        return jax.tree.map(lambda x: x.reshape(n_chunks * chunk, *x.shape[2:])[:Q], out)

    keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(C))
    first = lambda a: a[:C]  # noqa: E731
    pos, neg, neg_mask = jax.jit(jax.vmap(one_client))(
        jax.tree.map(first, params_iso), jax.tree.map(first, params_fed), jnp.asarray(valid),
        jnp.asarray(pool[..., 0]), jnp.asarray([max(1, len(h)) for h in held], jnp.int32), pair_key, tail, relations,
        keys)
    return FusionData(pos, neg, neg_mask, jnp.asarray(mask))


def train_fusion(data: FusionData, *, epochs: int = EPOCHS, batch_size: int = BATCH, lr: float = LR,
                 margin: float = MARGIN) -> tuple[dict, jax.Array]:
    """Fit every client's fusion on its scores: `epochs` passes of batches of `batch_size`
    rows in order (as the reference), Adam. Returns (params {'w': (C, 2), 'b': (C,)},
    loss per epoch (epochs, C))."""
    C, Q = data.mask_CxQ.shape
    S = max(1, -(-Q // batch_size))
    pad = S * batch_size - Q

    def batches(a):  # (C, Q, ...) -> (S, C, B, ...), padding rows masked out
        a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
        return jnp.moveaxis(a.reshape(C, S, batch_size, *a.shape[2:]), 1, 0)

    stacked = jax.tree.map(batches, data)
    optimizer = optax.adam(lr)

    def grad_c(params_c, pos, neg, neg_mask, mask):
        return jax.value_and_grad(fusion_loss)(params_c, pos, neg, neg_mask, mask, margin=margin)

    @jax.jit
    def fit(params):
        def step(carry, batch):
            params, opt_state = carry
            loss_C, grads = jax.vmap(grad_c)(params, batch.pos_CxQx2, batch.neg_CxQxKx2, batch.neg_mask_CxQxK,
                                             batch.mask_CxQ)
            updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss_C

        def epoch(carry, _):
            carry, losses_SxC = jax.lax.scan(step, carry, stacked)
            return carry, losses_SxC.mean(0)

        (params, _), losses = jax.lax.scan(epoch, (params, jax.vmap(optimizer.init)(params)), None, length=epochs)
        return params, losses

    return fit(init_fusion(C))


@dataclass(frozen=True)
class FusionScores:
    """Fused scores of every candidate, for ranking (jaxdl.eval.federated): params are one
    client's {'isolation': ..., 'fede': ..., 'fusion': {'w': (2,), 'b': ()}}."""

    isolation: kge_models.KGEModel
    fede: kge_models.KGEModel

    def prepare(self, params):
        """Each model's entity columns, once per evaluation."""
        return {**params, "columns": {k: kge_models.entity_columns(params[k]) for k in ("isolation", "fede")}}

    def tails(self, prepared, h_B, r_B):
        p, cols = prepared, prepared["columns"]
        scores = jnp.stack([kge_models.score_all_tails(self.isolation, p["isolation"], h_B, r_B, cols["isolation"]),
                            kge_models.score_all_tails(self.fede, p["fede"], h_B, r_B, cols["fede"])], -1)
        return fuse(p["fusion"], scores)

    def heads(self, prepared, r_B, t_B):
        p, cols = prepared, prepared["columns"]
        scores = jnp.stack([kge_models.score_all_heads(self.isolation, p["isolation"], r_B, t_B, cols["isolation"]),
                            kge_models.score_all_heads(self.fede, p["fede"], r_B, t_B, cols["fede"])], -1)
        return fuse(p["fusion"], scores)
