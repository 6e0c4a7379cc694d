"""Which input feature matters: weight magnitude, leave-one-out, Shapley values, gradients.

Every method explains one score function `f` that maps a batch of inputs `X_BxD` to one
score per row, `(B,)` -- a class probability, a logit, a log-odds, a loss -- at one input
row `x_D`. Nothing here knows the model: `f` is a black box (the gradient methods only
need it to be differentiable). To explain many rows, `jax.vmap` (or `jax.lax.map`, which
bounds memory) over `x`.

The `baseline` says what "taking a feature away" means. It is either one row `(D,)`
(zeros, the training mean, a blank image) or a background set `(N, D)`; with a background
set the value of a coalition S of features is the average over background rows `b` of
`f(x on S, b elsewhere)` -- the interventional value function of `shap`'s independent
masker -- so the Shapley values satisfy  sum_i phi_i = f(x) - mean_b f(b).

    weight_importance(params)                     first-layer weight magnitude (global)
    leave_one_out(f, x, baseline)                 f(x) - value(all features but i)
    shapley(f, x, baseline, method="exact")       all 2^D coalitions, chunked, exact
    shapley(f, x, baseline, method="sampling", num_samples=P, key=key)
                                                  antithetic permutation pairs + std errors
    integrated_gradients(f, x, baseline, steps)   path integral of the gradient
    gradient_x_input(f, x, baseline)              grad f(x) * (x - baseline)

The functions jit themselves with `f` as a static argument: pass the same `f` object
again to reuse the compiled code (a fresh lambda per call recompiles).
"""
from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.errors import JaxdlError

MAX_EXACT_FEATURES = 24  # 2^24 = 16.8M coalitions per explained row; beyond it, use sampling
DEFAULT_BATCH_SIZE = 16384  # rows per call of f: large enough to vectorise, small enough for cache


class ShapleyValues(NamedTuple):
    """Shapley values of one explained row (a pytree: jit/vmap friendly).

    values: (D,) phi_i; sum(values) = output - base_value (exactly, up to rounding, for
        both methods). stderr: (D,) standard error of each value (zeros when exact).
    base_value: () value of the empty coalition, mean_b f(b). output: () f(x).
    """

    values: jax.Array
    stderr: jax.Array
    base_value: jax.Array
    output: jax.Array


# ---- input checks (Python level, before tracing) ------------------------------------------------


def _as_inputs(f, x, baseline, *, allow_none: bool = False):
    """(x_D, background_NxD) as arrays of one float dtype, after checking shapes and f."""
    x = jnp.asarray(x)
    if x.ndim != 1 or x.shape[0] < 1:
        raise JaxdlError(f"x must be one input row of shape (D,), got shape {tuple(x.shape)}; "
                         f"vmap over rows to explain several")
    d = x.shape[0]
    if baseline is None:
        if not allow_none:
            raise JaxdlError("baseline is required: a row (D,) such as zeros or the training mean, "
                             "or a background set (N, D)")
        baseline = jnp.zeros_like(x)
    baseline = jnp.asarray(baseline)
    if baseline.ndim == 0:
        baseline = jnp.full((d,), baseline)
    if baseline.ndim == 1:
        baseline = baseline[None, :]
    if baseline.ndim != 2 or baseline.shape[1] != d or baseline.shape[0] < 1:
        raise JaxdlError(f"baseline must be a row ({d},) or a background set (N, {d}), "
                         f"got shape {tuple(jnp.shape(baseline))}")
    dtype = jnp.result_type(x.dtype, baseline.dtype, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    x, baseline = x.astype(dtype), baseline.astype(dtype)
    _check_callable(f, d)
    return x, baseline


def _check_callable(f, d: int) -> None:
    if not callable(f):
        raise JaxdlError(f"f must be a function mapping a batch (B, {d}) to scores (B,), got {type(f).__name__}")
    try:
        hash(f)  # f is a static argument of the jitted cores
    except TypeError:
        raise JaxdlError(f"f must be hashable (a function or functools.partial), got an unhashable "
                         f"{type(f).__name__}") from None


def _scores(f, X_BxD):
    """f(X) with its contract checked while tracing (once per compilation): one score per row."""
    try:
        out = f(X_BxD)
    except JaxdlError:
        raise
    except Exception as e:  # the user's function failed on a well-formed batch
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise JaxdlError(f"f failed on a batch of shape {tuple(X_BxD.shape)}: {first}") from None
    if jnp.shape(out) != X_BxD.shape[:1]:
        raise JaxdlError(f"f must map a batch (B, D) to one score per row (B,), but a batch of shape "
                         f"{tuple(X_BxD.shape)} gave {jnp.shape(out)}; pick one output, e.g. lambda X: model(X)[:, k]")
    return out


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise JaxdlError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


# ---- weight magnitude ------------------------------------------------------------------------


def weight_importance(params, *, ord: float = 2) -> jax.Array:
    """Per input feature, the magnitude of its first-layer weights.

    Linear regression {'w': (D,)}: |w_i|. Softmax / an MLP's first layer {'w': (H, D)},
    stored (out, in) as in `jaxdl.models.dense`: the `ord`-norm (2, 1 or inf) of column i,
    i.e. of every weight leaving feature i.
    An MLP is a list of such layers; only the first is read.

    Caveat: a weight measures sensitivity per unit of input, so this ranking is only
    meaningful when the inputs share one scale (standardised features); it also ignores
    everything after the first layer -- hidden units that later layers discard, and
    interactions -- and says nothing about a particular input row.

    Returns: (D,) non-negative importances.
    """
    layer = params[0] if isinstance(params, (list, tuple)) and params else params
    w = layer.get("w") if isinstance(layer, dict) else None
    if w is None:
        raise JaxdlError("weight_importance expects {'w': (D,) or (H, D), ...} or a list of such layers (an MLP)")
    w = jnp.asarray(w)
    if w.ndim == 1:
        return jnp.abs(w)
    if w.ndim != 2:
        raise JaxdlError(f"first-layer weights must be (D,) or (H, D), got shape {tuple(w.shape)}")
    if ord not in (1, 2, math.inf):
        raise JaxdlError(f"ord must be 1, 2 or inf, got {ord!r}")
    return jnp.linalg.norm(w, ord=ord, axis=0)


# ---- leave one out -----------------------------------------------------------------------------


@partial(jax.jit, static_argnames="f")
def _leave_one_out(f, x_D, bg_NxD):
    d, n = x_D.shape[0], bg_NxD.shape[0]
    eye_DxD = jnp.eye(d, dtype=bool)
    # masked[i, b] = x with feature i set to background row b's value: (D, N, D)
    masked_DxNxD = jnp.where(eye_DxD[:, None, :], bg_NxD[None, :, :], x_D[None, None, :])
    scores_DxN = _scores(f, masked_DxNxD.reshape(d * n, d)).reshape(d, n)
    return _scores(f, x_D[None])[0] - scores_DxN.mean(axis=1)


def leave_one_out(f, x, baseline) -> jax.Array:
    """Change in f when each feature in turn is set to its baseline value.

    delta_i = f(x) - mean_b f(x with x_i := b_i); all D masked copies (times N background
    rows) go through f in one batched call.

    Args:
      f: batch (B, D) -> scores (B,).
      x: (D,) the row to explain.
      baseline: (D,) row or (N, D) background set.
    Returns:
      (D,) deltas; positive where the feature pushes the score up relative to its baseline.
    """
    x, bg = _as_inputs(f, x, baseline)
    return _leave_one_out(f, x, bg)


# ---- Shapley values ---------------------------------------------------------------------------


def shapley_weights(d: int) -> np.ndarray:
    """(D,) float64: w[k] = k! (D-k-1)! / D!, the weight of a coalition of size k
    (not containing i) in phi_i = sum_S w[|S|] (v(S + i) - v(S))."""
    k = np.arange(d)
    log_w = np.array([math.lgamma(i + 1) + math.lgamma(d - i) - math.lgamma(d + 1) for i in k])
    return np.exp(log_w)


def _coalitions_per_chunk(d: int, n: int, batch_size: int) -> int:
    """Largest power of two <= batch_size // n (at least 1, at most 2^d): chunks tile 2^d."""
    per = max(1, batch_size // n)
    return min(1 << (per.bit_length() - 1), 1 << d)


@partial(jax.jit, static_argnames=("f", "batch_size"))
def _shapley_exact(f, x_D, bg_NxD, batch_size):
    d, n = x_D.shape[0], bg_NxD.shape[0]
    dtype = x_D.dtype
    k_per_chunk = _coalitions_per_chunk(d, n, batch_size)
    num_chunks = (1 << d) // k_per_chunk
    bits_D = jnp.arange(d, dtype=jnp.int32)

    def chunk_values(_, c):
        s_K = c * k_per_chunk + jnp.arange(k_per_chunk, dtype=jnp.int32)  # coalition id = bitmask
        in_KxD = ((s_K[:, None] >> bits_D) & 1).astype(bool)
        inputs_KxNxD = jnp.where(in_KxD[:, None, :], x_D, bg_NxD[None])
        return None, _scores(f, inputs_KxNxD.reshape(k_per_chunk * n, d)).reshape(k_per_chunk, n).mean(axis=1)

    _, value_CxK = jax.lax.scan(chunk_values, None, jnp.arange(num_chunks))
    value_S = value_CxK.reshape(1 << d)  # v(S) for every coalition S, indexed by its bitmask
    size_S = jax.lax.population_count(jnp.arange(1 << d, dtype=jnp.int32))
    # the weight of S as a coalition lacking i depends on |S| only (entries for S holding i unused)
    weight_S = jnp.asarray(shapley_weights(d), dtype)[jnp.minimum(size_S, d - 1)]
    phi = []
    for i in range(d):  # pair each S lacking i with S + i: bit i is axis 1 of this view
        pairs = value_S.reshape(1 << (d - 1 - i), 2, 1 << i)
        gain = pairs[:, 1, :] - pairs[:, 0, :]  # v(S + i) - v(S): exactly zero for a dummy feature
        phi.append(jnp.vdot(weight_S.reshape(1 << (d - 1 - i), 2, 1 << i)[:, 0, :], gain))
    phi_D = jnp.stack(phi)
    return ShapleyValues(phi_D, jnp.zeros_like(phi_D), value_S[0], value_S[-1])


def _ranks(keys_D):
    """Rank of each key, ties broken by index: the positions of a random permutation.
    Counting (D^2 comparisons, vectorised) beats two sorts on a CPU for moderate D."""
    d = keys_D.shape[0]
    if d > 256:
        return jnp.argsort(jnp.argsort(keys_D, stable=True), stable=True)
    index_D = jnp.arange(d)
    before_DxD = (keys_D[None, :] < keys_D[:, None]) | \
        ((keys_D[None, :] == keys_D[:, None]) & (index_D[None, :] < index_D[:, None]))
    return before_DxD.sum(axis=1)


@partial(jax.jit, static_argnames=("f", "pairs_per_row", "batch_size"))
def _shapley_sampling(f, x_D, bg_NxD, key, pairs_per_row, batch_size):
    d, n = x_D.shape[0], bg_NxD.shape[0]
    num_pairs = pairs_per_row * n
    output = _scores(f, x_D[None])[0]
    base_N = _scores(f, bg_NxD)
    # A uniformly random permutation per pair, from random keys: rank_i = position of feature i.
    # Pair p is walked against background row p % n (every row equally often).
    keys_PxD = jax.random.bits(key, (num_pairs, d), jnp.uint32)
    row_P = jnp.arange(num_pairs) % n
    prefix_K = jnp.arange(1, d)  # interior walk points; the ends are f(b) and f(x)

    def one_pair(args):
        keys_D, row = args
        rank_D = _ranks(keys_D)
        b_D = bg_NxD[row]
        fwd_KxD = rank_D[None, :] < prefix_K[:, None]  # first k features of the permutation
        rev_KxD = rank_D[None, :] >= d - prefix_K[:, None]  # first k of the reversed permutation
        scores_2K = _scores(f, jnp.where(jnp.concatenate([fwd_KxD, rev_KxD]), x_D, b_D))
        ends = (base_N[row][None], output[None])
        walk_fwd = jnp.concatenate([ends[0], scores_2K[: d - 1], ends[1]])  # v(prefix of size 0..d)
        walk_rev = jnp.concatenate([ends[0], scores_2K[d - 1:], ends[1]])
        gain_fwd = walk_fwd[rank_D + 1] - walk_fwd[rank_D]  # feature i joins at step rank_i + 1
        gain_rev = walk_rev[d - rank_D] - walk_rev[d - rank_D - 1]
        return 0.5 * (gain_fwd + gain_rev)

    pairs_per_call = max(1, batch_size // (2 * (d - 1)))
    phi_PxD = jax.lax.map(one_pair, (keys_PxD, row_P), batch_size=min(pairs_per_call, num_pairs))
    phi_D = phi_PxD.mean(axis=0)
    # Stratified by background row: the error comes only from the permutations drawn
    # within each row's stratum (pooled variance); with one pair per row, fall back to the
    # plain variance over pairs, which also counts the spread between rows (conservative).
    if pairs_per_row >= 2:
        by_row_MxNxD = phi_PxD.reshape(pairs_per_row, n, d)
        var_D = by_row_MxNxD.var(axis=0, ddof=1).mean(axis=0)
    else:
        var_D = phi_PxD.var(axis=0, ddof=1) if num_pairs > 1 else jnp.full((d,), jnp.inf, phi_D.dtype)
    stderr_D = jnp.sqrt(var_D / num_pairs)
    return ShapleyValues(phi_D, stderr_D, base_N.mean(), output)


def shapley(f, x, baseline, *, method: str = "exact", num_samples: int = 512, key=None,
            batch_size: int = DEFAULT_BATCH_SIZE) -> ShapleyValues:
    """Shapley values of the features of `x` for the score `f`.

    The value of a coalition S is v(S) = mean_b f(x on S, b off S) over the background
    rows b (one row when `baseline` is a row), and
        phi_i = sum_{S not containing i} |S|! (D-|S|-1)! / D! * (v(S + i) - v(S)).

    method="exact": every one of the 2^D coalitions, N background rows each, through f in
      chunks of about `batch_size` rows (a `lax.scan`), combined with the weights above.
      Cost 2^D * N evaluations of f: practical to D ~ 20 (refused above 24).
    method="sampling": `num_samples` antithetic pairs -- a uniformly random order of the
      features and its reverse -- each walked from a background row to x one feature at a
      time; a feature's marginal gain along the walk is an unbiased estimate of phi_i.
      Pairs are spread evenly over the background rows (num_samples is rounded up to a
      multiple of N), which removes the spread between rows from the error. Cost
      2 (D-1) evaluations per pair. Needs `key`.

    Both methods satisfy efficiency, sum(values) = output - base_value, up to rounding.

    Args:
      f: batch (B, D) -> scores (B,).
      x: (D,) the row to explain.
      baseline: (D,) row or (N, D) background set.
      method: "exact" or "sampling".
      num_samples: antithetic permutation pairs (sampling).
      key: a jax.random key (sampling).
      batch_size: rows per call of f (memory versus vectorisation).
    Returns:
      ShapleyValues(values (D,), stderr (D,), base_value (), output ()).
    """
    x, bg = _as_inputs(f, x, baseline)
    batch_size = _check_batch_size(batch_size)
    d, n = x.shape[0], bg.shape[0]
    if method == "exact":
        if d > MAX_EXACT_FEATURES:
            raise JaxdlError(f"exact Shapley values need 2^D coalitions; D={d} is too many (limit "
                             f"{MAX_EXACT_FEATURES}): use method='sampling'")
        return _shapley_exact(f, x, bg, batch_size)
    if method == "sampling":
        if key is None:
            raise JaxdlError("method='sampling' needs a key, e.g. key=jax.random.key(0)")
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise JaxdlError(f"num_samples must be a positive integer, got {num_samples!r}")
        if d == 1:  # one feature: phi = f(x) - base exactly
            return _shapley_exact(f, x, bg, batch_size)
        pairs_per_row = -(-int(num_samples) // n)
        return _shapley_sampling(f, x, bg, key, pairs_per_row, batch_size)
    raise JaxdlError(f"method must be 'exact' or 'sampling', got {method!r}")


# ---- gradients --------------------------------------------------------------------------------


def _row_grad(f):
    """Gradient of f at each row of a batch, exact for any f (rows never mix)."""
    return jax.vmap(jax.grad(lambda z_D: _scores(f, z_D[None])[0]))


def _quadrature(steps: int, rule: str):
    """Nodes alpha in [0, 1] and weights summing to 1."""
    if rule == "trapezoid":
        alpha = np.linspace(0.0, 1.0, steps + 1)
        weight = np.full(steps + 1, 1.0 / steps)
        weight[[0, -1]] *= 0.5
    elif rule == "gauss":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alpha, weight = 0.5 * (nodes + 1.0), 0.5 * weights
    elif rule == "riemann":  # right endpoints, as in Sundararajan et al. (2017)
        alpha = np.arange(1, steps + 1) / steps
        weight = np.full(steps, 1.0 / steps)
    else:
        raise JaxdlError(f"rule must be 'trapezoid', 'gauss' or 'riemann', got {rule!r}")
    return alpha, weight


@partial(jax.jit, static_argnames=("f",))
def _integrated_gradients(f, x_D, bg_NxD, alpha_S, weight_S):
    d, n = x_D.shape[0], bg_NxD.shape[0]
    delta_NxD = x_D[None] - bg_NxD
    path_SxNxD = bg_NxD[None] + alpha_S[:, None, None] * delta_NxD[None]
    grads_SxNxD = _row_grad(f)(path_SxNxD.reshape(-1, d)).reshape(alpha_S.shape[0], n, d)
    mean_grad_NxD = jnp.tensordot(weight_S, grads_SxNxD, axes=1)
    return (delta_NxD * mean_grad_NxD).mean(axis=0)


def integrated_gradients(f, x, baseline, steps: int = 64, *, rule: str = "trapezoid") -> jax.Array:
    """Integrated gradients: IG_i = (x_i - b_i) * int_0^1 df/dx_i(b + a (x - b)) da.

    The integral is a quadrature over `steps` intervals ('trapezoid', error O(1/steps^2);
    'gauss', Gauss-Legendre with `steps` nodes; 'riemann', right endpoints). With a
    background set (N, D) the attributions are averaged over its rows (expected gradients
    on a fixed grid). Completeness: sum_i IG_i -> f(x) - mean_b f(b) as steps grow.

    Returns: (D,) attributions.
    """
    x, bg = _as_inputs(f, x, baseline)
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise JaxdlError(f"steps must be a positive integer, got {steps!r}")
    alpha, weight = _quadrature(int(steps), rule)
    return _integrated_gradients(f, x, bg, jnp.asarray(alpha, x.dtype), jnp.asarray(weight, x.dtype))


@partial(jax.jit, static_argnames=("f",))
def _gradient_x_input(f, x_D, bg_NxD):
    return _row_grad(f)(x_D[None])[0] * (x_D - bg_NxD.mean(axis=0))


def gradient_x_input(f, x, baseline=None) -> jax.Array:
    """grad f(x) * (x - baseline): one gradient, a first-order (Taylor) attribution.

    `baseline` defaults to zeros (plain gradient x input); a background set (N, D) is
    replaced by its mean. Exact Shapley values for a linear f; for a curved f it only sees
    the slope at x.

    Returns: (D,) attributions.
    """
    x, bg = _as_inputs(f, x, baseline, allow_none=True)
    return _gradient_x_input(f, x, bg)
