"""Cheap counter-based randomness for bulk draws: random bits and a random-access shuffle.

Both are keyed by a `jax.random` key (same key, same output) and cost a few integer ops
per element, where `jax.random` runs threefry per word and `jax.random.permutation` sorts.

  * `hash_bits(key, shape)`: uint32 bits, a counter hashed twice (word2vec's negatives).
  * `index_shuffle(key, n)`: a permutation of 0..n-1 computed element-wise by a keyed
    Feistel network with cycle walking (a random-access permutation, the idea behind
    `tf.random.experimental.index_shuffle`). No sort: `jax.random.permutation` runs two
    rounds of XLA's sort, which on CPU costs far more than a few integer ops per index and
    is a sizeable part of a softmax-regression epoch (see the README's benchmark section).
  * `prefix_shuffle(key, n, size)`: the same permutation of a padded array's first n rows,
    n traced (FedE's vmapped clients, each with its own row count).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

FEISTEL_ROUNDS = 12  # 6 rounds fail the pair test on 10 elements; 12 pass it with margin (tests)


def mix32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash with good avalanche (Wellons' lowbias32); a bijection on uint32."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hash_bits(key, shape) -> jax.Array:
    """uint32 random bits for bulk draws: a counter hashed twice with two seeds from `key`.

    Counter-based and stateless like threefry, but a few integer ops per word where
    threefry runs 20 rounds, so drawing the negatives of every step stays cheap on CPU
    (word2vec.c uses an LCG here). Same key, same bits; `tests/test_word2vec_data.py`
    checks the bits and the draws made from them with chi-square tests.
    """
    seed = jax.random.bits(key, (2,), jnp.uint32)
    size = math.prod(shape)
    counter = jax.lax.iota(jnp.uint32, size).reshape(shape)
    return mix32(mix32(counter + seed[0]) ^ seed[1])


def index_shuffle(key, n: int, *, rounds: int = FEISTEL_ROUNDS) -> jax.Array:
    """A random permutation of 0..n-1 (int32 (n,)), drawn from `key` without sorting.

    Element i goes to feistel(i): a balanced Feistel network on 2*h bits (2^(2h) >= n, so
    the domain is under 4n) whose round function hashes the right half with a per-round
    key. A Feistel network is a bijection of its domain whatever the round function, and
    re-applying it to the values that land outside 0..n-1 ("cycle walking") restricts it
    to a bijection of 0..n-1. Not uniform over all n! orders (no 64-bit-keyed generator
    is), but positions and pairs pass chi-square tests (`tests/test_randomness.py`).
    """
    if not 0 <= n <= 2**31 - 1:
        raise ValueError(f"index_shuffle: n={n} must be in 0..2^31-1")
    return prefix_shuffle(key, n, n, rounds=rounds)


def prefix_shuffle(key, n, size: int, *, rounds: int = FEISTEL_ROUNDS) -> jax.Array:
    """`index_shuffle` for a padded array whose first `n` rows are real: int32 (size,) whose
    first n entries are a random permutation of 0..n-1 and whose others are their own index.
    `n` may be traced (0 <= n <= size, e.g. a vmapped client's row count); for the same
    key and n the first n entries equal `index_shuffle(key, n)`, which is this with size = n."""
    n = jnp.asarray(n, jnp.uint32)
    bits = jnp.maximum(2, 32 - jax.lax.clz(jnp.maximum(n, 2) - 1))  # bit_length(n - 1), at least 2
    half = (bits + 1) // 2  # bits per Feistel half: the domain 2^(2 half) is under 4n
    mask = (jnp.uint32(1) << half) - jnp.uint32(1)
    round_keys = jax.random.bits(key, (rounds,), jnp.uint32)

    def feistel(x):
        left, right = x >> half, x & mask
        for r in range(rounds):
            left, right = right, left ^ (mix32(right ^ round_keys[r]) & mask)
        return (left << half) | right

    i = jax.lax.iota(jnp.uint32, size)
    live = i < n

    def walk(x):  # re-encrypt only the live values still outside 0..n-1
        return jnp.where(live & (x >= n), feistel(x), x)

    x = jax.lax.while_loop(lambda x: jnp.any(live & (x >= n)), walk, feistel(i))
    return jnp.where(live, x, i).astype(jnp.int32)
