"""word2vec (D2L 15.1-15.4) as pure functions: skip-gram, CBOW and a full-softmax baseline.

Parameters are two tables, `{'W_in': (V, D), 'W_out': (V, D)}`: the centre ("input")
vectors v_w, which are the word vectors one keeps, and the context ("output") vectors u_w.
A score is a dot product u_t . h, with h = v_c for skip-gram and the mean of the context
vectors for CBOW. With negative sampling each example scores its true target and K
noise words (`targets_BxT`, T = 1 + K); the full softmax scores all V words.

Every model has two forms: `*_apply(params, ...)` gathers rows itself, and
`*_from_rows(...)` takes rows already gathered -- the form the row-sparse train step
differentiates (`jaxdl.train.sparse`), so a step touches only the rows a batch uses.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def init(key, vocab_size: int, dim: int, *, dtype=jnp.float32) -> dict[str, jax.Array]:
    """word2vec's initialisation: W_in ~ U(-0.5/D, 0.5/D), W_out = 0 (as in word2vec.c and gensim).

    Returns {'W_in': (V, D), 'W_out': (V, D)}.
    """
    W_in = jax.random.uniform(key, (vocab_size, dim), dtype, -0.5 / dim, 0.5 / dim)
    return {"W_in": W_in, "W_out": jnp.zeros((vocab_size, dim), dtype)}


def scores_from_rows(h_BxD: jax.Array, u_targets_BxTxD: jax.Array) -> jax.Array:
    """Logits u_t . h for each example's targets: (B, T)."""
    return jnp.einsum("bd,btd->bt", h_BxD, u_targets_BxTxD)


def cbow_hidden_from_rows(v_contexts_BxCxD: jax.Array, context_mask_BxC: jax.Array) -> jax.Array:
    """Mean of the valid context vectors (zero for an example with none): (B, D)."""
    m = context_mask_BxC.astype(v_contexts_BxCxD.dtype)
    total = jnp.einsum("bc,bcd->bd", m, v_contexts_BxCxD)
    return total / jnp.maximum(m.sum(-1, keepdims=True), 1.0)


def skipgram_apply(params: dict, center_B: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Skip-gram logits: v_center . u_target for each of the T targets. (B, T)."""
    return scores_from_rows(params["W_in"][center_B], params["W_out"][targets_BxT])


def cbow_apply(params: dict, contexts_BxC: jax.Array, context_mask_BxC: jax.Array,
               targets_BxT: jax.Array) -> jax.Array:
    """CBOW logits: mean(v_contexts) . u_target for each of the T targets. (B, T)."""
    h = cbow_hidden_from_rows(params["W_in"][contexts_BxC], context_mask_BxC)
    return scores_from_rows(h, params["W_out"][targets_BxT])


def full_softmax_apply(params: dict, center_B: jax.Array) -> jax.Array:
    """Skip-gram logits over the whole vocabulary, v_center . u_w for every w: (B, V).
    O(V D) per example: the cost negative sampling avoids."""
    return params["W_in"][center_B] @ params["W_out"].T
