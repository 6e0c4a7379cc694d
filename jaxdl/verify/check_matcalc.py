"""A catalogue of hand-derived matrix-calculus identities, checked against autodiff.

Each identity is stated in one layout (the tag after it: "num" or "den"; see
`jaxdl.matcalc` for the layouts) together with a shape generator: `sizes` lists the
dimensions to try and `shapes(**dims)` gives every input's shape. Inputs are random
float64 arrays (autodiff runs under `jax.enable_x64(True)`, scoped to the check) seeded by the
identity's name and size, so every run checks the same numbers. Each (identity, size) is checked
in both layouts: in the stated one against the formula, in the other against its
transpose (the two layouts are transposes of each other in every case).

One identity is deliberately wrong -- xᵀAx -> 2xᵀA holds only for symmetric A -- and is
registered with `expect_fail=True`: `make verify` must report it failing.

Run them: `make verify` (or `python -m jaxdl verify --filter "x^T A x"`).
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.matcalc import LAYOUTS, commutation_matrix, jacobian
from jaxdl.verify.registry import Check, compile_fast

ShapeFn = Callable[..., dict[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Identity:
    """d f / d wrt = hand, stated in `layout`."""

    f_text: str  # what is differentiated, e.g. "x^T A x"
    wrt: str  # the input it is differentiated with respect to
    hand_text: str  # the hand-derived result, e.g. "x^T (A + A^T)"
    layout: str  # the layout `hand` is stated in
    sizes: tuple[dict[str, int], ...]  # the dimensions to try
    shapes: ShapeFn  # dims -> {input name: shape}
    f: Callable[[dict], jax.Array]  # inputs -> f
    hand: Callable[[dict], jax.Array]  # inputs -> the derivative in `layout`
    kinds: dict[str, str] = field(default_factory=dict)  # input name -> how to draw it (default normal)
    expect_fail: bool = False

    @property
    def name(self) -> str:
        tag = "num" if self.layout == "numerator" else "den"
        return f"d({self.f_text})/d{self.wrt} = {self.hand_text} ({tag})"


# ---- drawing inputs --------------------------------------------------------------------------------
# Inputs are drawn with NumPy's Generator, seeded from the identity's name and size: the same
# numbers on every run, and no threefry kernel to compile for each shape (compiling is most of
# the time `make verify` takes).

def _draw(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "sym":  # symmetric
        G = rng.standard_normal(shape)
        return (G + G.T) / 2
    if kind == "wellcond":  # square, eigenvalues near 2: safe to invert
        n = shape[0]
        return rng.standard_normal(shape) / np.sqrt(n) + 2 * np.eye(n)
    if kind == "awayzero":  # |entries| in [0.5, 1.5]: away from ReLU's kink
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 1.5, shape)
    if kind == "onehot":  # a one-hot label vector
        return np.eye(shape[0])[rng.integers(shape[0])]
    raise ValueError(f"unknown kind {kind!r}")


def draw_inputs(identity: Identity, dims: dict[str, int], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float64 inputs for one size of an identity, fixed by its name, size and `seed`."""
    rng = np.random.default_rng([seed, zlib.crc32(f"{identity.name} {sorted(dims.items())}".encode())])
    return {name: _draw(rng, identity.kinds.get(name, "normal"), shape)
            for name, shape in identity.shapes(**dims).items()}


def shapes_text(identity: Identity, dims: dict[str, int]) -> str:
    return " ".join(f"{name}:{tuple(shape)}" for name, shape in identity.shapes(**dims).items())


def _jacobian_of(identity: Identity, inputs: dict, *, layout: str, mode: str):
    f = lambda x: identity.f({**inputs, identity.wrt: x})  # noqa: E731
    return jacobian(f, inputs[identity.wrt], layout=layout, mode=mode)


@dataclass(frozen=True)
class Evaluation:
    """One identity at one size: float64 NumPy arrays."""

    inputs: dict[str, np.ndarray]
    hand: np.ndarray  # the hand formula, in the identity's stated layout
    jac: dict[str, np.ndarray]  # layout -> jacobian(f, x, layout=layout)


_EVALUATIONS: dict[tuple, Evaluation] = {}


def evaluate(identity: Identity, dims: dict[str, int], *, mode: str = "auto") -> Evaluation:
    """The hand formula and `jacobian` in both layouts at random float64 inputs (x64 scoped
    to this call), as one jitted computation; cached, since both layouts' checks share it."""
    cache_key = (identity.name, tuple(sorted(dims.items())), mode)
    if cache_key not in _EVALUATIONS:
        inputs = draw_inputs(identity, dims)
        with jax.enable_x64(True):
            def run(inputs):
                return identity.hand(inputs), {layout: _jacobian_of(identity, inputs, layout=layout, mode=mode)
                                               for layout in LAYOUTS}

            hand, jac = jax.device_get(compile_fast(run, inputs)(inputs))
        _EVALUATIONS[cache_key] = Evaluation(inputs, hand, jac)
    return _EVALUATIONS[cache_key]


def forward_vs_reverse(identity: Identity, dims: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """`jacobian` (numerator layout) computed with jacfwd and with jacrev, float64."""
    inputs = draw_inputs(identity, dims)
    with jax.enable_x64(True):
        run = lambda inputs: tuple(_jacobian_of(identity, inputs, layout="numerator", mode=mode)  # noqa: E731
                                   for mode in ("fwd", "rev"))
        return jax.device_get(compile_fast(run, inputs)(inputs))


def hand_and_autodiff(identity: Identity, dims: dict[str, int], layout: str):
    """(hand, autodiff) in `layout`: the hand formula is transposed when `layout` is not the
    one it is stated in."""
    e = evaluate(identity, dims)
    return (e.hand if layout == identity.layout else e.hand.T), e.jac[layout]


# ---- the catalogue -----------------------------------------------------------------------------------

def _sm(z):
    return jax.nn.softmax(z)


def _sig(z):
    return jax.nn.sigmoid(z)


def _diag(v):
    return jnp.diag(v)


def _I(n):
    return jnp.eye(n, dtype=jnp.float64)


def _inv(X):
    return jnp.linalg.inv(X)


def _K(p, q):
    return commutation_matrix(p, q, dtype=jnp.float64)


N_SIZES = ({"n": 1}, {"n": 3}, {"n": 6})
N2_SIZES = ({"n": 2}, {"n": 3}, {"n": 6})  # at least two entries (e.g. classes)
MN_SIZES = ({"m": 2, "n": 3}, {"m": 4, "n": 1}, {"m": 5, "n": 5})
SQ_SIZES = ({"n": 1}, {"n": 3}, {"n": 5})
PQ_SIZES = ({"p": 2, "q": 3}, {"p": 4, "q": 1}, {"p": 3, "q": 3})


def _dense_loss(v):
    """Cross-entropy of softmax(W x + b) against the one-hot y."""
    z = v["W"] @ v["x"] + v["b"]
    return -(v["y"] * jax.nn.log_softmax(z)).sum()


def _dense_delta(v):
    """δ = dL/dz = softmax(z) - y, the error signal at the layer's output."""
    return _sm(v["W"] @ v["x"] + v["b"]) - v["y"]


def _vec_x(n):
    """One input, the vector x of length n."""
    return {"x": (n,)}


def _vector_identities() -> list[Identity]:
    """Linear and quadratic forms of a vector, and vectors and matrices of a scalar."""
    Id = Identity
    return [
        Id("a^T x", "x", "a^T", "numerator", N_SIZES, lambda n: {"a": (n,), "x": (n,)},
           lambda v: v["a"] @ v["x"], lambda v: v["a"][None, :]),
        Id("x^T a", "x", "a^T (a scalar is its own transpose)", "numerator", N_SIZES,
           lambda n: {"a": (n,), "x": (n,)}, lambda v: v["x"] @ v["a"], lambda v: v["a"][None, :]),
        Id("A x", "x", "A", "numerator", MN_SIZES, lambda m, n: {"A": (m, n), "x": (n,)},
           lambda v: v["A"] @ v["x"], lambda v: v["A"]),
        # xᵀA is a 1×m row, Aᵀx an m×1 column: vec gives both the same m entries in the same
        # order, so d vec(f)/dxᵀ is the same m×n matrix Aᵀ for both.
        Id("x^T A (1xm row, via vec)", "x", "A^T, as for A^T x", "numerator", MN_SIZES,
           lambda m, n: {"A": (n, m), "x": (n,)}, lambda v: v["x"][None, :] @ v["A"], lambda v: v["A"].T),
        Id("A^T x (mx1 column, via vec)", "x", "A^T", "numerator", MN_SIZES,
           lambda m, n: {"A": (n, m), "x": (n,)}, lambda v: v["A"].T @ v["x"][:, None], lambda v: v["A"].T),
        Id("x^T x", "x", "2 x^T", "numerator", N_SIZES, _vec_x,
           lambda v: v["x"] @ v["x"], lambda v: 2 * v["x"][None, :]),
        Id("x^T A x", "x", "x^T (A + A^T)", "numerator", N_SIZES, lambda n: {"A": (n, n), "x": (n,)},
           lambda v: v["x"] @ v["A"] @ v["x"], lambda v: (v["x"] @ (v["A"] + v["A"].T))[None, :]),
        Id("x^T S x, S symmetric", "x", "2 x^T S", "numerator", N_SIZES, lambda n: {"S": (n, n), "x": (n,)},
           lambda v: v["x"] @ v["S"] @ v["x"], lambda v: 2 * (v["x"] @ v["S"])[None, :], kinds={"S": "sym"}),
        # The classic slip: 2xᵀA is right only when A is symmetric (so never for n >= 2 here).
        Id("x^T A x, A NOT symmetric", "x", "2 x^T A  [WRONG]", "numerator", ({"n": 2}, {"n": 3}, {"n": 6}),
           lambda n: {"A": (n, n), "x": (n,)}, lambda v: v["x"] @ v["A"] @ v["x"],
           lambda v: 2 * (v["x"] @ v["A"])[None, :], expect_fail=True),
        Id("||x||_2", "x", "x^T / ||x||", "numerator", N_SIZES, _vec_x,
           lambda v: jnp.linalg.norm(v["x"]), lambda v: v["x"][None, :] / jnp.linalg.norm(v["x"])),
        Id("||A x - b||^2", "x", "2 (A x - b)^T A", "numerator", MN_SIZES,
           lambda m, n: {"A": (m, n), "b": (m,), "x": (n,)},
           lambda v: jnp.sum((v["A"] @ v["x"] - v["b"]) ** 2),
           lambda v: (2 * (v["A"] @ v["x"] - v["b"]) @ v["A"])[None, :]),
        Id("x / ||x||", "x", "(I - u u^T) / ||x||, u = x/||x||", "numerator", N2_SIZES, _vec_x,
           lambda v: v["x"] / jnp.linalg.norm(v["x"]),
           lambda v: (_I(v["x"].size) - jnp.outer(v["x"], v["x"]) / (v["x"] @ v["x"])) / jnp.linalg.norm(v["x"])),
        Id("a * x (elementwise)", "x", "diag(a)", "numerator", N_SIZES, lambda n: {"a": (n,), "x": (n,)},
           lambda v: v["a"] * v["x"], lambda v: _diag(v["a"])),
        Id("x x^T (via vec)", "x", "I kron x + x kron I", "numerator", N_SIZES, _vec_x,
           lambda v: jnp.outer(v["x"], v["x"]),
           lambda v: jnp.kron(_I(v["x"].size), v["x"][:, None]) + jnp.kron(v["x"][:, None], _I(v["x"].size))),
        Id("t a + t^2 b (vector of scalar)", "t", "a + 2 t b (mx1)", "numerator",
           ({"m": 1}, {"m": 3}, {"m": 5}), lambda m: {"a": (m,), "b": (m,), "t": ()},
           lambda v: v["t"] * v["a"] + v["t"] ** 2 * v["b"], lambda v: (v["a"] + 2 * v["t"] * v["b"])[:, None]),
        Id("t A + t^2 B (matrix of scalar)", "t", "A + 2 t B (pxq)", "numerator", PQ_SIZES,
           lambda p, q: {"A": (p, q), "B": (p, q), "t": ()},
           lambda v: v["t"] * v["A"] + v["t"] ** 2 * v["B"], lambda v: v["A"] + 2 * v["t"] * v["B"]),
    ]


def _deep_learning_identities() -> list[Identity]:
    """The functions of deep learning: softmax, its losses, the activations."""
    Id = Identity
    return [
        Id("softmax(z)", "z", "diag(p) - p p^T, p = softmax(z)", "numerator", N2_SIZES, lambda n: {"z": (n,)},
           lambda v: _sm(v["z"]), lambda v: _diag(_sm(v["z"])) - jnp.outer(_sm(v["z"]), _sm(v["z"]))),
        Id("logsumexp(z)", "z", "softmax(z)^T", "numerator", N_SIZES, lambda n: {"z": (n,)},
           lambda v: jax.nn.logsumexp(v["z"]), lambda v: _sm(v["z"])[None, :]),
        Id("-y^T log softmax(z)", "z", "(p - y)^T", "numerator", N2_SIZES, lambda n: {"y": (n,), "z": (n,)},
           lambda v: -(v["y"] * jax.nn.log_softmax(v["z"])).sum(), lambda v: (_sm(v["z"]) - v["y"])[None, :],
           kinds={"y": "onehot"}),
        Id("sigmoid(x)", "x", "diag(s (1 - s)), s = sigmoid(x)", "numerator", N_SIZES, _vec_x,
           lambda v: _sig(v["x"]), lambda v: _diag(_sig(v["x"]) * (1 - _sig(v["x"])))),
        Id("tanh(x)", "x", "diag(1 - tanh(x)^2)", "numerator", N_SIZES, _vec_x,
           lambda v: jnp.tanh(v["x"]), lambda v: _diag(1 - jnp.tanh(v["x"]) ** 2)),
        Id("relu(x)", "x", "diag([x > 0])", "numerator", N_SIZES, _vec_x,
           lambda v: jax.nn.relu(v["x"]), lambda v: _diag((v["x"] > 0).astype(v["x"].dtype)),
           kinds={"x": "awayzero"}),
        Id("softplus(x)", "x", "diag(sigmoid(x))", "numerator", N_SIZES, _vec_x,
           lambda v: jax.nn.softplus(v["x"]), lambda v: _diag(_sig(v["x"]))),
        Id("log sigmoid(x)", "x", "diag(sigmoid(-x))", "numerator", N_SIZES, _vec_x,
           lambda v: jax.nn.log_sigmoid(v["x"]), lambda v: _diag(_sig(-v["x"]))),
        Id("exp(x)", "x", "diag(exp(x))", "numerator", N_SIZES, _vec_x,
           lambda v: jnp.exp(v["x"]), lambda v: _diag(jnp.exp(v["x"]))),
        Id("sigmoid(a^T x)", "x", "s (1 - s) a^T, s = sigmoid(a^T x)", "numerator", N_SIZES,
           lambda n: {"a": (n,), "x": (n,)}, lambda v: _sig(v["a"] @ v["x"]),
           lambda v: (_sig(v["a"] @ v["x"]) * (1 - _sig(v["a"] @ v["x"])) * v["a"])[None, :]),
    ]


def _matrix_to_scalar_identities() -> list[Identity]:
    """Scalar functions of a matrix (denominator layout: the gradient, X's shape)."""
    Id = Identity
    return [
        Id("tr(X)", "X", "I", "denominator", SQ_SIZES, lambda n: {"X": (n, n)},
           lambda v: jnp.trace(v["X"]), lambda v: _I(v["X"].shape[0])),
        Id("tr(A X)", "X", "A^T", "denominator", PQ_SIZES, lambda p, q: {"A": (q, p), "X": (p, q)},
           lambda v: jnp.trace(v["A"] @ v["X"]), lambda v: v["A"].T),
        Id("tr(X^T A X)", "X", "(A + A^T) X", "denominator", PQ_SIZES, lambda p, q: {"A": (p, p), "X": (p, q)},
           lambda v: jnp.trace(v["X"].T @ v["A"] @ v["X"]), lambda v: (v["A"] + v["A"].T) @ v["X"]),
        Id("tr(A X B)", "X", "A^T B^T", "denominator", PQ_SIZES,
           lambda p, q: {"A": (2, p), "X": (p, q), "B": (q, 2)},
           lambda v: jnp.trace(v["A"] @ v["X"] @ v["B"]), lambda v: v["A"].T @ v["B"].T),
        Id("tr(X^2)", "X", "2 X^T", "denominator", SQ_SIZES, lambda n: {"X": (n, n)},
           lambda v: jnp.trace(v["X"] @ v["X"]), lambda v: 2 * v["X"].T),
        Id("a^T X b", "X", "a b^T", "denominator", PQ_SIZES, lambda p, q: {"a": (p,), "b": (q,), "X": (p, q)},
           lambda v: v["a"] @ v["X"] @ v["b"], lambda v: jnp.outer(v["a"], v["b"])),
        Id("||X||_F^2", "X", "2 X", "denominator", PQ_SIZES, lambda p, q: {"X": (p, q)},
           lambda v: jnp.sum(v["X"] ** 2), lambda v: 2 * v["X"]),
        Id("det(X)", "X", "det(X) X^-T", "denominator", SQ_SIZES, lambda n: {"X": (n, n)},
           lambda v: jnp.linalg.det(v["X"]), lambda v: jnp.linalg.det(v["X"]) * _inv(v["X"]).T,
           kinds={"X": "wellcond"}),
        Id("log|det(X)|", "X", "X^-T", "denominator", SQ_SIZES, lambda n: {"X": (n, n)},
           lambda v: jnp.linalg.slogdet(v["X"])[1], lambda v: _inv(v["X"]).T, kinds={"X": "wellcond"}),
        Id("tr(X^-1 A)", "X", "-(X^-1 A X^-1)^T", "denominator", SQ_SIZES, lambda n: {"A": (n, n), "X": (n, n)},
           lambda v: jnp.trace(_inv(v["X"]) @ v["A"]), lambda v: -(_inv(v["X"]) @ v["A"] @ _inv(v["X"])).T,
           kinds={"X": "wellcond"}),
        Id("||X W - Y||_F^2", "W", "2 X^T (X W - Y)", "denominator",
           ({"b": 4, "d": 3, "k": 2}, {"b": 5, "d": 1, "k": 3}, {"b": 3, "d": 4, "k": 1}),
           lambda b, d, k: {"X": (b, d), "Y": (b, k), "W": (d, k)},
           lambda v: jnp.sum((v["X"] @ v["W"] - v["Y"]) ** 2), lambda v: 2 * v["X"].T @ (v["X"] @ v["W"] - v["Y"])),
    ]


def _dense_layer_identities() -> list[Identity]:
    """A dense layer z = W x + b feeding softmax cross-entropy; δ = dL/dz = softmax(z) - y."""
    Id = Identity
    return [
        Id("L(W x + b) [dense layer]", "W", "delta x^T", "denominator",
           ({"k": 2, "d": 3}, {"k": 4, "d": 1}, {"k": 5, "d": 5}),
           lambda k, d: {"x": (d,), "b": (k,), "y": (k,), "W": (k, d)}, _dense_loss,
           lambda v: jnp.outer(_dense_delta(v), v["x"]), kinds={"y": "onehot"}),
        Id("L(W x + b) [dense layer]", "b", "delta", "denominator",
           ({"k": 2, "d": 3}, {"k": 4, "d": 1}, {"k": 5, "d": 5}),
           lambda k, d: {"x": (d,), "W": (k, d), "y": (k,), "b": (k,)}, _dense_loss,
           lambda v: _dense_delta(v)[:, None], kinds={"y": "onehot"}),
        Id("L(W x + b) [dense layer]", "x", "W^T delta", "denominator",
           ({"k": 2, "d": 3}, {"k": 4, "d": 1}, {"k": 5, "d": 5}),
           lambda k, d: {"W": (k, d), "b": (k,), "y": (k,), "x": (d,)}, _dense_loss,
           lambda v: (v["W"].T @ _dense_delta(v))[:, None], kinds={"y": "onehot"}),
    ]


def _matrix_to_matrix_identities() -> list[Identity]:
    """Matrix functions of a matrix, through vec: d vec(F) / d vec(X)^T."""
    Id = Identity
    return [
        Id("A X B (via vec)", "X", "B^T kron A", "numerator", PQ_SIZES,
           lambda p, q: {"A": (2, p), "B": (q, 3), "X": (p, q)},
           lambda v: v["A"] @ v["X"] @ v["B"], lambda v: jnp.kron(v["B"].T, v["A"])),
        Id("A X (via vec)", "X", "I_q kron A", "numerator", PQ_SIZES, lambda p, q: {"A": (3, p), "X": (p, q)},
           lambda v: v["A"] @ v["X"], lambda v: jnp.kron(_I(v["X"].shape[1]), v["A"])),
        Id("X a (via vec)", "X", "a^T kron I_p", "numerator", PQ_SIZES, lambda p, q: {"a": (q,), "X": (p, q)},
           lambda v: v["X"] @ v["a"], lambda v: jnp.kron(v["a"][None, :], _I(v["X"].shape[0]))),
        Id("X^T (via vec)", "X", "K_pq (commutation matrix)", "numerator", PQ_SIZES, lambda p, q: {"X": (p, q)},
           lambda v: v["X"].T, lambda v: _K(*v["X"].shape)),
        Id("X * X elementwise (via vec)", "X", "diag(2 vec(X))", "numerator", PQ_SIZES, lambda p, q: {"X": (p, q)},
           lambda v: v["X"] * v["X"], lambda v: _diag(2 * v["X"].T.reshape(-1))),
        Id("X^-1 (via vec)", "X", "-(X^-T kron X^-1)", "numerator", SQ_SIZES, lambda n: {"X": (n, n)},
           lambda v: _inv(v["X"]), lambda v: -jnp.kron(_inv(v["X"]).T, _inv(v["X"])), kinds={"X": "wellcond"}),
        Id("X^T X (via vec)", "X", "I kron X^T + (X^T kron I) K_pq", "numerator", PQ_SIZES,
           lambda p, q: {"X": (p, q)}, lambda v: v["X"].T @ v["X"],
           lambda v: (jnp.kron(_I(v["X"].shape[1]), v["X"].T)
                      + jnp.kron(v["X"].T, _I(v["X"].shape[1])) @ _K(*v["X"].shape))),
    ]


def catalogue() -> list[Identity]:
    """Every identity, in reading order."""
    return (_vector_identities() + _deep_learning_identities() + _matrix_to_scalar_identities()
            + _dense_layer_identities() + _matrix_to_matrix_identities())


def _compute(identity: Identity, dims: dict[str, int], layout: str):
    return lambda: hand_and_autodiff(identity, dims, layout)


def checks() -> list[Check]:
    """Every identity at every size in both layouts (the wrong one marked expect_fail)."""
    found = []
    for identity in catalogue():
        for dims in identity.sizes:
            for layout in LAYOUTS:
                found.append(Check(name=identity.name, layout=layout, shapes=shapes_text(identity, dims),
                                   compute=_compute(identity, dims, layout), expect_fail=identity.expect_fail))
    return found
