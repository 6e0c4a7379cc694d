"""Matrix calculus with explicit layouts: check a derivative you worked out by hand.

`jacobian(f, x, layout=...)` first computes every partial derivative dfᵢ/dxⱼ by
autodiff (`jax.jacrev` when f has fewer entries than x -- one reverse pass per output --
else `jax.jacfwd`, one forward pass per input; both give the same numbers), then
*arranges* them as the chosen layout prescribes. `check(f, derivative, x, layout=...)`
compares a hand-written derivative with that arrangement and returns a `CheckReport`.

Objects
-------
A scalar has shape (), a vector shape (n,), a matrix shape (p, q). jnp has no row or
column vectors: a (n,) array is just a vector; (1, n) and (n, 1) arrays are matrices.
`vec(X)` stacks the columns of X (column-major): for X of shape (p, q),
vec(X)[a + p*b] = X[a, b]. It satisfies vec(AXB) = (Bᵀ ⊗ A) vec(X).

Layouts
-------
Let m = size of f(x), n = size of x. "N" is the numerator layout, "D" the denominator
layout. In every case D is the transpose of N, and the result is always a 2-D array.

    f \\ x          scalar           vector (n)        matrix (p, q)
    scalar         N 1x1   D 1x1    N 1xn   D nx1     N qxp    D pxq
    vector (m)     N mx1   D 1xm    N mxn   D nxm     N mxpq   D pqxm
    matrix (r, s)  N rxs   D sxr    N rsxn  D nxrs    N rsxpq  D pqxrs

Entries:
  * the general rule (scalars and vectors as their own vec; any matrix through vec):
        N[i, j] = d vec(f)ᵢ / d vec(x)ⱼ,         D = Nᵀ.
    So the numerator layout of a vector f of a vector x is the usual m×n Jacobian, and
    for matrices it is d vec(F) / d vec(X)ᵀ (Magnus & Neudecker), e.g. AXB -> Bᵀ ⊗ A.
  * scalar f of a matrix X (p, q): D[a, b] = df / dX[a, b], the gradient, of X's shape;
    N = Dᵀ (q×p). (The general rule would give the 1×pq row vec(D)ᵀ.)
  * matrix F (r, s) of a scalar x: N[a, b] = dF[a, b] / dx, of F's shape; D = Nᵀ (s×r).

The derivative of a scalar f with respect to a vector x is therefore a row 1×n in the
numerator layout and a column n×1 (the gradient) in the denominator layout: a hand result
given as a (n,) vector is rejected by `check` as ambiguous, with a note to write
`g[None, :]` (row) or `g[:, None]` (column). Arrays with more than two axes are refused;
reshape or vec them first.

Errors
------
`check` measures the hand result H against the reference R (both in the same layout):
max_abs_err = max|H − R|, and max_rel_err = max|H − R| / max|R| -- the error relative to
the largest entry of R (the infinity-norm relative error), so roundoff in entries that are
exactly zero does not count as a 100% error (the flip side: an entry a billion times
smaller than the largest is judged at the largest one's scale). It passes when the shapes match, H is
finite, and max_rel_err <= rtol or max_abs_err <= atol. By dtype unless given: rtol is
1e-9 for float64, 1e-4 for float32, 1e-2 for 16-bit floats; atol is 64 machine epsilons
(1.4e-14 for float64, 7.6e-6 for float32) -- it only matters when the true derivative is
(nearly) zero, where autodiff's roundoff would otherwise be a relative error of 100%.
Checks are best run in float64: wrap them in `with jax.enable_x64(True):` (this module
sets nothing global).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.errors import JaxdlError

LAYOUTS = ("numerator", "denominator")
MODES = ("auto", "fwd", "rev")

# Default relative tolerance by the least precise floating dtype involved.
RTOL_BY_ITEMSIZE = {8: 1e-9, 4: 1e-4, 2: 1e-2}
# Default absolute tolerance: this many machine epsilons of that dtype.
ATOL_EPS = 64


# ---- vec ----------------------------------------------------------------------------------

def vec(X: jax.Array) -> jax.Array:
    """Stack the columns of X into one vector (column-major): vec(X)[a + p*b] = X[a, b].

    Scalars become (1,), vectors are returned as they are; for more axes the first axis
    varies fastest (Fortran order).
    """
    X = jnp.asarray(X)
    return jnp.transpose(X).reshape(-1)


def unvec(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The inverse of `vec`: unvec(vec(X), X.shape) == X."""
    v = jnp.asarray(v)
    shape = tuple(int(s) for s in shape)
    if v.ndim != 1 or v.size != math.prod(shape):
        raise JaxdlError(f"unvec: a vector of {math.prod(shape)} entries is needed for shape {shape}, "
                         f"got an array of shape {v.shape}")
    return jnp.transpose(v.reshape(shape[::-1]))


def commutation_matrix(p: int, q: int, dtype=None) -> jax.Array:
    """K (pq × pq) with K vec(X) = vec(Xᵀ) for X of shape (p, q)."""
    rows = np.arange(p * q)
    # vec(Xᵀ)[b + q*a] = Xᵀ[b, a] = X[a, b] = vec(X)[a + p*b]
    a, b = rows // q, rows % q
    K = np.zeros((p * q, p * q))
    K[b + q * a, a + p * b] = 1.0
    return jnp.asarray(K, dtype=dtype if dtype is not None else jnp.result_type(float))


# ---- jacobian -------------------------------------------------------------------------------

def _kind(ndim: int) -> str:
    return ("scalar", "vector", "matrix")[ndim]


def _check_operand(what: str, shape: tuple[int, ...], dtype) -> None:
    if len(shape) > 2:
        raise JaxdlError(f"jacobian: {what} has shape {shape}; matrix calculus here covers scalars, "
                         f"vectors and matrices -- reshape or vec it first")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise JaxdlError(f"jacobian: {what} must be a real floating-point array, got dtype {dtype}")


def layout_shape(f_shape: tuple[int, ...], x_shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """The shape of d f / d x in `layout` for f and x of the given shapes (see the module table)."""
    _check_layout(layout)
    m, n = math.prod(f_shape), math.prod(x_shape)
    if len(f_shape) == 0 and len(x_shape) == 2:  # scalar of matrix: the gradient's shape
        numerator = (x_shape[1], x_shape[0])
    elif len(f_shape) == 2 and len(x_shape) == 0:  # matrix of scalar: the tangent's shape
        numerator = (f_shape[0], f_shape[1])
    else:
        numerator = (m, n)
    return numerator if layout == "numerator" else numerator[::-1]


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise JaxdlError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def arrange(partials: jax.Array, f_shape: tuple[int, ...], x_shape: tuple[int, ...], layout: str) -> jax.Array:
    """Arrange partials[*i, *j] = d f[i] / d x[j] (shape f_shape + x_shape, as `jax.jacfwd`
    returns them) into `layout`."""
    _check_layout(layout)
    f_nd, x_nd = len(f_shape), len(x_shape)
    if f_nd == 0 and x_nd == 2:
        D = partials  # (p, q): D[a, b] = df/dX[a, b]
        return D if layout == "denominator" else D.T
    if f_nd == 2 and x_nd == 0:
        N = partials  # (r, s): N[a, b] = dF[a, b]/dx
        return N if layout == "numerator" else N.T
    # General rule: N[i, j] = d vec(f)_i / d vec(x)_j. Column-major flattening of each group
    # of axes = reverse the axes within the group, then flatten row-major.
    f_axes = tuple(range(f_nd))[::-1]
    x_axes = tuple(range(f_nd, f_nd + x_nd))[::-1]
    N = jnp.transpose(partials, f_axes + x_axes).reshape(math.prod(f_shape), math.prod(x_shape))
    return N if layout == "numerator" else N.T


def choose_mode(f_size: int, x_size: int) -> str:
    """'rev' when f has fewer entries than x (one VJP per output), else 'fwd' (one JVP per input)."""
    return "rev" if f_size < x_size else "fwd"


def jacobian(f: Callable[[jax.Array], jax.Array], x, *, layout: str = "numerator", mode: str = "auto") -> jax.Array:
    """d f(x) / d x, all partials by autodiff, arranged in `layout` (see the module docstring).

    Args:
      f: a function of one array (close over any constants) returning a scalar, vector or matrix.
      x: the point; a real floating scalar, vector or matrix.
      layout: "numerator" or "denominator".
      mode: "auto" (jacrev when f has fewer entries than x, else jacfwd), "fwd" or "rev".

    Returns:
      A 2-D array; its shape is `layout_shape(f(x).shape, x.shape, layout)`.
    """
    _check_layout(layout)
    if mode not in MODES:
        raise JaxdlError(f"jacobian: mode must be one of {', '.join(MODES)}, got {mode!r}")
    x = jnp.asarray(x)
    _check_operand("x", x.shape, x.dtype)
    out = jax.eval_shape(f, x)
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise JaxdlError(f"jacobian: f must return one array, got {type(out).__name__} "
                         f"({jax.tree.structure(out)})")
    _check_operand("f(x)", out.shape, out.dtype)
    if mode == "auto":
        mode = choose_mode(math.prod(out.shape), x.size)
    partials = (jax.jacfwd if mode == "fwd" else jax.jacrev)(f)(x)
    return arrange(partials, out.shape, x.shape, layout)


# ---- comparing a hand result with autodiff -------------------------------------------------------

def _least_precise(dtypes):
    floats = [np.dtype(d) for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    return max(floats, key=lambda d: float(jnp.finfo(d).eps)) if floats else np.dtype(np.float64)


def default_rtol(*dtypes) -> float:
    """The relative tolerance for the least precise floating dtype among `dtypes` (float64
    1e-9, float32 1e-4, 16-bit 1e-2); non-float dtypes are ignored."""
    return RTOL_BY_ITEMSIZE.get(_least_precise(dtypes).itemsize, 1e-2)


def default_atol(*dtypes) -> float:
    """64 machine epsilons of the least precise floating dtype among `dtypes`."""
    return ATOL_EPS * float(jnp.finfo(_least_precise(dtypes)).eps)


@dataclass(frozen=True)
class CheckReport:
    """How a hand-written derivative compares with autodiff.

    max_abs_err = max|H − R|; max_rel_err = max|H − R| / max|R| (inf when R is 0 and H is not);
    passed = shapes/structure match, H finite, and max_rel_err <= rtol or max_abs_err <= atol;
    `reason` says why not.
    """

    passed: bool
    max_abs_err: float
    max_rel_err: float
    rtol: float
    atol: float
    shape: str  # the hand result's shape(s)
    expected_shape: str  # the shape(s) of `compare`'s `reference` argument
    dtype: str
    layout: str = ""
    reason: str = ""

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        if not math.isfinite(self.max_abs_err):  # no numbers to show: the shapes or values were wrong
            return f"{verdict}  {self.layout + ' layout: ' if self.layout else ''}{self.reason}"
        text = (f"{verdict}  max rel err {self.max_rel_err:.2e} (rtol {self.rtol:.0e})  "
                f"max abs err {self.max_abs_err:.2e}  shape {self.expected_shape} {self.dtype}")
        if self.layout:
            text += f"  {self.layout} layout"
        return text + (f"  -- {self.reason}" if self.reason else "")

    def to_dict(self) -> dict:
        return asdict(self)


def _leaf_errors(h: np.ndarray, r: np.ndarray) -> tuple[float, float, bool]:
    diff = np.abs(h.astype(np.float64) - r.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(r).max()) if r.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return max_abs, max_rel, bool(np.all(np.isfinite(h)))


def _shape_note(h_shape, r_shape, layout: str) -> str:
    other = {"numerator": "denominator", "denominator": "numerator"}.get(layout, "")
    if len(r_shape) == 2 and tuple(h_shape) == tuple(r_shape[::-1]) and other and h_shape != r_shape:
        return f"shape {tuple(h_shape)} is the {other}-layout shape; the {layout} layout is {tuple(r_shape)}"
    if math.prod(h_shape) == math.prod(r_shape) and len(h_shape) < 2 <= len(r_shape):
        if r_shape[0] == 1 or r_shape[1] == 1:
            hint = "write g[None, :] for a row" if r_shape[0] == 1 else "write g[:, None] for a column"
        else:
            hint = f"a vec? matcalc.unvec(g, {tuple(r_shape)}) undoes it"
        return f"shape {tuple(h_shape)} is ambiguous; the {layout or 'expected'} layout is {tuple(r_shape)} ({hint})"
    return f"shape {tuple(h_shape)} but expected {tuple(r_shape)}"


def compare(hand, reference, *, rtol: float | None = None, atol: float | None = None,
            layout: str = "") -> CheckReport:
    """Compare a hand result with a reference, two pytrees of arrays, leaf by leaf (the
    errors are the largest over leaves; see `CheckReport`)."""
    h_leaves, h_tree = jax.tree.flatten(hand)
    r_leaves, r_tree = jax.tree.flatten(reference)
    h_np = [np.asarray(a) for a in h_leaves]
    r_np = [np.asarray(a) for a in r_leaves]
    shape = ", ".join(str(a.shape) for a in h_np)
    expected = ", ".join(str(a.shape) for a in r_np)
    dtypes = [a.dtype for a in h_np + r_np]
    dtype = ",".join(sorted({str(d) for d in dtypes}))
    tol = float(rtol) if rtol is not None else default_rtol(*dtypes)
    atol = float(atol) if atol is not None else default_atol(*dtypes)
    if h_tree != r_tree:
        return CheckReport(False, math.inf, math.inf, tol, atol, shape, expected, dtype, layout,
                           f"structure {h_tree} but expected {r_tree}")
    for h, r in zip(h_np, r_np):
        if h.shape != r.shape:
            return CheckReport(False, math.inf, math.inf, tol, atol, shape, expected, dtype, layout,
                               _shape_note(h.shape, r.shape, layout))
    max_abs, max_rel, finite = 0.0, 0.0, True
    for h, r in zip(h_np, r_np):
        a, rel, fin = _leaf_errors(h, r)
        max_abs, max_rel, finite = max(max_abs, a), max(max_rel, rel), finite and fin
    if not finite:
        return CheckReport(False, math.nan, math.nan, tol, atol, shape, expected, dtype, layout,
                           "the hand result has NaN or inf entries")
    passed = max_rel <= tol or max_abs <= atol
    reason = "" if passed else f"max relative error {max_rel:.2e} exceeds rtol {tol:.0e}"
    return CheckReport(passed, max_abs, max_rel, tol, atol, shape, expected, dtype, layout, reason)


def check(f: Callable[[jax.Array], jax.Array], derivative: Any, x, *, layout: str = "numerator",
          rtol: float | None = None, atol: float | None = None) -> CheckReport:
    """Compare a hand-written derivative of f at x with `jacobian(f, x, layout=layout)`.

    Args:
      f: a function of one array (close over constants).
      derivative: the hand result in `layout` -- an array, or a function of x returning one.
      x: the point (use float64 inputs, under `jax.enable_x64(True)`, for a tight check).
      layout: "numerator" or "denominator".
      rtol, atol: tolerances; by default by dtype (see the module docstring).

    Returns:
      A `CheckReport` (passed, max_abs_err, max_rel_err, rtol, shapes, reason).

    Example (x of shape (n,); the derivative of xᵀAx is a 1×n row in numerator layout):
      >>> with jax.enable_x64(True):
      ...     A = jax.random.normal(jax.random.key(0), (4, 4), jnp.float64)
      ...     x = jax.random.normal(jax.random.key(1), (4,), jnp.float64)
      ...     print(check(lambda x: x @ A @ x, lambda x: (x @ (A + A.T))[None, :], x).passed)
      True
    """
    x = jnp.asarray(x)
    reference = jacobian(f, x, layout=layout)
    hand = derivative(x) if callable(derivative) else derivative
    if not isinstance(hand, (jax.Array, np.ndarray, float, int, np.generic)):
        raise JaxdlError(f"check: the derivative must be an array (or a function returning one), "
                         f"got {type(hand).__name__}")
    return compare(jnp.asarray(hand), reference, rtol=rtol, atol=atol, layout=layout)
