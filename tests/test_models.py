import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.models import dense, init, linen
from jaxdl.train.optim import make_optimizer, sgd


def test_initialisers_statistics():
    key = jax.random.key(0)
    w = init.normal(key, (400, 300), sigma=0.01)
    assert abs(float(w.std()) - 0.01) < 5e-4 and abs(float(w.mean())) < 1e-3
    assert float(jnp.abs(init.zeros(key, (3,))).max()) == 0.0
    xa = init.xavier_uniform(key, (400, 300))
    assert abs(float(xa.var()) - 2 / 700) < 2e-4
    he = init.he_normal(key, (400, 300))
    assert abs(float(he.var()) - 2 / 400) < 3e-4


def test_shapes_and_zero_biases():
    key = jax.random.key(0)
    p = dense.mlp_init(key, 64, (32, 16), 10)
    chex.assert_shape([l["w"] for l in p], [(32, 64), (16, 32), (10, 16)])  # (out, in)
    assert all(float(jnp.abs(l["b"]).max()) == 0 for l in p)
    chex.assert_shape(dense.mlp_apply(p, jnp.ones((5, 64))), (5, 10))
    lp = dense.linreg_init(key, 2)
    chex.assert_shape(dense.linreg_apply(lp, jnp.ones((7, 2))), (7,))


@pytest.mark.parametrize("which", ["linreg", "softmax", "mlp"])
def test_linen_models_match_from_scratch(which):
    key = jax.random.key(3)
    X = jax.random.normal(jax.random.key(4), (9, 12))
    if which == "linreg":
        p = dense.linreg_init(key, 12, sigma=1.0)
        p["b"] = jnp.array(0.7)
        ours, module = dense.linreg_apply(p, X), linen.LinRegNet()
    elif which == "softmax":
        p = dense.softmax_init(key, 12, 5, sigma=1.0)
        p["b"] = jnp.arange(5.0)
        ours, module = dense.softmax_apply(p, X), linen.SoftmaxNet(5)
    else:
        p = dense.mlp_init(key, 12, (8, 6), 4, sigma=1.0)
        p = jax.tree.map(lambda a: a + 0.1, p)
        ours, module = dense.mlp_apply(p, X), linen.MLPNet((8, 6), 4)
    variables = linen.to_linen(p)
    # Same parameter structure linen itself would create:
    chex.assert_trees_all_equal_shapes(variables, module.init(key, X))
    np.testing.assert_allclose(module.apply(variables, X), ours, rtol=1e-6, atol=1e-6)
    if which == "mlp":
        chex.assert_trees_all_equal(linen.from_linen_mlp(variables), p)


def test_scratch_sgd_equals_optax_sgd_including_bias():
    params = dense.mlp_init(jax.random.key(0), 6, (5,), 3, sigma=0.5)
    grads = jax.tree.map(lambda a: jnp.ones_like(a) * 0.3, params)
    ours, theirs = sgd(0.1), optax.sgd(0.1)
    u1, _ = ours.update(grads, ours.init(params), params)
    u2, _ = theirs.update(grads, theirs.init(params), params)
    chex.assert_trees_all_close(optax.apply_updates(params, u1), optax.apply_updates(params, u2))
    moved = optax.apply_updates(params, u1)
    assert all(float(jnp.abs(a["b"] - b["b"]).max()) > 0 for a, b in zip(moved, params))  # biases move
    with pytest.raises(ValueError):
        make_optimizer("nope", 0.1)
