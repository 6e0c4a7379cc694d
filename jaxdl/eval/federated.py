"""Filtered link prediction for every client of a federation at once.

Each client ranks the answers to its own valid/test triples, filtering with the triples it
knows (its own train, valid and test; see `jaxdl.eval.link_prediction` for the
tie-averaged rank), under one of two protocols:

    standard   heads and tails, against every entity (the field's filtered protocol)
    reference  tails only, against the entities of the client's training triples (the
               FedE reference code's protocol; easier: fewer candidates, no head queries)
 Clients are padded to a common
number of queries (masked) and ranked by one jitted program, `vmap`ped over the client
axis -- over stacked per-client parameters (isolation, FedE) or over one shared model
(collection). The overall figure weights each client's metric by its number of triples in
the split, as the FedE paper does (equivalently: every rank of every client pooled).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.federated import ClientData, pad_stack
from jaxdl.data.kg import filter_masks
from jaxdl.eval.link_prediction import HITS_AT, default_batch_size, ranking_metrics, ranks_from_scores
from jaxdl.models import kge as kge_models

METRICS = ("mrr", "mr", *(f"hits@{k}" for k in HITS_AT))
PROTOCOLS = ("standard", "reference")


@dataclass(frozen=True)
class ModelScores:
    """A KGE model's scores of every candidate: what `make_client_evaluator` ranks with (any
    hashable object with these three methods will do, e.g. a fusion of two models)."""

    model: kge_models.KGEModel

    def prepare(self, params):
        """What `tails`/`heads` read, computed once per evaluation (not per chunk)."""
        return params, kge_models.entity_columns(params)

    def tails(self, prepared, h_B, r_B):
        params, entity_DxE = prepared
        return kge_models.score_all_tails(self.model, params, h_B, r_B, entity_DxE)

    def heads(self, prepared, r_B, t_B):
        params, entity_DxE = prepared
        return kge_models.score_all_heads(self.model, params, r_B, t_B, entity_DxE)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _rank_clients(scores, shared: bool, tails_only: bool, params, triples_CxMxBx3, tail_filter_CxMxBxE,
                  head_filter_CxMxBxE, outside_CxE):
    """ranks (C, M, B, 2): per client, per chunk of B queries, (tail rank, head rank); with
    `tails_only` (C, M, B, 1). `outside_CxE`: candidates left out for every query of a client."""

    def one_client(p, triples, tail_f, head_f, outside_E):
        p = scores.prepare(p)

        def chunk(q):
            triples_Bx3, tail_f_BxE, head_f_BxE = q
            h, r, t = triples_Bx3[:, 0], triples_Bx3[:, 1], triples_Bx3[:, 2]
            tail = ranks_from_scores(scores.tails(p, h, r), t, tail_f_BxE | outside_E)
            if tails_only:
                return tail[:, None]
            head = ranks_from_scores(scores.heads(p, r, t), h, head_f_BxE | outside_E)
            return jnp.stack([tail, head], axis=-1)

        return jax.lax.map(chunk, (triples, tail_f, head_f))

    return jax.vmap(one_client, in_axes=(None if shared else 0, 0, 0, 0, 0))(
        params, triples_CxMxBx3, tail_filter_CxMxBxE, head_filter_CxMxBxE, outside_CxE)


def weighted_overall(per_client: dict[str, np.ndarray], sizes_C: np.ndarray) -> dict[str, float]:
    """Each metric averaged over clients weighted by their number of evaluated triples."""
    w = np.asarray(sizes_C, np.float64)
    return {k: float((w * np.asarray(v, np.float64)).sum() / max(w.sum(), 1.0)) for k, v in per_client.items()}


def _query_block(parts: list[np.ndarray], known: list[np.ndarray], length: int, num_entities: int,
                 batch_size: int):
    """One block of queries, every client's `parts[i]` padded to `length` (a multiple of
    `batch_size`): (triples (C, n, B, 3), tail filter (C, n, B, E), head filter (C, n, B, E))
    on device, each client's filter built from its `known` triples, and the host mask (C, length)."""
    C, E, B = len(parts), num_entities, batch_size
    triples, mask = pad_stack([p if len(p) else np.zeros((0, 3), np.int32) for p in parts], length)
    tail_f = np.zeros((C, length, E), bool)
    head_f = np.zeros((C, length, E), bool)
    for i, p in enumerate(parts):
        if len(p):
            tail_f[i, : len(p)], head_f[i, : len(p)] = filter_masks(known[i], p, E)
    n_chunks = length // B
    return (jnp.asarray(triples.reshape(C, n_chunks, B, 3)), jnp.asarray(tail_f.reshape(C, n_chunks, B, E)),
            jnp.asarray(head_f.reshape(C, n_chunks, B, E)), mask)


def _client_metrics(ranks: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-client ranking metrics (each a float64 (C,) array) from a split's blocks of
    (C, q, 2) ranks and their (C, q) masks."""
    ranks_CxQx2 = np.concatenate(ranks, axis=1)
    mask_CxQx2 = np.repeat(np.concatenate(masks, axis=1)[..., None], ranks_CxQx2.shape[-1], axis=-1)
    per_client = jax.vmap(ranking_metrics)(ranks_CxQx2, mask_CxQx2)
    return {k: np.asarray(v, np.float64) for k, v in per_client.items()}


def make_client_evaluator(model: kge_models.KGEModel | ModelScores, clients: list[ClientData], num_entities: int, *,
                          splits=("valid", "test"), global_relations: bool = False, batch_size: int | None = None,
                          block_bytes: int = 1 << 28, protocol: str = "standard"):
    """`evaluate(params, *, shared=False, only=None) -> {split: {'sizes': (C,), metric: (C,), ...}}`.

    clients: the clients whose triples are ranked, in stack order.
    global_relations: rank with global relation ids (a collection model) instead of the
        clients' local ones; the filter sets use the same ids.
    params: stacked per-client params (leading axis >= C; extra padding clients ignored)
        or, with shared=True, one model used by every client.
    only: the splits to rank this call (default: all of `splits`).
    protocol: 'standard' or 'reference' (see the module docstring).
    model: a KGEModel, or any scorer with `tails`/`heads` like `ModelScores` (then give
        `batch_size`).
    Filters are built on the host once and kept on device when a split's two (C, Q, E)
    boolean masks fit in `block_bytes`; otherwise they are rebuilt per block of queries.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    E = int(num_entities)
    C = len(clients)
    scores = ModelScores(model) if isinstance(model, kge_models.KGEModel) else model
    tails_only = protocol == "reference"
    outside_CxE = np.zeros((C, E), bool)
    if tails_only:  # candidates: the entities of the client's training triples
        for i, c in enumerate(clients):
            outside_CxE[i] = True
            outside_CxE[i, c.entities()] = False
    outside_CxE = jnp.asarray(outside_CxE)
    B = batch_size or default_batch_size(E, scores.model.entity_dim)
    convert = (lambda c, t: c.to_global(t)) if global_relations else (lambda c, t: t)
    known = [convert(c, c.known()) for c in clients]
    prepared = {}
    queries = {name: [convert(c, c.split(name)) for c in clients] for name in splits}
    # One chunk count for every split, so that valid and test share one compiled ranking.
    M = max(1, max(-(-len(q) // B) for qs in queries.values() for q in qs))
    chunks_per_block = max(1, min(M, block_bytes // max(1, 2 * C * B * E)))
    for name in splits:
        sizes = np.array([len(q) for q in queries[name]], np.int64)
        prepared[name] = (queries[name], sizes, M, chunks_per_block)
    cache: dict = {}

    def block(name, start_chunk):
        key = (name, start_chunk)
        if key in cache:
            return cache[key]
        queries, sizes, M, per_block = prepared[name]
        lo, hi = start_chunk * B, min(M, start_chunk + per_block) * B
        arrays = _query_block([q[lo:hi] for q in queries], known, hi - lo, E, B)
        if per_block >= M:  # the whole split in one block: keep it on device
            cache[key] = arrays
        return arrays

    def evaluate(params, *, shared: bool = False, only: tuple[str, ...] | None = None) -> dict:
        if not shared:
            params = jax.tree.map(lambda a: a[:C], params)
        out = {}
        for name, (queries, sizes, M, per_block) in prepared.items():
            if only is not None and name not in only:
                continue
            ranks, masks = [], []
            for start in range(0, M, per_block):
                triples, tail_f, head_f, mask = block(name, start)
                r = np.asarray(_rank_clients(scores, shared, tails_only, params, triples, tail_f, head_f,
                                             outside_CxE))
                ranks.append(r.reshape(C, -1, r.shape[-1]))
                masks.append(mask)
            out[name] = {"sizes": sizes, **_client_metrics(ranks, masks)}
        return out

    return evaluate


def flat_metrics(results: dict, *, prefix: str = "") -> dict:
    """{split: per-client arrays} -> flat floats: '<split>_<metric>' (size-weighted over
    clients) and '<split>_<metric>_client<i>' (each client; None where it has no triples)."""
    out = {}
    for name, r in results.items():
        sizes = r["sizes"]
        per_client = {k: v for k, v in r.items() if k != "sizes"}
        for metric, value in weighted_overall(per_client, sizes).items():
            out[f"{prefix}{name}_{metric}"] = value
        for metric in METRICS:
            for i, v in enumerate(per_client[metric]):
                out[f"{prefix}{name}_{metric}_client{i}"] = float(v) if sizes[i] else None
    return out
