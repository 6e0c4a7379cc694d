"""word2vec losses, pure and on logits (stable through `jax.nn.log_sigmoid`/`log_softmax`).

Negative sampling (D2L 15.2.1) replaces the softmax over V words by binary classifiers:
the true target (label 1) against K words drawn from the noise distribution (label 0),

    loss = -log sigma(s_pos) - sum_k log sigma(-s_k),

the binary cross-entropy on logits summed over the T = 1 + K targets of an example,
with a mask for padded or discarded targets. The full softmax, -log softmax(s)[target],
is the O(V) baseline it approximates.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdl.data.text import sample_alias
from jaxdl.models import word2vec as w2v
from jaxdl.train.sparse import RowObjective


def sigmoid_bce(*, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy on logits: -y log sigma(s) - (1 - y) log sigma(-s)."""
    return -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


def negative_sampling_loss(*, logits_BxT: jax.Array, labels_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Per-example negative-sampling loss: the masked BCE summed over targets. (B,)

    Args:
      logits_BxT: scores of each example's targets (column 0 the true one, then K noise words).
      labels_BxT: 1 for a true target, 0 for a noise word.
      mask_BxT: which targets count (padding, or a noise word equal to the true target, is 0).
    """
    return jnp.sum(sigmoid_bce(logits=logits_BxT, labels=labels_BxT) * mask_BxT, axis=-1)


def positive_then_negatives(num_negatives: int, dtype=jnp.float32) -> jax.Array:
    """Labels (1 + K,) for targets laid out as [true target, K noise words]."""
    return jnp.concatenate([jnp.ones((1,), dtype), jnp.zeros((num_negatives,), dtype)])


def full_softmax_loss(*, logits_BxV: jax.Array, targets_B: jax.Array) -> jax.Array:
    """Per-example -log softmax(logits)[target]. (B,)"""
    log_p = jax.nn.log_softmax(logits_BxV, axis=-1)
    return -jnp.take_along_axis(log_p, targets_B[:, None], axis=-1)[:, 0]


# ---------------------------------------------------------------------------------------
# Objectives for training: `RowObjective`s for jaxdl.train.sparse
#
# Negatives are drawn either per pair (word2vec.c and the book: each example draws its own
# K noise words) or once per batch (`shared=True`: one draw of K noise words that every
# example of the batch scores against). Either way each example's K negatives are K
# independent draws from the noise distribution, so each example's loss is the same
# random variable; sharing only correlates examples within a batch. It gathers and
# scatters B + K rows of W_out instead of B (1 + K), and scores the negatives with one
# (B, D) x (D, K) product.
# ---------------------------------------------------------------------------------------
def _targets_and_mask(key, positive_B, example_mask_B, noise, num_negatives):
    """[positive, K noise words] per example and their mask: padding examples are masked,
    and so is a noise word that equals the example's true target (as in word2vec.c)."""
    negatives_BxK = sample_alias(key, noise, (positive_B.shape[0], num_negatives))
    targets_BxT = jnp.concatenate([positive_B[:, None], negatives_BxK], axis=1)
    mask_BxT = jnp.concatenate([jnp.ones_like(positive_B[:, None], bool), negatives_BxK != positive_B[:, None]], 1)
    return targets_BxT, mask_BxT & example_mask_B[:, None]


def _shared_targets_and_mask(key, positive_B, example_mask_B, noise, num_negatives):
    """The W_out rows [B positives, then the batch's K noise words] (B + K,) and which
    (example, noise word) scores count (B, K): not padding, not the example's true target."""
    negatives_K = sample_alias(key, noise, (num_negatives,))
    mask_BxK = (negatives_K[None, :] != positive_B[:, None]) & example_mask_B[:, None]
    return jnp.concatenate([positive_B, negatives_K]), mask_BxK


def _ns_loss_and_metrics(logits_BxT, mask_BxT, example_mask_B):
    labels = positive_then_negatives(logits_BxT.shape[1] - 1, logits_BxT.dtype)
    per_example = negative_sampling_loss(logits_BxT=logits_BxT, labels_BxT=labels[None, :],
                                         mask_BxT=mask_BxT.astype(logits_BxT.dtype))
    return per_example.sum(), {"examples": example_mask_B.sum()}


def ns_value_and_grads(h_BxD, u_targets_BxTxD, mask_BxT, example_mask_B):
    """The summed negative-sampling loss and its hand-derived gradients (`make verify`):
    with g = (sigma(s) - y) * mask = dL/ds,  dL/dh = sum_t g_t u_t  and  dL/du_t = g_t h.
    Returns ((loss, metrics), dL/dh (B, D), dL/du (B, T, D))."""
    logits = w2v.scores_from_rows(h_BxD, u_targets_BxTxD)
    labels = positive_then_negatives(logits.shape[1] - 1, logits.dtype)[None, :]
    mask = mask_BxT.astype(logits.dtype)
    loss = jnp.sum(sigmoid_bce(logits=logits, labels=labels) * mask)
    g_BxT = (jax.nn.sigmoid(logits) - labels) * mask
    d_h = jnp.einsum("bt,btd->bd", g_BxT, u_targets_BxTxD)
    d_u = g_BxT[:, :, None] * h_BxD[:, None, :]
    return (loss, {"examples": example_mask_B.sum()}), d_h, d_u


def _shared_logits_and_loss(h_BxD, u_rows, mask_BxK, example_mask_B):
    B = h_BxD.shape[0]
    positive_B = jnp.sum(h_BxD * u_rows[:B], axis=-1)
    negative_BxK = h_BxD @ u_rows[B:].T
    em, mask = example_mask_B.astype(h_BxD.dtype), mask_BxK.astype(h_BxD.dtype)
    loss = (jnp.sum(sigmoid_bce(logits=positive_B, labels=1.0) * em)
            + jnp.sum(sigmoid_bce(logits=negative_BxK, labels=0.0) * mask))
    return positive_B, negative_BxK, loss


def shared_ns_loss(h_BxD, u_rows, mask_BxK, example_mask_B):
    """The summed negative-sampling loss with batch-shared negatives, for rows
    u_rows = W_out[[B positives, K noise words]] (B + K, D)."""
    return _shared_logits_and_loss(h_BxD, u_rows, mask_BxK, example_mask_B)[2]


def shared_ns_value_and_grads(h_BxD, u_rows, mask_BxK, example_mask_B):
    """`shared_ns_loss` and its hand-derived gradients: with g_b = (sigma(s_b) - 1) for the
    positives and G_bk = sigma(s_bk) for the shared noise words (masked),
        dL/dh_b = g_b u_b + sum_k G_bk u_k,  dL/du_b = g_b h_b,  dL/du_k = sum_b G_bk h_b.
    Returns ((loss, metrics), dL/dh (B, D), dL/du_rows (B + K, D))."""
    B = h_BxD.shape[0]
    positive_B, negative_BxK, loss = _shared_logits_and_loss(h_BxD, u_rows, mask_BxK, example_mask_B)
    g_B = (jax.nn.sigmoid(positive_B) - 1.0) * example_mask_B.astype(h_BxD.dtype)
    G_BxK = jax.nn.sigmoid(negative_BxK) * mask_BxK.astype(h_BxD.dtype)
    d_h = g_B[:, None] * u_rows[:B] + G_BxK @ u_rows[B:]
    d_u = jnp.concatenate([g_B[:, None] * h_BxD, G_BxK.T @ h_BxD])
    return (loss, {"examples": example_mask_B.sum()}), d_h, d_u


def _per_pair_ns_loss(h_BxD, u_targets_BxTxD, mask_BxT, example_mask_B):
    return _ns_loss_and_metrics(w2v.scores_from_rows(h_BxD, u_targets_BxTxD), mask_BxT, example_mask_B)[0]


class _Draw(NamedTuple):
    """How an objective draws its negatives, and the loss and hand gradients that go with it."""
    targets_and_mask: Callable  # (key, positive_B, example_mask_B, noise, K) -> (W_out indices, mask)
    mask_name: str  # the mask's name among the objective's inputs
    loss: Callable  # (h, W_out rows, mask, example_mask_B) -> summed loss
    value_and_grads: Callable  # the same -> ((loss, metrics), dL/dh, dL/d rows)


PER_PAIR = _Draw(_targets_and_mask, "mask_BxT", _per_pair_ns_loss, ns_value_and_grads)
SHARED = _Draw(_shared_targets_and_mask, "mask_BxK", shared_ns_loss, shared_ns_value_and_grads)


def skipgram_objective(*, noise, num_negatives: int, shared: bool = False):
    """Skip-gram with negative sampling on batches {'center', 'context', 'mask'} of shape (B,).

    Args:
      noise: the noise distribution as a `jaxdl.data.text.packed_alias_table` (V,) uint32.
      num_negatives: K noise words per (centre, context) pair, drawn from the step's key.
      shared: one draw of K noise words for the whole batch instead of one per pair.
    Returns:
      a `jaxdl.train.sparse.RowObjective` (select, loss_on_rows and its hand gradient); the loss
      is the SUM over the batch's pairs (word2vec's per-pair SGD: the learning rate applies to
      each pair, whatever B), with metric 'examples' (real pairs in the batch).
    """
    draw = SHARED if shared else PER_PAIR

    def select(batch, key):
        rows, mask = draw.targets_and_mask(key, batch["context"], batch["mask"], noise, num_negatives)
        return {"W_in": batch["center"], "W_out": rows}, {draw.mask_name: mask, "example_mask_B": batch["mask"]}

    def loss_on_rows(rows, inputs):
        loss = draw.loss(rows["W_in"], rows["W_out"], inputs[draw.mask_name], inputs["example_mask_B"])
        return loss, {"examples": inputs["example_mask_B"].sum()}

    def value_and_row_grads(rows, inputs):
        value, d_h, d_u = draw.value_and_grads(rows["W_in"], rows["W_out"], inputs[draw.mask_name],
                                               inputs["example_mask_B"])
        return value, {"W_in": d_h, "W_out": d_u}

    return RowObjective(select, loss_on_rows, value_and_row_grads)


def cbow_objective(*, noise, num_negatives: int, shared: bool = False, word2vec_update: bool = False):
    """CBOW with negative sampling on batches {'center' (B,), 'contexts' (B, C),
    'context_mask' (B, C), 'mask' (B,)}: the mean of the context vectors predicts the centre
    against K noise words (one draw per example, or with `shared` one per batch). Returns a
    `RowObjective` (with its hand gradient); the loss is the SUM over examples.

    With `word2vec_update`, each of the n context vectors is moved by the whole dL/dh, as
    word2vec.c and gensim do, instead of by its gradient dL/dh / n: the context rows then
    learn n times faster than the loss's gradient says (the 'gradient' it returns for W_in
    is n times the true one; W_out's is exact)."""
    draw = SHARED if shared else PER_PAIR

    def select(batch, key):
        rows, mask = draw.targets_and_mask(key, batch["center"], batch["mask"], noise, num_negatives)
        return ({"W_in": batch["contexts"], "W_out": rows},
                {draw.mask_name: mask, "example_mask_B": batch["mask"], "context_mask_BxC": batch["context_mask"]})

    def loss_on_rows(rows, inputs):
        h = w2v.cbow_hidden_from_rows(rows["W_in"], inputs["context_mask_BxC"])
        loss = draw.loss(h, rows["W_out"], inputs[draw.mask_name], inputs["example_mask_B"])
        return loss, {"examples": inputs["example_mask_B"].sum()}

    def value_and_row_grads(rows, inputs):
        h = w2v.cbow_hidden_from_rows(rows["W_in"], inputs["context_mask_BxC"])
        value, d_h, d_u = draw.value_and_grads(h, rows["W_out"], inputs[draw.mask_name], inputs["example_mask_B"])
        context_mask = inputs["context_mask_BxC"].astype(h.dtype)  # d h / d v_j = 1/n for the n valid contexts
        share_BxC = context_mask if word2vec_update else (
            context_mask / jnp.maximum(context_mask.sum(-1, keepdims=True), 1.0))
        return value, {"W_in": share_BxC[:, :, None] * d_h[:, None, :], "W_out": d_u}

    return RowObjective(select, loss_on_rows, value_and_row_grads)


def full_softmax_objective_loss(params, batch, key):
    """The full-softmax skip-gram loss of a batch {'center', 'context', 'mask'} (SUM over real
    pairs), `loss_fn(params, batch, key)` for the dense step: the O(V) baseline."""
    del key
    logits = w2v.full_softmax_apply(params, batch["center"])
    per_example = full_softmax_loss(logits_BxV=logits, targets_B=batch["context"])
    return jnp.sum(per_example * batch["mask"]), {"examples": batch["mask"].sum()}
