"""word2vec losses, pure and on logits (stable through `jax.nn.log_sigmoid`/`log_softmax`).

Negative sampling (D2L 15.2.1) replaces the softmax over V words by binary classifiers:
the true target (label 1) against K words drawn from the noise distribution (label 0),

    loss = -log sigma(s_pos) - sum_k log sigma(-s_k),

the binary cross-entropy on logits summed over the T = 1 + K targets of an example,
with a mask for padded or discarded targets. The full softmax, -log softmax(s)[target],
is the O(V) baseline it approximates.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl.data.text import sample_alias
from jaxdl.models import word2vec as w2v


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
# Objectives for training: (select, loss_on_rows) pairs for jaxdl.train.sparse
# ---------------------------------------------------------------------------------------
def _targets_and_mask(key, positive_B, example_mask_B, noise, num_negatives):
    """[positive, K noise words] per example and their mask: padding examples are masked,
    and so is a noise word that equals the example's true target (as in word2vec.c)."""
    negatives_BxK = sample_alias(key, noise, (positive_B.shape[0], num_negatives))
    targets_BxT = jnp.concatenate([positive_B[:, None], negatives_BxK], axis=1)
    mask_BxT = jnp.concatenate([jnp.ones_like(positive_B[:, None], bool), negatives_BxK != positive_B[:, None]], 1)
    return targets_BxT, mask_BxT & example_mask_B[:, None]


def _ns_loss_and_metrics(logits_BxT, mask_BxT, example_mask_B):
    labels = positive_then_negatives(logits_BxT.shape[1] - 1, logits_BxT.dtype)
    per_example = negative_sampling_loss(logits_BxT=logits_BxT, labels_BxT=labels[None, :],
                                         mask_BxT=mask_BxT.astype(logits_BxT.dtype))
    return per_example.sum(), {"examples": example_mask_B.sum()}


def skipgram_objective(*, noise, num_negatives: int):
    """Skip-gram with negative sampling on batches {'center', 'context', 'mask'} of shape (B,).

    Args:
      noise: the noise distribution as a `jaxdl.data.text.packed_alias_table` (V,) uint32.
      num_negatives: K noise words per (centre, context) pair, drawn from the step's key.
    Returns:
      (select, loss_on_rows) for `jaxdl.train.sparse`; the loss is the SUM over the batch's
      pairs (word2vec's per-pair SGD: the learning rate applies to each pair, whatever B),
      with metric 'examples' (real pairs in the batch).
    """

    def select(batch, key):
        targets, mask = _targets_and_mask(key, batch["context"], batch["mask"], noise, num_negatives)
        return {"W_in": batch["center"], "W_out": targets}, {"mask_BxT": mask, "example_mask_B": batch["mask"]}

    def loss_on_rows(rows, inputs):
        logits = w2v.scores_from_rows(rows["W_in"], rows["W_out"])
        return _ns_loss_and_metrics(logits, inputs["mask_BxT"], inputs["example_mask_B"])

    return select, loss_on_rows


def cbow_objective(*, noise, num_negatives: int):
    """CBOW with negative sampling on batches {'center' (B,), 'contexts' (B, C),
    'context_mask' (B, C), 'mask' (B,)}: the mean of the context vectors predicts the centre
    against K noise words. Returns (select, loss_on_rows); the loss is the SUM over examples."""

    def select(batch, key):
        targets, mask = _targets_and_mask(key, batch["center"], batch["mask"], noise, num_negatives)
        return ({"W_in": batch["contexts"], "W_out": targets},
                {"mask_BxT": mask, "example_mask_B": batch["mask"], "context_mask_BxC": batch["context_mask"]})

    def loss_on_rows(rows, inputs):
        h = w2v.cbow_hidden_from_rows(rows["W_in"], inputs["context_mask_BxC"])
        logits = w2v.scores_from_rows(h, rows["W_out"])
        return _ns_loss_and_metrics(logits, inputs["mask_BxT"], inputs["example_mask_B"])

    return select, loss_on_rows


def full_softmax_objective_loss(params, batch, key):
    """The full-softmax skip-gram loss of a batch {'center', 'context', 'mask'} (SUM over real
    pairs), `loss_fn(params, batch, key)` for the dense step: the O(V) baseline."""
    del key
    logits = w2v.full_softmax_apply(params, batch["center"])
    per_example = full_softmax_loss(logits_BxV=logits, targets_B=batch["context"])
    return jnp.sum(per_example * batch["mask"]), {"examples": batch["mask"].sum()}
