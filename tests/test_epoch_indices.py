"""Minibatches gathered inside the scan body (`shuffled_indices` + `take_rows`) are the
same minibatches as `shuffled_batches`, and the epoch trains identically."""
from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models.dense import mlp_apply, mlp_init
from jaxdl.train import epoch as ep
from jaxdl.train.optim import sgd
from jaxdl.train.step import init_state, make_train_step
from jaxdl.losses.classification import classification_loss


def _data(n=70, d=5):
    X = jax.random.normal(jax.random.key(1), (n, d))
    return {"X": X, "y": (X[:, 0] > 0).astype(jnp.int32), "row": jnp.arange(n)}


def test_indices_are_one_permutation_without_remainder():
    data = _data()
    idx = ep.shuffled_indices(data, jax.random.key(3), 16)
    chex.assert_shape(idx, (4, 16))
    assert len(set(np.asarray(idx).ravel().tolist())) == 64 and int(idx.min()) >= 0 and int(idx.max()) < 70
    batches = ep.take_rows(data, idx)
    chex.assert_trees_all_equal(batches, ep.shuffled_batches(data, jax.random.key(3), 16))
    np.testing.assert_array_equal(batches["row"], idx)  # each row is where the index points


def test_scan_epoch_gathering_in_the_body_equals_the_materialised_one():
    data = _data()
    params = mlp_init(jax.random.key(0), 5, [8], 2, sigma=0.5)
    step = make_train_step(classification_loss(mlp_apply), sgd(0.3))
    copy_epoch = ep.make_scan_epoch(step, partial(ep.shuffled_batches, batch_size=16))
    gather_epoch = ep.make_scan_epoch(step, partial(ep.shuffled_indices, batch_size=16), load_batch=ep.take_rows)
    key = jax.random.key(7)
    s_copy, m_copy = copy_epoch(init_state(jax.tree.map(jnp.copy, params), sgd(0.3)), data, key)
    s_gather, m_gather = gather_epoch(init_state(jax.tree.map(jnp.copy, params), sgd(0.3)), data, key)
    chex.assert_trees_all_close(s_gather.params, s_copy.params, atol=1e-6)
    np.testing.assert_allclose(m_gather["loss"], m_copy["loss"], rtol=1e-6)
    assert m_gather["loss"].shape == (4,) and int(s_gather.step) == 4
    assert not np.allclose(m_gather["loss"][0], m_gather["loss"][-1])  # it did train

