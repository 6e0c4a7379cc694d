"""jaxdl.matcalc: vec, the layout arrangement of `jacobian` (against finite differences and
explicit index formulas), forward/reverse agreement, `check` reports, bad input."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import matcalc
from jaxdl.errors import JaxdlError
from jaxdl.verify import check_matcalc


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


# ---- vec ---------------------------------------------------------------------------------------

def test_vec_stacks_columns_and_unvec_inverts():
    X = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(matcalc.vec(X), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
    np.testing.assert_array_equal(matcalc.unvec(matcalc.vec(X), X.shape), X)
    np.testing.assert_array_equal(matcalc.vec(jnp.array([1.0, 2.0])), [1.0, 2.0])
    assert matcalc.vec(jnp.array(3.0)).shape == (1,)
    with pytest.raises(JaxdlError, match="unvec: a vector of 6 entries"):
        matcalc.unvec(jnp.ones(5), (2, 3))


@pytest.mark.parametrize("p,q,r,s", [(2, 3, 4, 5), (1, 4, 3, 1), (3, 3, 3, 3)])
def test_vec_of_AXB_is_kron_of_BT_and_A(p, q, r, s):
    A, X, B = rand(0, r, p), rand(1, p, q), rand(2, q, s)
    lhs = matcalc.vec(A @ X @ B)
    rhs = jnp.kron(B.T, A) @ matcalc.vec(X)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_commutation_matrix():
    X = rand(3, 2, 5)
    K = matcalc.commutation_matrix(2, 5)
    np.testing.assert_array_equal(K @ matcalc.vec(X), matcalc.vec(X.T))
    np.testing.assert_array_equal(K.T @ K, np.eye(10))


# ---- the arrangement -------------------------------------------------------------------------------

SHAPES = {"scalar": (), "vector": (3,), "matrix": (2, 4)}
F_SHAPES = {"scalar": (), "vector": (5,), "matrix": (3, 2)}


def make_f(f_shape, x_shape, xp=jnp):
    """A smooth function with every output depending on every input, differently; `xp` is
    jnp for autodiff or np for the finite differences."""
    m, n = math.prod(f_shape), math.prod(x_shape)
    C = rand(7, m, n)

    def f(x):
        v = xp.reshape(x, (-1,))  # row-major: any fixed order of x's entries will do
        return xp.reshape(xp.sin(C @ v) + (C ** 2) @ (v ** 3), f_shape)

    return f


def finite_difference_partials(f_np, x, f_shape):
    """P[i..., j...] = d f[i...] / d x[j...] by central differences (no autodiff)."""
    x = np.asarray(x, np.float64)
    P = np.zeros(tuple(f_shape) + x.shape)
    h = 1e-6
    for j in itertools.product(*map(range, x.shape)):
        e = np.zeros_like(x)
        e[j] = h
        P[(Ellipsis, *j)] = (f_np(x + e) - f_np(x - e)) / (2 * h)
    return P


def expected_layout(P, f_shape, x_shape, layout):
    """Build the arrangement entry by entry from the written rules in the module docstring."""
    fk, xk = len(f_shape), len(x_shape)
    if fk == 0 and xk == 2:  # D[a, b] = df/dX[a, b]; N = D^T
        D = P
        return D if layout == "denominator" else D.T
    if fk == 2 and xk == 0:  # N[a, b] = dF[a, b]/dx; D = N^T
        return P if layout == "numerator" else P.T
    f_idx = [()] if fk == 0 else [(i,) for i in range(f_shape[0])] if fk == 1 else \
        [(a, b) for b in range(f_shape[1]) for a in range(f_shape[0])]  # vec order: first index fastest
    x_idx = [()] if xk == 0 else [(j,) for j in range(x_shape[0])] if xk == 1 else \
        [(a, b) for b in range(x_shape[1]) for a in range(x_shape[0])]
    N = np.zeros((len(f_idx), len(x_idx)))
    for i, fi in enumerate(f_idx):
        for j, xj in enumerate(x_idx):
            N[i, j] = P[fi + xj]
    return N if layout == "numerator" else N.T


TABLE = {  # (f kind, x kind) -> numerator shape for F_SHAPES/SHAPES, from the module docstring
    ("scalar", "scalar"): (1, 1), ("scalar", "vector"): (1, 3), ("scalar", "matrix"): (4, 2),
    ("vector", "scalar"): (5, 1), ("vector", "vector"): (5, 3), ("vector", "matrix"): (5, 8),
    ("matrix", "scalar"): (3, 2), ("matrix", "vector"): (6, 3), ("matrix", "matrix"): (6, 8),
}


@pytest.mark.parametrize("f_kind,x_kind", list(TABLE))
def test_arrangement_shape_and_entries_in_both_modes(f_kind, x_kind):
    f_shape, x_shape = F_SHAPES[f_kind], SHAPES[x_kind]
    f = make_f(f_shape, x_shape)
    x = rand(11, *x_shape) * 0.5
    partials = finite_difference_partials(make_f(f_shape, x_shape, np), x, f_shape)
    numerator = TABLE[(f_kind, x_kind)]
    for layout in matcalc.LAYOUTS:
        want = expected_layout(partials, f_shape, x_shape, layout)
        assert want.shape == (numerator if layout == "numerator" else numerator[::-1])
        assert matcalc.layout_shape(f_shape, x_shape, layout) == want.shape
        for mode in ("fwd", "rev"):
            J = matcalc.jacobian(f, jnp.asarray(x), layout=layout, mode=mode)
            assert J.shape == want.shape, (layout, mode)
            np.testing.assert_allclose(J, want, rtol=1e-6, atol=1e-6, err_msg=f"{layout} {mode}")
    auto = {layout: matcalc.jacobian(f, jnp.asarray(x), layout=layout) for layout in matcalc.LAYOUTS}
    np.testing.assert_array_equal(auto["denominator"], auto["numerator"].T)  # always transposes


def test_arrangement_on_known_derivatives():
    A, x, X = rand(1, 2, 3), rand(2, 3), rand(3, 3, 2)
    np.testing.assert_array_equal(matcalc.jacobian(lambda x: A @ x, x, layout="numerator"), A)
    np.testing.assert_array_equal(matcalc.jacobian(lambda x: A @ x, x, layout="denominator"), A.T)
    g = matcalc.jacobian(lambda x: x @ x, x, layout="denominator")
    assert g.shape == (3, 1)
    np.testing.assert_allclose(g[:, 0], 2 * x)
    B = rand(4, 2, 3)  # tr(B X) for X (3, 2): gradient B^T, of X's shape
    np.testing.assert_allclose(matcalc.jacobian(lambda X: jnp.trace(B @ X), X, layout="denominator"), B.T)
    np.testing.assert_allclose(matcalc.jacobian(lambda X: jnp.trace(B @ X), X, layout="numerator"), B)


def test_jacobian_jits():
    A = rand(1, 4, 4)
    J = jax.jit(lambda x: matcalc.jacobian(lambda v: v @ A @ v, x))(rand(2, 4))
    np.testing.assert_allclose(J[0], rand(2, 4) @ (A + A.T), rtol=1e-12)


# ---- forward and reverse mode ------------------------------------------------------------------------

def test_mode_chosen_by_shape(monkeypatch):
    assert matcalc.choose_mode(1, 10) == "rev" and matcalc.choose_mode(10, 1) == "fwd"
    assert matcalc.choose_mode(4, 4) == "fwd"
    used = []
    for name in ("jacfwd", "jacrev"):
        real = getattr(jax, name)
        monkeypatch.setattr(jax, name, lambda f, _real=real, _name=name: (used.append(_name), _real(f))[1])
    matcalc.jacobian(lambda x: x @ x, jnp.ones(5))  # 1 output, 5 inputs
    matcalc.jacobian(lambda x: jnp.stack([x, x ** 2]), jnp.ones(()))  # 2 outputs, 1 input
    assert used == ["jacrev", "jacfwd"]


def test_forward_and_reverse_agree_on_catalogue_identities():
    """Every arrangement kind of the catalogue (scalar/vector/matrix of scalar/vector/matrix)."""
    names = ["A x", "x x^T (via vec)", "t a + t^2 b (vector of scalar)", "t A + t^2 B (matrix of scalar)",
             "log|det(X)|", "X^-1 (via vec)", "softmax(z)", "tr(X^T A X)"]
    picked = [i for i in check_matcalc.catalogue() if i.f_text in names]
    assert len(picked) == len(names)
    for identity in picked:
        fwd, rev = check_matcalc.forward_vs_reverse(identity, identity.sizes[-1])
        np.testing.assert_allclose(fwd, rev, rtol=1e-12, atol=1e-13, err_msg=identity.name)


# ---- check ------------------------------------------------------------------------------------------

def test_check_readme_example():
    A = jax.random.normal(jax.random.key(0), (4, 4), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (4,), jnp.float64)
    report = matcalc.check(lambda x: x @ A @ x, lambda x: (x @ (A + A.T))[None, :], x)
    assert report.passed and report.max_rel_err < 1e-14 and report.rtol == 1e-9
    assert str(report).startswith("PASS")


def test_the_wrong_derivation_fails():
    A, x = rand(0, 4, 4), rand(1, 4)  # not symmetric
    report = matcalc.check(lambda x: x @ A @ x, (2 * x @ A)[None, :], x, layout="numerator")
    assert not report.passed and report.max_rel_err > 0.1 and "exceeds rtol" in report.reason
    S = (A + A.T) / 2  # for a symmetric matrix it is right
    assert matcalc.check(lambda x: x @ S @ x, (2 * x @ S)[None, :], x, layout="numerator").passed


def test_check_explains_layout_shape_mistakes():
    A, x = rand(0, 3, 3), rand(1, 3)
    f = lambda x: x @ A @ x  # noqa: E731
    g = x @ (A + A.T)
    r = matcalc.check(f, g, x, layout="numerator")
    assert not r.passed and "ambiguous" in r.reason and "g[None, :]" in r.reason
    r = matcalc.check(f, g[:, None], x, layout="numerator")
    assert not r.passed and "denominator-layout shape" in r.reason
    assert matcalc.check(f, g[:, None], x, layout="denominator").passed
    r = matcalc.check(f, g[None, :] * np.nan, x, layout="numerator")
    assert not r.passed and "NaN" in r.reason


def test_check_tolerance_by_dtype_and_zero_derivatives():
    x32 = jnp.asarray(rand(0, 5), jnp.float32)
    r = matcalc.check(jnp.tanh, lambda x: jnp.diag(1 - jnp.tanh(x) ** 2), x32)
    assert r.passed and r.rtol == 1e-4 and r.dtype == "float32"
    assert not matcalc.check(jnp.tanh, lambda x: jnp.diag(1 - jnp.tanh(x) ** 2) * 1.001, x32).passed
    # x/|x| in one dimension is constant: roundoff in autodiff vs an exact 0 passes (atol) ...
    x1 = jnp.array([0.7])
    assert matcalc.check(lambda x: x / jnp.linalg.norm(x), jnp.zeros((1, 1)), x1).passed
    # ... but a wrong nonzero does not
    assert not matcalc.check(lambda x: x / jnp.linalg.norm(x), jnp.full((1, 1), 1e-6), x1).passed


def test_compare_pytrees():
    a = {"w": np.ones((2, 3)), "b": np.zeros(3)}
    assert matcalc.compare(a, a).passed
    r = matcalc.compare({"w": np.ones((2, 3))}, a)
    assert not r.passed and "structure" in r.reason
    r = matcalc.compare({"w": np.ones((2, 3)) * 1.1, "b": np.zeros(3)}, a)
    assert not r.passed and r.max_rel_err == pytest.approx(0.1)


@pytest.mark.parametrize("call,msg", [
    (lambda: matcalc.jacobian(jnp.sin, jnp.ones((2, 2, 2))), "x has shape (2, 2, 2)"),
    (lambda: matcalc.jacobian(lambda x: jnp.ones((2, 2, 2)) * x, jnp.ones(())), "f(x) has shape (2, 2, 2)"),
    (lambda: matcalc.jacobian(jnp.sin, jnp.arange(3)), "real floating-point"),
    (lambda: matcalc.jacobian(lambda x: (x, x), jnp.ones(3)), "must return one array"),
    (lambda: matcalc.jacobian(jnp.sin, jnp.ones(3), layout="mixed"), "layout must be one of"),
    (lambda: matcalc.jacobian(jnp.sin, jnp.ones(3), mode="sideways"), "mode must be one of"),
    (lambda: matcalc.check(jnp.sin, "cos", jnp.ones(3)), "must be an array"),
])
def test_bad_input_is_one_clear_error(call, msg):
    with pytest.raises(JaxdlError) as e:
        call()
    assert msg in str(e.value)


# ---- the catalogue ------------------------------------------------------------------------------------

def test_catalogue_size_and_shape_generators():
    ids = check_matcalc.catalogue()
    correct = [i for i in ids if not i.expect_fail]
    assert len(correct) >= 30 and len({i.name for i in ids}) == len(ids)
    wrong = [i for i in ids if i.expect_fail]
    assert [i.f_text for i in wrong] == ["x^T A x, A NOT symmetric"]
    for identity in ids:
        assert identity.layout in matcalc.LAYOUTS and len(identity.sizes) >= 3
        for dims in identity.sizes:
            inputs = check_matcalc.draw_inputs(identity, dims)
            assert {k: v.shape for k, v in inputs.items()} == {k: tuple(s) for k, s in identity.shapes(**dims).items()}
            assert identity.wrt in inputs and all(v.dtype == np.float64 for v in inputs.values())
    checks = check_matcalc.checks()
    assert len(checks) == 2 * sum(len(i.sizes) for i in ids)
    assert {c.layout for c in checks} == set(matcalc.LAYOUTS)


def test_wrong_derivation_reported_failing_in_both_layouts():
    for c in check_matcalc.checks():
        if c.expect_fail:
            report = matcalc.compare(*c.compute(), rtol=c.rtol, layout=c.layout)
            assert not report.passed and report.max_rel_err > 0.1, (c.name, c.layout, c.shapes)
