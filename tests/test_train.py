from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.models.dense import mlp_apply, mlp_init
from jaxdl.train import epoch as ep
from jaxdl.train.optim import sgd
from jaxdl.train.step import init_state, make_train_step
from jaxdl.losses.classification import classification_loss


def _setup(n=70, d=5, c=3):
    X = jax.random.normal(jax.random.key(0), (n, d))
    y = jax.random.randint(jax.random.key(1), (n,), 0, c)
    params = mlp_init(jax.random.key(2), d, (8,), c, sigma=0.3)
    return {"X": X, "y": y}, params


def test_train_step_is_sgd_on_the_loss_gradient():
    data, params = _setup()
    loss_fn = classification_loss(mlp_apply)
    step = jax.jit(make_train_step(loss_fn, sgd(0.1)))
    state, metrics = step(init_state(params, sgd(0.1)), data, jax.random.key(0))
    grads = jax.grad(lambda p: loss_fn(p, data, None)[0])(params)
    chex.assert_trees_all_close(state.params, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), atol=1e-6)
    assert int(state.step) == 1 and bool(metrics["finite"])
    assert set(metrics) == {"loss", "accuracy", "finite"}


def test_finite_flag_catches_nan():
    data, params = _setup()
    params[0]["w"] = params[0]["w"].at[0, 0].set(jnp.nan)
    _, metrics = make_train_step(classification_loss(mlp_apply), sgd(0.1))(
        init_state(params, sgd(0.1)), data, jax.random.key(0))
    assert not bool(metrics["finite"])


def test_shuffled_batches_drop_remainder_and_reshuffle():
    data = {"X": jnp.arange(23.0)[:, None], "y": jnp.arange(23)}
    b1 = ep.shuffled_batches(data, jax.random.key(0), 5)
    b2 = ep.shuffled_batches(data, jax.random.key(1), 5)
    chex.assert_shape(b1["X"], (4, 5, 1))
    np.testing.assert_array_equal(b1["X"][..., 0], b1["y"])  # rows stay aligned across leaves
    assert len(set(np.asarray(b1["y"]).ravel())) == 20  # no repeats within an epoch
    assert not np.array_equal(b1["y"], b2["y"])


def test_scan_epoch_equals_python_loop_of_jitted_steps():
    data, params = _setup()
    opt = optax.sgd(0.05, momentum=0.9)
    step = make_train_step(classification_loss(mlp_apply), opt)
    make_batches = partial(ep.shuffled_batches, batch_size=16)
    key = jax.random.key(7)
    run_epoch = ep.make_scan_epoch(step, make_batches)
    s_scan, m_scan = run_epoch(init_state(jax.tree.map(jnp.copy, params), opt), data, key)  # donated
    k_batches, k_steps = jax.random.split(key)
    s_loop, m_loop = ep.loop_steps(jax.jit(step), init_state(params, opt), make_batches(data, k_batches), k_steps)
    chex.assert_trees_all_close(s_scan.params, s_loop.params, atol=1e-6)
    np.testing.assert_allclose(m_scan["loss"], m_loop["loss"], rtol=1e-5)
    assert m_scan["loss"].shape == (4,)
