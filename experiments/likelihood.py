"""Likelihood: one function f(theta, y) read two ways, and squared loss as the Gaussian
maximum-likelihood estimate (D2L 3.1.3).

    make exp NAME=likelihood

For the model y = w x + b + eps, eps ~ N(0, sigma^2), the same function
f(theta, y | x) = N(y; w x + b, sigma^2) is a *density* in y for a fixed theta (it integrates
to 1 over y) and a *likelihood* in theta for the observed data (it does not integrate to 1
over theta: it is no density there). Gradient descent on the mean Gaussian negative
log-likelihood, with sigma learned too (as log sigma), finds the least-squares w and b,
because the NLL's gradient in (w, b) is the squared loss's divided by sigma^2 -- whatever
sigma is -- and its sigma^2 is the least-squares fit's mean squared residual.

Every claim is checked and recorded (claims.json; the run fails if one does not hold), and
likelihood.png draws the density of y for the fitted theta, the log-likelihood over (w, b)
with the gradient-descent and closed-form solutions marked, and the NLL over sigma^2.
"""
from __future__ import annotations

from dataclasses import field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from jaxdl import harness
from jaxdl.config import TrainConfig, defaults, doc
from jaxdl.data.synthetic import linreg_data
from jaxdl.errors import JaxdlError
from jaxdl.losses.dense import gaussian_nll, squared_loss
from jaxdl.runs.files import save_figure
from jaxdl.train.epoch import shuffled_indices, take_rows
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import init_state

SMOKE_ARGS = ["--max-epochs", "300"]


@defaults(max_epochs=(500, "full-batch gradient descent steps"), lr=0.1, batch_size=(200, "the whole data set"),
          ckpt_every=100)
class Config(TrainConfig):
    """Density vs likelihood, and the Gaussian MLE as least squares, every claim asserted."""

    num_examples: int = field(default=200, metadata=doc("observed (x, y) pairs, at most 10^7", gt=1, le=10_000_000))
    true_w: float = field(default=2.0, metadata=doc("slope of the data"))
    true_b: float = field(default=-1.0, metadata=doc("intercept of the data"))
    noise: float = field(default=0.5, metadata=doc("noise sigma of the data", gt=0))

    def validate(self) -> None:
        if self.batch_size != self.num_examples:
            raise JaxdlError(f"--batch-size {self.batch_size}: gradient descent here uses the whole data set; "
                             f"give --batch-size {self.num_examples} (= --num-examples)")


def predict(params, x_N):
    return params["w"] * x_N + params["b"]


def nll(params, batch, key):
    """The mean Gaussian negative log-likelihood of the batch, sigma = exp(log_sigma)."""
    del key
    per_example = gaussian_nll(pred=predict(params, batch["x"]), target=batch["y"], sigma=jnp.exp(params["log_sigma"]))
    return per_example.mean(), {}


def least_squares(x, y) -> tuple[float, float, float]:
    """Closed form: (w, b) minimising the squared loss, and the mean squared residual."""
    A = np.stack([np.asarray(x, np.float64), np.ones(len(x))], axis=1)
    (w, b), *_ = np.linalg.lstsq(A, np.asarray(y, np.float64), rcond=None)
    return float(w), float(b), float(np.mean((A @ [w, b] - y) ** 2))


def density(y_grid, x: float, w: float, b: float, sigma: float):
    """N(y; w x + b, sigma^2) over a grid of y: f(theta, .) for a fixed theta."""
    return np.exp(-0.5 * ((y_grid - (w * x + b)) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def log_likelihood_grid(x, y, w_grid, b_grid, sigma: float):
    """log L(w, b) = sum_i log N(y_i; w x_i + b, sigma^2) over a (w, b) grid: f(., data)."""
    resid = y[None, None, :] - (w_grid[:, None, None] * x[None, None, :] + b_grid[None, :, None])
    return (-0.5 * (resid / sigma) ** 2 - np.log(sigma * np.sqrt(2 * np.pi))).sum(-1)


def claims(cfg: Config, params, x, y) -> list[dict]:
    """Every statement of the module docstring, checked; each {'claim', 'holds', 'value'}."""
    w_ls, b_ls, mse_ls = least_squares(x, y)
    w, b, sigma = float(params["w"]), float(params["b"]), float(np.exp(params["log_sigma"]))
    y_grid = np.linspace(-30, 30, 60001)
    area = float(np.trapezoid(density(y_grid, 0.7, w, b, sigma), y_grid))
    w_grid, b_grid = np.linspace(w - 1, w + 1, 401), np.linspace(b - 1, b + 1, 401)
    volume = float(np.trapezoid(np.trapezoid(np.exp(log_likelihood_grid(x, y, w_grid, b_grid, sigma)), b_grid), w_grid))
    # the NLL's gradient in (w, b) is the squared loss's divided by sigma^2, at any point and sigma
    probe = {"w": jnp.float32(0.3), "b": jnp.float32(0.1), "log_sigma": jnp.float32(np.log(1.7))}
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    g_nll = jax.grad(lambda p: nll(p, batch, None)[0])(probe)
    g_sq = jax.grad(lambda p: squared_loss(pred=predict(p, batch["x"]), target=batch["y"]).mean())(probe)
    ratio = [float(g_nll[k] / g_sq[k]) for k in ("w", "b")]
    return [
        {"claim": "for a fixed theta, f(theta, y) is a density in y: it integrates to 1", "value": area,
         "holds": abs(area - 1) < 1e-6},
        {"claim": "for the observed data, f(theta, data) is no density in (w, b): its integral is not 1",
         "value": volume, "holds": not np.isclose(volume, 1.0, rtol=0.1)},
        {"claim": "grad_(w,b) NLL = grad_(w,b) squared loss / sigma^2 (here sigma = 1.7)", "value": ratio,
         "holds": bool(np.allclose(ratio, 1 / 1.7 ** 2, rtol=1e-4))},
        {"claim": "gradient descent on the Gaussian NLL finds the least-squares w and b",
         "value": [w - w_ls, b - b_ls], "holds": max(abs(w - w_ls), abs(b - b_ls)) < 1e-3},
        {"claim": "its sigma^2 is the least-squares fit's mean squared residual", "value": sigma ** 2 / mse_ls - 1,
         "holds": abs(sigma ** 2 / mse_ls - 1) < 1e-3},
    ]


def plot(path, x, y, params, *, title: str) -> None:
    """Left: f(theta_hat, y) over y at three x (densities). Middle: log f(theta, data) over
    (w, b), the gradient-descent and least-squares solutions marked. Right: the NLL over sigma^2."""
    w, b, sigma = float(params["w"]), float(params["b"]), float(np.exp(params["log_sigma"]))
    w_ls, b_ls, mse_ls = least_squares(x, y)
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    ax_d, ax_l, ax_s = fig.subplots(1, 3)
    y_grid = np.linspace(y.min() - 1, y.max() + 1, 400)
    for xv in (-1.0, 0.0, 1.0):
        ax_d.plot(y_grid, density(y_grid, xv, w, b, sigma), label=f"x = {xv:g}")
    ax_d.set(xlabel="y", ylabel="density p(y | x; theta_hat)", title="fixed theta: a density in y (area 1)")
    ax_d.legend(fontsize=8)
    w_grid, b_grid = np.linspace(w - 0.3, w + 0.3, 121), np.linspace(b - 0.3, b + 0.3, 121)
    ll = log_likelihood_grid(x, y, w_grid, b_grid, sigma)
    contours = ax_l.contourf(b_grid, w_grid, ll - ll.max(), levels=np.linspace(-20, 0, 21), cmap="viridis")
    fig.colorbar(contours, ax=ax_l, label="log likelihood - its maximum")
    ax_l.plot(b, w, "r+", markersize=14, label="gradient descent on the NLL")
    ax_l.plot(b_ls, w_ls, "wx", markersize=9, label="least squares (closed form)")
    ax_l.set(xlabel="b", ylabel="w", title="fixed data: a likelihood in (w, b)")
    ax_l.legend(fontsize=8, loc="lower left")
    s2 = np.linspace(0.3 * mse_ls, 3 * mse_ls, 200)
    nll_s2 = 0.5 * mse_ls / s2 + 0.5 * np.log(2 * np.pi * s2)
    ax_s.plot(s2, nll_s2)
    ax_s.axvline(mse_ls, color="k", linestyle=":", label="least-squares mean squared residual")
    ax_s.plot(sigma ** 2, 0.5 * mse_ls / sigma ** 2 + 0.5 * np.log(2 * np.pi * sigma ** 2), "r+", markersize=14,
              label="gradient descent")
    ax_s.set(xlabel="sigma^2", ylabel="mean NLL at (w_hat, b_hat)", title="the noise variance")
    ax_s.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path, dpi=110)


def build(cfg: Config) -> harness.Task:
    X, y = linreg_data(jax.random.key(cfg.seed), cfg.num_examples, w=[cfg.true_w], b=cfg.true_b, noise=cfg.noise)
    x, y = np.asarray(X[:, 0]), np.asarray(y)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr)
    params = {"w": jnp.float32(0.0), "b": jnp.float32(0.0), "log_sigma": jnp.float32(0.0)}
    w_ls, b_ls, mse_ls = least_squares(x, y)

    def evaluate(p) -> dict:
        return {"w_error_vs_least_squares": abs(float(p["w"]) - w_ls),
                "b_error_vs_least_squares": abs(float(p["b"]) - b_ls),
                "sigma2_error_vs_residual": abs(float(np.exp(2 * p["log_sigma"])) - mse_ls)}

    def report(run, result: harness.Result) -> dict:
        found = claims(cfg, result.params, x, y)
        for c in found:
            print(f"{'holds ' if c['holds'] else 'FAILS '} {c['claim']}  ({c['value']})")
        failed = [c for c in found if not c["holds"]]
        if run.is_writer:
            run.write_json("claims.json", {"claims": found})
            plot(run.dir / "likelihood.png", x, y, result.params,
                 title=f"y = {cfg.true_w:g} x {'-' if cfg.true_b < 0 else '+'} {abs(cfg.true_b):g} "
                       f"+ N(0, {cfg.noise:g}^2), {cfg.num_examples} points")
        if failed:
            raise JaxdlError(f"claim failed: {failed[0]['claim']} ({len(failed)} of {len(found)}; see claims.json)")
        return {"claims": len(found), "all_hold": True, "w_hat": float(result.params["w"]),
                "b_hat": float(result.params["b"]), "sigma2_hat": float(np.exp(2 * result.params["log_sigma"])),
                "w_least_squares": w_ls, "b_least_squares": b_ls, "mean_squared_residual": mse_ls}

    return harness.Task(state=init_state(params, optimizer), loss_fn=nll, optimizer=optimizer,
                        epoch=harness.Batches({"x": x, "y": y}, partial(shuffled_indices, batch_size=cfg.batch_size),
                                              take_rows, cfg.batch_size),
                        evaluate=evaluate, eval_every=10, report=report,
                        title=f"Gaussian NLL by gradient descent ({cfg.optimizer} lr {cfg.lr})")


def main(cfg: Config):
    return harness.run(cfg, "likelihood", lambda: build(cfg))
