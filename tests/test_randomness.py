"""Counter-based randomness: `index_shuffle` is a permutation for every size, keyed, and
its positions and adjacent pairs are uniform (chi-square); `hash_bits` is covered with the
word2vec draws in test_word2vec_data.py."""
import jax
import numpy as np
import pytest
from scipy import stats

from jaxdl.data.randomness import FEISTEL_ROUNDS, index_shuffle, mix32, prefix_shuffle

shuffle = jax.jit(index_shuffle, static_argnums=1, static_argnames="rounds")


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 16, 17, 255, 256, 257, 1000, 4097, 60_000])
def test_index_shuffle_is_a_permutation(n):
    p = np.asarray(shuffle(jax.random.key(n), n))
    assert p.dtype == np.int32 and p.shape == (n,)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_index_shuffle_is_keyed_and_deterministic():
    a, again, b = (np.asarray(shuffle(jax.random.key(s), 1000)) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, again)
    assert (a == b).mean() < 0.01  # another key, another order (a fixed point has chance 1/n)
    assert (a == np.arange(1000)).mean() < 0.01  # it moves things


def _uniformity_pvalues(n, rounds, draws=20_000):
    keys = jax.random.split(jax.random.key(1), draws)
    P = np.asarray(jax.vmap(lambda k: index_shuffle(k, n, rounds=rounds))(keys))
    positions = np.stack([np.bincount(P[:, i], minlength=n) for i in range(n)])  # where i lands
    pairs = np.bincount(P[:, 0] * n + P[:, 1], minlength=n * n).reshape(n, n)  # (first, second)
    return (stats.chisquare(positions.ravel()).pvalue,
            stats.chisquare(pairs[~np.eye(n, dtype=bool)]).pvalue)


@pytest.mark.parametrize("n,draws", [(10, 20_000), (37, 20_000), (300, 5_000)])
def test_index_shuffle_positions_and_pairs_are_uniform(n, draws):
    """Chi-square tests of where each index lands and of the (first, second) pairs; the pair
    test only where each of its n(n-1) cells expects at least 5 draws (not at n = 300)."""
    pos_p, pair_p = _uniformity_pvalues(n, FEISTEL_ROUNDS, draws=draws)
    assert pos_p > 1e-3, pos_p
    assert draws / (n * (n - 1)) < 5 or pair_p > 1e-3, pair_p


def test_the_uniformity_test_has_power():
    """Too few Feistel rounds on a tiny domain are caught: the same test rejects them."""
    _, pair_p = _uniformity_pvalues(10, rounds=2)
    assert pair_p < 1e-6


def test_mix32_is_a_bijection_on_a_slice():
    x = np.arange(1 << 20, dtype=np.uint32)
    y = np.asarray(mix32(x))
    assert len(np.unique(y)) == len(x)


def test_prefix_shuffle_permutes_the_real_rows_and_leaves_padding_in_place():
    """With a traced row count per vmapped client: the first n entries are index_shuffle's
    permutation of 0..n-1 (same key), the padding rows keep their places."""
    size = 300
    counts = np.array([0, 1, 2, 5, 37, 256, 257, 300])
    keys = jax.random.split(jax.random.key(5), len(counts))
    out = np.asarray(jax.jit(jax.vmap(lambda k, n: prefix_shuffle(k, n, size)))(keys, counts))
    for k, n, row in zip(keys, counts, out):
        np.testing.assert_array_equal(row[n:], np.arange(n, size))
        np.testing.assert_array_equal(row[:n], np.asarray(index_shuffle(k, int(n))))
