"""Feature attributions (jaxdl/interpret.py) against independent computations, in float64.

The reference Shapley values are a brute force over subsets written here in NumPy and
itertools (the textbook formula, nothing shared with the module); the properties --
efficiency, symmetry, dummy, linearity, the closed form of a linear model -- are checked
exactly; the sampled values are checked against their own standard errors. (Agreement
with the `shap` library to 1e-6 is checked by the benchmark, where `shap` is a peer.)
"""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import interpret
from jaxdl.cli import load_experiment
from jaxdl.errors import JaxdlError


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _mlp(d, hidden, seed):
    """The same tanh MLP twice: a NumPy version for the reference, a jnp version to explain."""
    rng = np.random.default_rng(seed)
    W1, b1, W2 = rng.normal(size=(d, hidden)), rng.normal(size=hidden), rng.normal(size=hidden)

    def f_np(X):
        return np.tanh(X @ W1 + b1) @ W2

    def f_jnp(X):
        return jnp.tanh(X @ W1 + b1) @ W2

    return f_np, f_jnp


def brute_force_shapley(f_np, x, background):
    """phi_i = sum over S not containing i of |S|!(d-|S|-1)!/d! (v(S+i) - v(S)),
    v(S) = mean over background rows of f(x on S, row elsewhere)."""
    d = len(x)

    def value(S):
        Z = np.array(background, dtype=np.float64, copy=True)
        Z[:, list(S)] = x[list(S)]
        return f_np(Z).mean()

    phi = np.zeros(d)
    for i in range(d):
        others = [j for j in range(d) if j != i]
        for k in range(d):
            weight = math.factorial(k) * math.factorial(d - k - 1) / math.factorial(d)
            for S in itertools.combinations(others, k):
                phi[i] += weight * (value(S + (i,)) - value(S))
    return phi


D = 7
F_NP, F = _mlp(D, 5, seed=0)
RNG = np.random.default_rng(1)
X = RNG.normal(size=D)
BACKGROUND = RNG.normal(size=(5, D))


@pytest.mark.parametrize("n_background,batch_size", [(1, 16), (1, 10**6), (5, 8), (5, 64)])
def test_exact_equals_brute_force(n_background, batch_size):
    bg = BACKGROUND[:n_background]
    got = interpret.shapley(F, X, bg if n_background > 1 else bg[0], batch_size=batch_size)
    np.testing.assert_allclose(got.values, brute_force_shapley(F_NP, X, bg), rtol=0, atol=1e-10)
    assert got.values.dtype == jnp.float64
    np.testing.assert_allclose(got.base_value, F_NP(bg).mean(), atol=1e-12)
    np.testing.assert_allclose(got.output, F_NP(X[None])[0], atol=1e-12)
    assert np.all(np.asarray(got.stderr) == 0)


def test_efficiency_exact():
    d = 12
    f_np, f = _mlp(d, 8, seed=2)
    rng = np.random.default_rng(3)
    x, bg = rng.normal(size=d), rng.normal(size=(4, d))
    got = interpret.shapley(f, x, bg)
    np.testing.assert_allclose(float(got.values.sum()), f_np(x[None])[0] - f_np(bg).mean(), atol=1e-10)


def _symmetric_f(X):
    """Symmetric in features 0 and 1, with interactions everywhere; feature 5 is a dummy."""
    return jnp.tanh(X[..., 0] + X[..., 1] + X[..., 2] * X[..., 3]) + X[..., 0] * X[..., 1] * X[..., 4] \
        + 0.0 * jnp.sin(X[..., 5])


def test_symmetry_and_dummy_exact():
    x = np.array([0.7, 0.7, -1.2, 0.4, 2.0, 3.0])
    bg = RNG.normal(size=(4, 6))
    bg[:, 1] = bg[:, 0]  # swapping features 0 and 1 leaves every input the same
    got = interpret.shapley(_symmetric_f, x, bg)
    assert abs(float(got.values[0] - got.values[1])) < 1e-12
    assert float(got.values[5]) == 0.0
    loo = interpret.leave_one_out(_symmetric_f, x, bg)
    assert abs(float(loo[0] - loo[1])) < 1e-12 and float(loo[5]) == 0.0


def test_dummy_is_exactly_zero_for_every_method():
    x = np.array([0.7, -0.3, -1.2, 0.4, 2.0, 3.0])
    bg = RNG.normal(size=(4, 6))
    sampled = interpret.shapley(_symmetric_f, x, bg, method="sampling", num_samples=8, key=jax.random.key(0))
    assert float(sampled.values[5]) == 0.0 and float(sampled.stderr[5]) == 0.0
    assert float(interpret.integrated_gradients(_symmetric_f, x, bg, steps=8)[5]) == 0.0
    assert float(interpret.gradient_x_input(_symmetric_f, x, bg)[5]) == 0.0


def test_linearity():
    _, g = _mlp(D, 4, seed=5)

    def h(X):
        return F(X) + 2.0 * g(X)

    for kw in ({"method": "exact"}, {"method": "sampling", "num_samples": 20, "key": jax.random.key(3)}):
        lhs = interpret.shapley(h, X, BACKGROUND, **kw).values
        rhs = interpret.shapley(F, X, BACKGROUND, **kw).values + 2.0 * interpret.shapley(g, X, BACKGROUND, **kw).values
        np.testing.assert_allclose(lhs, rhs, atol=1e-10)


@pytest.mark.parametrize("n_background", [1, 5])
def test_linear_model_closed_form(n_background):
    """phi_i = w_i (x_i - mean_b b_i) for every method (a linear f has no interactions and a
    constant gradient, so even the sampled and integrated versions are exact)."""
    w = np.array([1.5, -2.0, 0.0, 0.3, 4.0, -0.7, 1.0])

    def linear(X):
        return X @ w + 0.25

    bg = BACKGROUND[:n_background]
    expected = w * (X - bg.mean(axis=0))
    results = {
        "exact": interpret.shapley(linear, X, bg).values,
        "sampling": interpret.shapley(linear, X, bg, method="sampling", num_samples=10, key=jax.random.key(1)).values,
        "leave_one_out": interpret.leave_one_out(linear, X, bg),
        "integrated_gradients": interpret.integrated_gradients(linear, X, bg, steps=3),
        "gradient_x_input": interpret.gradient_x_input(linear, X, bg),
    }
    for name, got in results.items():
        np.testing.assert_allclose(got, expected, atol=1e-10, err_msg=name)


def test_sampling_converges_within_its_standard_errors():
    d = 8
    f_np, f = _mlp(d, 6, seed=7)
    rng = np.random.default_rng(8)
    x, bg = rng.normal(size=d) * 1.5, rng.normal(size=(5, d))
    exact = np.asarray(interpret.shapley(f, x, bg).values)
    z_scores, ses, errors = [], {}, {}
    for num_samples in (100, 1600):
        for seed in range(4):
            got = interpret.shapley(f, x, bg, method="sampling", num_samples=num_samples, key=jax.random.key(seed))
            err, se = np.asarray(got.values) - exact, np.asarray(got.stderr)
            np.testing.assert_allclose(float(got.values.sum()), f_np(x[None])[0] - f_np(bg).mean(), atol=1e-10)
            z_scores.extend(err / se)
            ses.setdefault(num_samples, []).append(se.mean())
            errors.setdefault(num_samples, []).append(np.sqrt(np.mean(err ** 2)))
    z = np.abs(np.array(z_scores))
    assert z.max() < 4.5, z.max()
    assert np.mean(z < 2.0) >= 0.85, np.mean(z < 2.0)
    assert 0.5 < np.sqrt(np.mean(z ** 2)) < 1.6  # the errors are not much smaller than claimed either
    # 16x the pairs: standard errors and actual errors fall about 4x
    assert 3.0 < np.mean(ses[100]) / np.mean(ses[1600]) < 5.3
    assert np.mean(errors[1600]) < np.mean(errors[100]) / 2.5


def test_sampling_one_pair_per_row_is_conservative_and_rounds_up():
    d = 6
    _, f = _mlp(d, 4, seed=9)
    bg = RNG.normal(size=(5, d))
    x = RNG.normal(size=d)
    few = interpret.shapley(f, x, bg, method="sampling", num_samples=3, key=jax.random.key(0))
    five = interpret.shapley(f, x, bg, method="sampling", num_samples=5, key=jax.random.key(0))
    np.testing.assert_array_equal(few.values, five.values)  # 3 pairs round up to one per background row
    assert np.all(np.isfinite(few.stderr)) and np.all(np.asarray(few.stderr) > 0)


def test_random_ranks_are_permutations_with_ties_broken_by_index():
    keys = jax.random.bits(jax.random.key(0), (300,), jnp.uint32) % 40  # many ties
    for d in (7, 300):  # counting below 256 features, two sorts above
        ranks = np.asarray(interpret._ranks(keys[:d]))
        np.testing.assert_array_equal(np.sort(ranks), np.arange(d))
        np.testing.assert_array_equal(ranks, np.argsort(np.argsort(np.asarray(keys[:d]), kind="stable"), kind="stable"))
    w = np.linspace(-1.0, 1.0, 300)
    x, bg = RNG.normal(size=300), RNG.normal(size=(2, 300))
    got = interpret.shapley(lambda X: X @ w, x, bg, method="sampling", num_samples=2, key=jax.random.key(1))
    np.testing.assert_allclose(got.values, w * (x - bg.mean(0)), atol=1e-10)


def test_integrated_gradients_completeness_as_steps_grow():
    f_np, f = _mlp(D, 5, seed=11)
    target = f_np(X[None])[0] - f_np(BACKGROUND).mean()
    gaps = {}
    for rule in ("trapezoid", "gauss", "riemann"):
        gaps[rule] = [abs(float(interpret.integrated_gradients(f, X, BACKGROUND, steps=s, rule=rule).sum()) - target)
                      for s in (4, 16, 64, 256)]
        # smaller with every step count, until float64's floor (Gauss-Legendre reaches it by 64)
        assert all(a > b or b < 1e-14 for a, b in zip(gaps[rule], gaps[rule][1:])), (rule, gaps[rule])
    assert gaps["trapezoid"][-1] < 1e-4 and gaps["gauss"][-1] < 1e-10
    assert gaps["trapezoid"][2] / gaps["trapezoid"][3] > 10  # second order: 4x the steps, ~16x smaller
    assert gaps["riemann"][-1] > gaps["trapezoid"][-1]


def test_leave_one_out_matches_explicit_loop():
    got = interpret.leave_one_out(F, X, BACKGROUND)
    expected = []
    for i in range(D):
        masked = np.tile(X, (len(BACKGROUND), 1))
        masked[:, i] = BACKGROUND[:, i]
        expected.append(F_NP(X[None])[0] - F_NP(masked).mean())
    np.testing.assert_allclose(got, expected, atol=1e-12)
    row = interpret.leave_one_out(F, X, np.zeros(D))
    np.testing.assert_allclose(row[2], F_NP(X[None])[0] - F_NP(np.where(np.arange(D) == 2, 0.0, X)[None])[0],
                               atol=1e-12)


def test_gradient_x_input_is_autodiff_times_input():
    grad = jax.grad(lambda z: F(z[None])[0])(jnp.asarray(X))
    np.testing.assert_allclose(interpret.gradient_x_input(F, X), grad * X, atol=1e-12)


def test_vmap_and_jit_over_rows():
    rows = RNG.normal(size=(3, D))
    batched = jax.jit(jax.vmap(lambda r: interpret.shapley(F, r, BACKGROUND).values))(rows)
    looped = np.stack([interpret.shapley(F, r, BACKGROUND).values for r in rows])
    np.testing.assert_allclose(batched, looped, atol=1e-12)
    ig = jax.vmap(lambda r: interpret.integrated_gradients(F, r, BACKGROUND, steps=8))(rows)
    np.testing.assert_allclose(ig[1], interpret.integrated_gradients(F, rows[1], BACKGROUND, steps=8), atol=1e-12)


def test_weight_importance():
    rng = np.random.default_rng(4)
    w1, w2 = rng.normal(size=(3, 5)), rng.normal(size=(2, 3))  # (out, in): 5 features
    np.testing.assert_allclose(interpret.weight_importance({"w": np.array([1.0, -2.0]), "b": 0.0}), [1.0, 2.0])
    np.testing.assert_allclose(interpret.weight_importance({"w": w1, "b": np.zeros(3)}),
                               [np.sqrt(sum(w1[h, i] ** 2 for h in range(3))) for i in range(5)])
    mlp = [{"w": w1, "b": np.zeros(3)}, {"w": w2, "b": np.zeros(2)}]
    np.testing.assert_allclose(interpret.weight_importance(mlp, ord=1), np.abs(w1).sum(0))
    np.testing.assert_allclose(interpret.weight_importance(mlp, ord=np.inf), np.abs(w1).max(0))


@pytest.mark.parametrize("call,msg", [
    (lambda: interpret.shapley(F, X[None], BACKGROUND), "one input row of shape (D,)"),
    (lambda: interpret.shapley(F, X, BACKGROUND[:, :3]), "baseline must be a row (7,)"),
    (lambda: interpret.shapley(F, X, BACKGROUND, method="kernel"), "method must be"),
    (lambda: interpret.shapley(F, X, BACKGROUND, method="sampling"), "needs a key"),
    (lambda: interpret.shapley(F, X, BACKGROUND, method="sampling", num_samples=0, key=jax.random.key(0)),
     "num_samples"),
    (lambda: interpret.shapley(F, X, BACKGROUND, batch_size=0), "batch_size"),
    (lambda: interpret.shapley(lambda Z: Z, X, BACKGROUND), "one score per row"),
    (lambda: interpret.shapley(lambda Z: Z @ np.ones(3), X, BACKGROUND), "f failed on a batch"),
    (lambda: interpret.shapley(lambda Z: Z.sum(-1), np.zeros(25), np.zeros(25)), "use method='sampling'"),
    (lambda: interpret.leave_one_out(F, X, None), "baseline is required"),
    (lambda: interpret.integrated_gradients(F, X, BACKGROUND, steps=0), "steps"),
    (lambda: interpret.integrated_gradients(F, X, BACKGROUND, rule="simpson"), "rule must be"),
    (lambda: interpret.weight_importance({"kernel": np.ones(3)}), "weight_importance expects"),
])
def test_bad_input_is_one_clear_error(call, msg):
    with pytest.raises(JaxdlError, match=None) as info:
        call()
    assert msg in str(info.value) and "\n" not in str(info.value)


def test_experiment_writes_table_correlations_and_plots(tmp_path):
    """`make exp NAME=interpret` with its smoke flags: every artefact, consistent numbers."""
    import json

    experiment = load_experiment("interpret")
    from jaxdl.cli import main as cli_main

    out = tmp_path / "run"
    with jax.enable_x64(False):  # as a user runs it: float32
        assert cli_main(["exp", "interpret", "--out", str(out), "--no-progress", *experiment.SMOKE_ARGS]) == 0
    report = json.loads((out / "importance.json").read_text())
    bc = report["breast_cancer"]
    assert len(report["feature_names"]) == 30 and "mean radius" in report["feature_names"]
    assert set(bc["importance"]) == set(experiment.METHODS)
    assert all(len(v) == 30 and min(v) >= 0 for v in bc["importance"].values())
    rho = np.array(bc["rank_correlation"]["spearman"])
    np.testing.assert_allclose(np.diag(rho), 1.0)
    np.testing.assert_allclose(rho, rho.T, atol=1e-12)
    assert bc["shapley_max_efficiency_gap"] < 1e-4  # float32: sum(phi) = f(x) - E f(b) up to rounding
    assert len(report["digits"]["maps"]["shapley"]) == 10 and len(report["digits"]["maps"]["shapley"][0]) == 64
    table = (out / "top_features.md").read_text().splitlines()
    assert len(table) == 2 + 10 and table[0].startswith("| rank | weight |")
    for png in ("importance.png", "digits_heatmaps.png", "curves.png"):
        assert (out / png).stat().st_size > 5000
    assert json.loads((out / "summary.json").read_text())["finished"] is True
    assert (out / "digits" / "summary.json").is_file()
