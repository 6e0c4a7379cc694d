"""What automatic differentiation does, walked through and checked (D2L 2.5, in JAX).

    make exp NAME=autograd                     # or: python -m jaxdl exp autograd --trials 8

Four parts, every statement asserted (a claim that does not hold stops the run with
`error: claim failed: ...` and exit status 2, after writing results.json):

1. Gradients through Python control flow. f(a) doubles b = 2a while ||b|| < 1000, then
   returns b if sum(b) > 0 else 100 b, so f(a) = k a with k fixed by a, and
   `jax.grad(f)(a)` equals f(a) / a. Under `jax.jit` the Python `while`/`if` on a traced
   value raises JAX's TracerBoolConversionError (caught and explained); a
   `lax.while_loop` + `lax.cond` version gives the same values under jit, differentiates
   in forward mode (reverse mode refuses a while_loop), and a `fori_loop` with a static
   trip count differentiates in reverse mode too.
2. Detaching: y = x x, u = stop_gradient(y), z = u x gives dz/dx = u, not 3x².
3. Non-scalar outputs: `jax.grad` refuses them; the gradient of y.sum() is the
   vector-Jacobian product with ones, and for an elementwise function the Jacobian's
   diagonal.
4. Axes: sum(axis=0) keeps one entry per column (a row, (1, q) with keepdims),
   sum(axis=1) one per row (a column, (p, 1) with keepdims), and what that means for
   broadcasting and for their Jacobians (through `jaxdl.matcalc`).

Defaults: seed 0; `--trials 8` random points for part 1, alternating in sign so both
branches of the `if` run. Output: the run folder with results.json (every claim, whether
it holds and its numbers) and summary.json. Expect "33 claims, all hold" (25 + trials).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl import matcalc
from jaxdl.config import doc, to_dict
from jaxdl.errors import JaxdlError
from jaxdl.runs.run import Run

SMOKE_ARGS = ["--trials", "2"]


@dataclass
class Config:
    """A printed, asserted walk through autodiff (D2L 2.5)."""

    seed: int = field(default=0, metadata=doc("seed of the random points, 0..2^32-1", ge=0, le=2**32 - 1))
    trials: int = field(default=8, metadata=doc("random points a for part 1, alternating in sign", gt=0, le=1000))
    out: str = field(default="", metadata=doc("run folder (default runs/autograd/<timestamp>)"))

    PRESETS: ClassVar[dict] = {}

    def validate(self) -> None:
        """No cross-field constraints."""


# ---- a ledger of claims ----------------------------------------------------------------------------

class Claims:
    """Records each claim with its numbers, prints it, and remembers the ones that fail."""

    def __init__(self):
        self.records: list[dict] = []
        self.part = 0

    def section(self, part: int, title: str) -> None:
        self.part = part
        print(f"\n{part}. {title}")

    def say(self, text: str) -> None:
        print(f"   {text}")

    def claim(self, text: str, holds, **detail) -> bool:
        holds = bool(holds)
        detail = {k: _plain(v) for k, v in detail.items()}
        self.records.append({"part": self.part, "claim": text, "holds": holds, "detail": detail})
        shown = "  ".join(f"{k}={_short(v)}" for k, v in detail.items())
        print(f"   [{'ok' if holds else 'FAILED'}] {text}" + (f"   ({shown})" if shown else ""))
        return holds

    def raises(self, text: str, fn, expected: type[BaseException], must_contain: str = "") -> str:
        """Claim that fn() raises `expected` (with `must_contain` in its message); returns the message."""
        try:
            fn()
        except expected as e:
            message = str(e)
            self.claim(text, must_contain in message, error=type(e).__name__, message=message.splitlines()[0])
            return message
        except Exception as e:  # noqa: BLE001 -- a different error is a failed claim
            self.claim(text, False, error=type(e).__name__, message=str(e).splitlines()[0])
            return str(e)
        self.claim(text, False, error="none raised")
        return ""

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if not r["holds"]]


def _plain(v):
    if isinstance(v, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(v)
        return a.item() if a.ndim == 0 else a.tolist()
    if isinstance(v, tuple):
        return list(v)
    return v


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list) and v and isinstance(v[0], float):
        return "[" + ", ".join(f"{x:.4g}" for x in v) + "]"
    text = str(v)
    return text if len(text) <= 70 else text[:67] + "..."


def close(a, b, rtol=1e-6, atol=1e-6) -> bool:
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol))


# ---- part 1: control flow --------------------------------------------------------------------------

def f_python(a):
    """D2L's f: Python while and if on the value of a."""
    b = a * 2
    while jnp.linalg.norm(b) < 1000:
        b = b * 2
    if b.sum() > 0:
        c = b
    else:
        c = 100 * b
    return c


def f_if_only(a):
    """Just the branch: `if` on a traced value fails under jit on its own too."""
    return a if a.sum() > 0 else 100 * a


def f_lax(a):
    """The same function with structured control flow: traceable, so jit-able."""
    b = lax.while_loop(lambda b: jnp.linalg.norm(b) < 1000, lambda b: b * 2, a * 2)
    return lax.cond(b.sum() > 0, lambda b: b, lambda b: 100 * b, b)


@jax.jit
def doublings(a):
    """How many times f's loop doubles b (computed once, concretely, per point)."""
    _, n = lax.while_loop(lambda s: jnp.linalg.norm(s[0]) < 1000, lambda s: (s[0] * 2, s[1] + 1), (a * 2, 0))
    return n


def f_fori(a, n: int):
    """f with the loop's trip count `n` given as a Python int: fori_loop then lowers to a
    scan, which reverse mode can differentiate."""
    b = lax.fori_loop(0, n, lambda i, b: b * 2, a * 2)
    return lax.cond(b.sum() > 0, lambda b: b, lambda b: 100 * b, b)


def part_control_flow(c: Claims, key, trials: int) -> None:
    c.section(1, "Gradients through Python control flow")
    c.say("f(a): b = 2a; while ||b|| < 1000: b = 2b; return b if sum(b) > 0 else 100 b")
    c.say("Whatever path a takes, f(a) = k a for a constant k, so df/da = k = f(a) / a.")
    grad_f = jax.grad(f_python)
    points = []
    for i in range(trials):
        a = jnp.abs(jax.random.normal(jax.random.fold_in(key, i))) * (1.0 if i % 2 == 0 else -1.0)
        points.append(a)
        value, grad = f_python(a), grad_f(a)
        c.claim(f"a = {float(a):+.4f}: jax.grad(f)(a) == f(a) / a", close(grad, value / a),
                grad=float(grad), f_over_a=float(value / a), branch="b" if float(value) > 0 else "100 b")
    branches = {float(f_python(a)) > 0 for a in points}
    if trials >= 2:
        c.claim("both branches of the `if` were taken", branches == {True, False})

    a = points[0]
    c.say("Under jax.jit, f is traced with an abstract a (shape and dtype, no value), so")
    c.say("Python cannot decide `while ||b|| < 1000` -- JAX raises:")
    c.raises("jax.jit(f)(a) raises TracerBoolConversionError at the `while`",
                       lambda: jax.jit(f_python)(a), jax.errors.TracerBoolConversionError,
                       "Attempted boolean conversion of traced array")
    c.raises("the `if` alone fails the same way under jit", lambda: jax.jit(f_if_only)(a),
             jax.errors.TracerBoolConversionError)
    c.say("Fix: structured control flow, traced once for every value -- lax.while_loop and lax.cond.")
    jit_lax = jax.jit(f_lax)
    c.claim("jax.jit(f_lax)(a) == f(a) at every point", all(close(jit_lax(p), f_python(p)) for p in points))
    c.say("Reverse mode needs the loop's trip count, which a while_loop only knows at run time:")
    c.raises("jax.grad(f_lax) raises: reverse mode does not go through lax.while_loop",
             lambda: jax.grad(f_lax)(a), ValueError, "Reverse-mode differentiation does not work for lax.while_loop")
    fwd = jax.jit(jax.jacfwd(f_lax))
    c.claim("forward mode works: jax.jacfwd(f_lax)(a) == f(a) / a at every point",
            all(close(fwd(p), f_python(p) / p) for p in points))
    c.say("With the trip count counted first and passed as a static Python int, fori_loop is a scan:")
    grad_fori = jax.jit(jax.grad(f_fori), static_argnums=1)
    trips = [int(doublings(p)) for p in points]
    c.claim("jax.grad of the static-trip fori_loop version == f(a) / a at every point",
            all(close(grad_fori(p, n), f_python(p) / p) for p, n in zip(points, trips)), trip_counts=trips)


# ---- part 2: detaching -----------------------------------------------------------------------------

def part_detach(c: Claims) -> None:
    c.section(2, "Detaching computation: stop_gradient")
    x = jnp.arange(4.0)
    c.say(f"x = {x.tolist()}; y = x * x; u = stop_gradient(y); z = u * x")
    y = x * x
    u = lax.stop_gradient(y)
    dz_dx = jax.grad(lambda x: (lax.stop_gradient(x * x) * x).sum())(x)
    c.claim("dz/dx == u: u is a constant to autodiff", close(dz_dx, u), dz_dx=dz_dx, u=u)
    c.claim("dz/dx != 3x^2, the derivative of x^3 had u not been detached",
            not close(dz_dx, 3 * x ** 2), three_x_squared=3 * x ** 2)
    c.claim("d(x^3)/dx without stop_gradient is 3x^2", close(jax.grad(lambda x: (x * x * x).sum())(x), 3 * x ** 2))
    c.claim("y itself still has its gradient: d(sum y)/dx == 2x", close(jax.grad(lambda x: (x * x).sum())(x), 2 * x))


# ---- part 3: non-scalar outputs ------------------------------------------------------------------------

def part_nonscalar(c: Claims, key) -> None:
    c.section(3, "Non-scalar outputs: gradients of a sum are vector-Jacobian products")
    x = jax.random.normal(key, (4,))
    f = lambda x: x * x  # noqa: E731 -- elementwise
    c.say("y = x * x is a vector; jax.grad wants a scalar:")
    c.raises("jax.grad(f)(x) raises for a vector output", lambda: jax.grad(f)(x), TypeError,
             "Gradient only defined for scalar-output functions")
    grad_sum = jax.grad(lambda x: f(x).sum())(x)
    y, vjp = jax.vjp(f, x)
    (vjp_ones,) = vjp(jnp.ones_like(y))
    J = jax.jacobian(f)(x)
    c.claim("grad of y.sum() == vjp(f, x) with ones: 1^T J", close(grad_sum, vjp_ones), grad=grad_sum)
    c.claim("for an elementwise f, J is diagonal", close(J - jnp.diag(jnp.diag(J)), 0.0))
    c.claim("so grad of y.sum() == diag(J) == 2x", close(grad_sum, jnp.diag(J)) and close(grad_sum, 2 * x),
            diag_J=jnp.diag(J))
    J_num = matcalc.jacobian(f, x, layout="numerator")
    c.claim("matcalc.jacobian(f, x) in numerator layout is diag(2x), (4, 4)",
            J_num.shape == (4, 4) and close(J_num, jnp.diag(2 * x)), shape=tuple(J_num.shape))


# ---- part 4: axes --------------------------------------------------------------------------------------

def part_axes(c: Claims) -> None:
    c.section(4, "Axes: which one a reduction keeps")
    X = jnp.arange(6.0).reshape(2, 3)
    c.say(f"X = {X.tolist()}  (2 rows, 3 columns)")
    s0, s0k = X.sum(axis=0), X.sum(axis=0, keepdims=True)
    s1, s1k = X.sum(axis=1), X.sum(axis=1, keepdims=True)
    c.claim("sum(axis=0) sums down the columns, one entry per column: shape (3,)",
            s0.shape == (3,) and close(s0, [3.0, 5.0, 7.0]), value=s0)
    c.claim("with keepdims=True it is a row: shape (1, 3)", s0k.shape == (1, 3), shape=s0k.shape)
    c.claim("sum(axis=1) sums along the rows, one entry per row: shape (2,)",
            s1.shape == (2,) and close(s1, [3.0, 12.0]), value=s1)
    c.claim("with keepdims=True it is a column: shape (2, 1)", s1k.shape == (2, 1), shape=s1k.shape)
    c.claim("X / X.sum(axis=1, keepdims=True) broadcasts the column: every row sums to 1",
            close((X / s1k).sum(axis=1), 1.0))
    c.claim("X / X.sum(axis=0) broadcasts the (3,) as a row: every column sums to 1", close((X / s0).sum(axis=0), 1.0))
    c.raises("X / X.sum(axis=1) without keepdims fails: (2, 3) and (2,) do not broadcast",
             lambda: X / s1, ValueError, "Incompatible shapes for broadcasting")
    c.say("As linear maps of vec(X) (vec(AXB) = (B^T kron A) vec X):")
    J0 = matcalc.jacobian(lambda X: X.sum(axis=0), X, layout="numerator")
    J1 = matcalc.jacobian(lambda X: X.sum(axis=1), X, layout="numerator")
    c.claim("d sum(axis=0) / d vec(X)^T = I_3 kron 1_2^T, a (3, 6) matrix",
            J0.shape == (3, 6) and close(J0, jnp.kron(jnp.eye(3), jnp.ones((1, 2)))), J=J0)
    c.claim("d sum(axis=1) / d vec(X)^T = 1_3^T kron I_2, a (2, 6) matrix",
            J1.shape == (2, 6) and close(J1, jnp.kron(jnp.ones((1, 3)), jnp.eye(2))), J=J1)


def main(cfg: Config) -> Run:
    with Run.open("autograd", to_dict(cfg), out=cfg.out) as run:
        key = jax.random.key(cfg.seed)
        k_points, k_vector = jax.random.split(key)
        claims = Claims()
        part_control_flow(claims, k_points, cfg.trials)
        part_detach(claims)
        part_nonscalar(claims, k_vector)
        part_axes(claims)
        failed = claims.failed
        run.write_json("results.json", {"claims": claims.records})
        run.write_summary({"finished": True, "claims": len(claims.records), "failed": len(failed),
                           "all_hold": not failed, "jax_version": jax.__version__})
        print(f"\n{len(claims.records)} claims, {'all hold' if not failed else f'{len(failed)} FAILED'}")
        if failed:
            raise JaxdlError(f"claim failed: part {failed[0]['part']}: {failed[0]['claim']} "
                             f"({len(failed)} of {len(claims.records)} failed; see {run.dir / 'results.json'})")
    return run
