import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl import losses


def test_squared_loss_is_half_square():
    pred, target = jnp.array([1.0, 2.0, -1.0]), jnp.array([0.5, 2.0, 1.0])
    np.testing.assert_allclose(losses.squared_loss(pred=pred, target=target), [0.125, 0.0, 2.0])


def test_gaussian_nll_matches_scipy_and_shares_minimiser_with_squared_loss():
    from scipy.stats import norm

    pred, target = jnp.array([0.3, -1.2]), jnp.array([0.1, 0.4])
    np.testing.assert_allclose(losses.gaussian_nll(pred=pred, target=target, sigma=0.7),
                               -norm.logpdf(np.asarray(target), np.asarray(pred), 0.7), rtol=1e-5)
    # Squared loss is maximum likelihood under Gaussian noise: same argmin over w.
    key = jax.random.key(0)
    X = jax.random.normal(key, (200, 3))
    y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3 * jax.random.normal(jax.random.key(1), (200,))
    w_sq = jnp.linalg.lstsq(X, y)[0]
    nll = lambda w: losses.gaussian_nll(pred=X @ w, target=y, sigma=0.3).mean()  # noqa: E731
    w = jnp.zeros(3)
    for _ in range(500):
        w = w - 0.05 * jax.grad(nll)(w)
    np.testing.assert_allclose(w, w_sq, atol=1e-4)
    assert jnp.linalg.norm(jax.grad(lambda w: losses.squared_loss(pred=X @ w, target=y).mean())(w_sq)) < 1e-4


def test_cross_entropy_forms_agree_where_naive_is_finite():
    logits = jax.random.normal(jax.random.key(0), (64, 10)) * 5
    labels = jax.random.randint(jax.random.key(1), (64,), 0, 10)
    naive = losses.cross_entropy_naive(logits=logits, labels=labels)
    stable = losses.cross_entropy(logits=logits, labels=labels)
    np.testing.assert_allclose(naive, stable, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stable, optax.softmax_cross_entropy_with_integer_labels(logits, labels),
                               rtol=1e-5, atol=1e-6)


def test_stable_cross_entropy_survives_huge_logits_naive_does_not():
    logits = jnp.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0]])
    labels = jnp.array([0, 2])
    stable = losses.cross_entropy(logits=logits, labels=labels)
    assert jnp.all(jnp.isfinite(stable))
    np.testing.assert_allclose(stable, [0.0, 1.0 + np.log1p(np.exp(-1.0))], rtol=1e-5)
    assert not jnp.all(jnp.isfinite(losses.cross_entropy_naive(logits=logits, labels=labels)))


def test_softmax_naive_matches_jax_softmax():
    logits = jax.random.normal(jax.random.key(2), (5, 7))
    np.testing.assert_allclose(losses.softmax_naive(logits), jax.nn.softmax(logits), rtol=1e-6)


def test_accuracy_and_masked_mean():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    acc = losses.accuracy(logits=logits, labels=jnp.array([0, 0, 0]))
    np.testing.assert_array_equal(acc, [1.0, 0.0, 1.0])
    assert float(losses.masked_mean(acc, jnp.array([True, True, False]))) == pytest.approx(0.5)
    assert float(losses.masked_mean(acc)) == pytest.approx(2 / 3)
