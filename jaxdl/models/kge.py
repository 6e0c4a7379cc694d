"""Knowledge-graph embedding models as pure functions: TransE, RotatE, DistMult, ComplEx.

Parameters are a dict {'entity': E_NxDe, 'relation': R_RxDr}; hyper-parameters live in a
frozen, hashable `KGEModel` (usable as a static argument of `jax.jit`). A score is high
for a plausible triple:

    TransE   (Bordes et al., 2013)  s = gamma - ||h + r - t||_p            (p = 1 or 2)
    RotatE   (Sun et al., 2019)     s = gamma - sum_i |h_i * e^{i theta_i} - t_i|   (complex)
    DistMult (Yang et al., 2015)    s = sum_i h_i r_i t_i
    ComplEx  (Trouillon et al., 2016) s = Re(sum_i h_i r_i conj(t_i))   (complex)

`score(model, params, h, r, t)` takes integer id arrays that broadcast against each
other, so one function scores a batch of positives (B,), B x K negatives ((B, K) heads or
tails against (B, 1) relations) and one query against every entity ((B, 1) vs (1, E)).

Initialisation follows the reference code of Sun et al. (KnowledgeGraphEmbedding,
`model.py`): every embedding uniform on +-(gamma + epsilon) / dim with epsilon = 2; RotatE
entities have 2 * dim reals (real and imaginary halves) and its relation embeddings are
phases theta = r / (embedding_range / pi), i.e. uniform on [-pi, pi]. ComplEx entities and
relations both have 2 * dim reals [real half, imaginary half], drawn the same way (the
reference runs ComplEx with doubled entity and relation embeddings and this init).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax

MODELS = ("transe", "rotate", "distmult", "complex")
COMPLEX_MODELS = ("rotate", "complex")  # entity vectors hold [real half, imaginary half]


@dataclass(frozen=True)
class KGEModel:
    """Which score function and its hyper-parameters.

    name: 'transe' | 'rotate' | 'distmult' | 'complex'; dim: embedding size (complex size
    for RotatE and ComplEx); gamma: the margin in the TransE/RotatE score (unused by the
    DistMult and ComplEx scores, still sets the init range); epsilon: init range slack; p:
    TransE's norm (1 or 2).
    """

    name: str = "transe"
    dim: int = 50
    gamma: float = 12.0
    epsilon: float = 2.0
    p: int = 1

    def __post_init__(self):
        if self.name not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.name!r}")
        if self.p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {self.p}")

    @property
    def embedding_range(self) -> float:
        return (self.gamma + self.epsilon) / self.dim

    @property
    def entity_dim(self) -> int:
        """Reals per entity vector: 2 * dim for the complex models."""
        return 2 * self.dim if self.name in COMPLEX_MODELS else self.dim

    @property
    def relation_dim(self) -> int:
        """Reals per relation vector: 2 * dim for ComplEx (RotatE's are dim phases)."""
        return 2 * self.dim if self.name == "complex" else self.dim


def init(key, model: KGEModel, num_entities: int, num_relations: int, dtype=jnp.float32) -> dict:
    """{'entity': (num_entities, entity_dim), 'relation': (num_relations, relation_dim)},
    every entry uniform on +-embedding_range."""
    k_ent, k_rel = jax.random.split(key)
    a = model.embedding_range
    return {"entity": jax.random.uniform(k_ent, (num_entities, model.entity_dim), dtype, -a, a),
            "relation": jax.random.uniform(k_rel, (num_relations, model.relation_dim), dtype, -a, a)}


def _safe_norm(sq):
    """sqrt(sq) with gradient 0 (not inf) where sq == 0."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def transe_score(h_xD, r_xD, t_xD, *, gamma: float, p: int = 1):
    """gamma - ||h + r - t||_p over the last axis (leading axes broadcast)."""
    diff = h_xD + r_xD - t_xD
    if p == 1:
        return gamma - jnp.abs(diff).sum(-1)
    return gamma - _safe_norm(jnp.square(diff).sum(-1))


def rotate_score(h_x2D, phase_xD, t_x2D, *, gamma: float):
    """gamma - sum_i |h_i e^{i phase_i} - t_i|; entity vectors hold [real half, imaginary half]."""
    re_h, im_h = jnp.split(h_x2D, 2, axis=-1)
    re_t, im_t = jnp.split(t_x2D, 2, axis=-1)
    re_r, im_r = jnp.cos(phase_xD), jnp.sin(phase_xD)
    re = re_h * re_r - im_h * im_r - re_t
    im = re_h * im_r + im_h * re_r - im_t
    return gamma - _safe_norm(re * re + im * im).sum(-1)


def distmult_score(h_xD, r_xD, t_xD):
    """sum_i h_i r_i t_i (a trilinear product; symmetric in h and t)."""
    return (h_xD * r_xD * t_xD).sum(-1)


def complex_score(h_x2D, r_x2D, t_x2D):
    """Re(sum_i h_i r_i conj(t_i)); every vector holds [real half, imaginary half]."""
    re_h, im_h = jnp.split(h_x2D, 2, axis=-1)
    re_r, im_r = jnp.split(r_x2D, 2, axis=-1)
    re_t, im_t = jnp.split(t_x2D, 2, axis=-1)
    return (re_h * re_r * re_t + im_h * re_r * im_t + re_h * im_r * im_t - im_h * im_r * re_t).sum(-1)


def _complex_product(a_x2D, b_x2D, *, conj_a: bool = False):
    """a o b (or conj(a) o b), elementwise, in the [real half, imaginary half] layout."""
    re_a, im_a = jnp.split(a_x2D, 2, axis=-1)
    re_b, im_b = jnp.split(b_x2D, 2, axis=-1)
    if conj_a:
        im_a = -im_a
    return jnp.concatenate([re_a * re_b - im_a * im_b, re_a * im_b + im_a * re_b], -1)


def score_embeddings(model: KGEModel, h_emb, r_emb, t_emb):
    """The model's score of embedded triples (raw relation parameters for RotatE)."""
    if model.name == "transe":
        return transe_score(h_emb, r_emb, t_emb, gamma=model.gamma, p=model.p)
    if model.name == "rotate":
        return rotate_score(h_emb, r_emb * (math.pi / model.embedding_range), t_emb, gamma=model.gamma)
    if model.name == "complex":
        return complex_score(h_emb, r_emb, t_emb)
    return distmult_score(h_emb, r_emb, t_emb)


def score(model: KGEModel, params: dict, h, r, t):
    """Scores of triples given as integer ids; h, r, t broadcast against each other and the
    result has their broadcast shape (e.g. (B,), (B, K), (B, E))."""
    ent, rel = params["entity"], params["relation"]
    return score_embeddings(model, ent[h], rel[r], ent[t])


def entity_columns(params: dict):
    """entity_DxE: the entity table transposed, what `score_all_tails`/`score_all_heads` scan
    (compute it once, outside a loop over query chunks)."""
    return params["entity"].T


def _query_vectors(model: KGEModel, params: dict, known_B, r_B, *, tails: bool):
    """c_BxD such that the score of the missing entity e is a function of (e, c) alone (see
    `score_corrupted`): `known_B` is the head of a tail query or the tail of a head query."""
    x, r = params["entity"][known_B], params["relation"][r_B]
    if model.name == "transe":
        return x + r if tails else x - r
    if model.name == "distmult":
        return x * r
    if model.name == "complex":
        return _complex_product(x, r) if tails else _complex_product(r, x, conj_a=True)
    phase = r * (math.pi / model.embedding_range)
    re_r, im_r = jnp.cos(phase), jnp.sin(phase)
    re_x, im_x = jnp.split(x, 2, axis=-1)
    if not tails:
        im_r = -im_r  # t o conj(r)
    return jnp.concatenate([re_x * re_r - im_x * im_r, re_x * im_r + im_x * re_r], -1)


def score_against_all(model: KGEModel, c_BxD, entity_DxE):
    """scores_BxE of every entity against the query vectors `c_BxD`. Bilinear models are one
    matrix product; distance models the table of `pairwise_distances` (a (B, E) accumulator
    over the embedding axis, never a (B, E, D) broadcast; its gradient written out)."""
    if model.name in ("distmult", "complex"):
        return c_BxD @ entity_DxE
    if model.name == "rotate":
        return model.gamma - pairwise_distances(c_BxD, entity_DxE.T, "modulus")
    if model.p == 1:
        return model.gamma - pairwise_distances(c_BxD, entity_DxE.T, "l1")
    return model.gamma - _safe_norm(pairwise_distances(c_BxD, entity_DxE.T, "squared"))


def score_all_tails(model: KGEModel, params: dict, h_B, r_B, entity_DxE=None):
    """scores_BxE of (h, r, e) for every entity e (`entity_DxE`: `entity_columns(params)`,
    computed here when not given)."""
    entity_DxE = entity_columns(params) if entity_DxE is None else entity_DxE
    return score_against_all(model, _query_vectors(model, params, h_B, r_B, tails=True), entity_DxE)


def score_all_heads(model: KGEModel, params: dict, r_B, t_B, entity_DxE=None):
    """scores_BxE of (e, r, t) for every entity e."""
    entity_DxE = entity_columns(params) if entity_DxE is None else entity_DxE
    return score_against_all(model, _query_vectors(model, params, t_B, r_B, tails=False), entity_DxE)


def score_corrupted(model: KGEModel, params: dict, triples_Bx3, replacement_BxK, corrupt_head, *,
                    chunk: int = 8):
    """Scores (B, K) of negatives that replace the head (where `corrupt_head`, broadcastable
    to (B, K)) or the tail of each positive by `replacement_BxK`; equal to
    `score(model, params, heads_BxK, r[:, None], tails_BxK)` but gathering only the K
    replacement vectors: each score is written against one per-positive vector c,

        TransE    ||h + r - e||  = ||e - (h + r)||,     ||e + r - t||   = ||e - (t - r)||
        RotatE    |h o r - e|    = |e - h o r|,         |e o r - t|     = |e - t o conj(r)|  (|r_i| = 1)
        DistMult  <h o r, e>,                           <e, r o t>
        ComplEx   Re<h o r, conj(e)> = <h o r, e>_R,    Re<e o r, conj(t)> = <e, conj(r) o t>_R

    where <a, b>_R = sum_i Re(a_i) Re(b_i) + Im(a_i) Im(b_i) is the real dot product of the
    stacked [real half, imaginary half] vectors (Re(e_i w_i) = Re(conj(e_i) conj(w_i)) with
    w = r o conj(t), so c = conj(w) = conj(r) o t).

    The negatives are scored `chunk` at a time (a `lax.scan` over K / chunk blocks of (B,
    chunk) replacements): XLA on CPU gathers and reduces a (B, chunk, D) block several
    times faster per element than one (B, K, D) gather.

    A `replacement_BxK` of shape (1, K) is one set of K entities shared by the whole batch
    (`jaxdl.data.kg.corrupt(shared=True)`): its K vectors are gathered once and scored
    against every query vector, a (B, D) x (D, K) product for the bilinear models and the
    distances of `pairwise_distances` for TransE and RotatE.
    """
    h, r, t = triples_Bx3[:, 0], triples_Bx3[:, 1], triples_Bx3[:, 2]
    tail_c_BxD = _query_vectors(model, params, h, r, tails=True)
    head_c_BxD = _query_vectors(model, params, t, r, tails=False)
    B, K = triples_Bx3.shape[0], replacement_BxK.shape[1]
    side = jnp.asarray(corrupt_head)
    one_side = side.ndim == 0 or side.shape[-1] == 1  # one side per positive: one query vector each
    c_BxD = jnp.where(side, head_c_BxD, tail_c_BxD) if one_side else None
    if replacement_BxK.shape[0] == 1 and B > 1:
        return _score_shared(model, params["entity"][replacement_BxK[0]], head_c_BxD, tail_c_BxD, side, c_BxD)
    if one_side:

        def block(replacement_Bxk):
            return _score_near(model, params["entity"][replacement_Bxk], c_BxD[:, None, :])

        per_negative = (replacement_BxK,)
    else:  # a side per negative (B, K): a query vector per negative

        def block(replacement_Bxk, head_Bxk):
            c_BxkxD = jnp.where(head_Bxk[..., None], head_c_BxD[:, None, :], tail_c_BxD[:, None, :])
            return _score_near(model, params["entity"][replacement_Bxk], c_BxkxD)

        per_negative = (replacement_BxK, side)
    if K <= chunk:
        return block(*per_negative)
    pad = -K % chunk
    blocks = [jnp.pad(a, ((0, 0), (0, pad))).reshape(B, -1, chunk).transpose(1, 0, 2) for a in per_negative]
    _, scores_NxBxk = jax.lax.scan(lambda _, x: (None, block(*x)), None, tuple(blocks))
    return scores_NxBxk.transpose(1, 0, 2).reshape(B, K + pad)[:, :K]


def _score_shared(model: KGEModel, e_KxD, head_c_BxD, tail_c_BxD, side, c_BxD):
    """scores_BxK of K shared entity vectors against each positive's query vector `c_BxD` (one
    side per positive), or, with `c_BxD` None, against both of its query vectors, picked per
    negative by `side` (B, K)."""
    e_DxK = e_KxD.T
    if c_BxD is not None:
        return score_against_all(model, c_BxD, e_DxK)
    return jnp.where(side, score_against_all(model, head_c_BxD, e_DxK), score_against_all(model, tail_c_BxD, e_DxK))


DISTANCES = ("l1", "squared", "modulus")


def _coordinate_diffs(a_cols, b_cols):
    """The (B, K) differences a - b of one embedding coordinate; a_cols, b_cols hold its (B,)
    and (K,) values (for 'modulus' two each: the real and the imaginary part)."""
    return [a[:, None] - b[None, :] for a, b in zip(a_cols, b_cols)]


def _distance_terms(kind: str, a_cols, b_cols):
    """The (B, K) terms of one embedding coordinate (see `_coordinate_diffs`)."""
    diffs = _coordinate_diffs(a_cols, b_cols)
    if kind == "l1":
        return jnp.abs(diffs[0])
    if kind == "squared":
        return diffs[0] * diffs[0]
    return _safe_norm(diffs[0] * diffs[0] + diffs[1] * diffs[1])


def _coordinates(kind: str, x_NxD):
    """x's columns as the loop's operands: (D, N), or for 'modulus' ((D/2, N), (D/2, N))."""
    if kind != "modulus":
        return (x_NxD.T,)
    re, im = jnp.split(x_NxD, 2, axis=-1)
    return re.T, im.T


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def pairwise_distances(a_BxD, b_KxD, kind: str):
    """distances_BxK between every row of a and every row of b: 'l1' sum_d |a_d - b_d|,
    'squared' sum_d (a_d - b_d)^2, or 'modulus' sum_i |a_i - b_i| over complex entries
    stored as [real half, imaginary half] (RotatE). Accumulated one coordinate at a time in
    a (B, K) array, never a (B, K, D) broadcast; the gradient is written out the same way
    (autodiff of the loop would store D (B, K) residuals): with g = dL/ddistance and
    u = a_d - b_d, dL/da_d = sum_k g u' and dL/db_d = -sum_b g u', u' = sign(u) (+1 at 0, as
    autodiff of |u|), 2u, or u / |a_i - b_i| (0 where that modulus is 0)."""
    if kind not in DISTANCES:
        raise ValueError(f"kind must be one of {DISTANCES}, got {kind!r}")
    a_cols, b_cols = _coordinates(kind, a_BxD), _coordinates(kind, b_KxD)

    def add(d, acc):  # a fori_loop indexing the columns: XLA:CPU runs a scan over them several times slower
        return acc + _distance_terms(kind, [c[d] for c in a_cols], [c[d] for c in b_cols])

    zero = jnp.zeros((a_BxD.shape[0], b_KxD.shape[0]), jnp.result_type(a_BxD, b_KxD))
    return jax.lax.fori_loop(0, a_cols[0].shape[0], add, zero, unroll=4)


def _pairwise_distances_fwd(a_BxD, b_KxD, kind):
    return pairwise_distances(a_BxD, b_KxD, kind), (a_BxD, b_KxD)


def _pairwise_distances_bwd(kind, residuals, g_BxK):
    a_BxD, b_KxD = residuals
    a_cols, b_cols = _coordinates(kind, a_BxD), _coordinates(kind, b_KxD)

    def coordinate(cols):
        diffs = _coordinate_diffs(*cols)
        if kind == "l1":
            terms = (jnp.where(diffs[0] >= 0, g_BxK, -g_BxK),)
        elif kind == "squared":
            terms = (g_BxK * 2.0 * diffs[0],)
        else:
            sq = diffs[0] * diffs[0] + diffs[1] * diffs[1]
            scale = g_BxK * jnp.where(sq > 0, jax.lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
            terms = (diffs[0] * scale, diffs[1] * scale)
        return tuple(t.sum(1) for t in terms), tuple(-t.sum(0) for t in terms)

    grad_a, grad_b = jax.lax.map(coordinate, (a_cols, b_cols))
    return (jnp.concatenate(grad_a, 0).T.astype(a_BxD.dtype), jnp.concatenate(grad_b, 0).T.astype(b_KxD.dtype))


pairwise_distances.defvjp(_pairwise_distances_fwd, _pairwise_distances_bwd)


def _score_near(model: KGEModel, e_xD, c_xD):
    """The score of entity vectors `e` against query vectors `c` (`_query_vectors`), elementwise."""
    if model.name == "transe":
        return transe_score(e_xD, 0.0, c_xD, gamma=model.gamma, p=model.p)
    if model.name in ("distmult", "complex"):
        return (e_xD * c_xD).sum(-1)
    re_d, im_d = jnp.split(e_xD - c_xD, 2, axis=-1)
    return model.gamma - _safe_norm(re_d * re_d + im_d * im_d).sum(-1)


ENTITY_CONSTRAINTS = ("none", "ball", "sphere")


def constrain_entities(params: dict, constraint: str = "ball") -> dict:
    """params with every entity vector projected: 'sphere' scales it to unit L2 norm (the
    TransE constraint of Bordes et al., 2013, PyKEEN's TransE default), 'ball' only scales
    down vectors longer than 1 (||e|| <= 1), 'none' leaves them."""
    if constraint not in ENTITY_CONSTRAINTS:
        raise ValueError(f"constraint must be one of {ENTITY_CONSTRAINTS}, got {constraint!r}")
    if constraint == "none":
        return params
    ent = params["entity"]
    norm = jnp.linalg.norm(ent, axis=-1, keepdims=True)
    scale = jnp.maximum(norm, 1e-12) if constraint == "sphere" else jnp.maximum(norm, 1.0)
    return {**params, "entity": ent / scale}


def with_entity_constraint(optimizer, constraint: str = "ball"):
    """`optimizer` followed by the projection `constrain_entities` of the updated entity
    vectors, as an optax GradientTransformation (a projected-gradient step). Relation
    updates are the optimizer's own."""
    if constraint == "none":
        return optimizer

    def update(grads, state, params):
        updates, state = optimizer.update(grads, state, params)
        projected = constrain_entities(optax.apply_updates(params, updates), constraint)
        return {**updates, "entity": projected["entity"] - params["entity"]}, state

    return optax.GradientTransformation(optimizer.init, update)
