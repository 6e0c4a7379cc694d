"""Linear regression from scratch on synthetic data with a known answer (D2L 3.4).

    make exp NAME=linreg            # or: python -m jaxdl exp linreg --max-epochs 5

Data: y = X w + b + eps with w = [2, -3.4], b = 4.2, eps ~ N(0, 0.01^2), 1,000 examples.
Defaults are the book's: lr 0.03, batch 10, 3 epochs, sigma = 0.01 init.
Expect: |w_hat - w| and |b_hat - b| each < 0.01, and the SGD solution close to the
closed-form least-squares solution (README: a real run).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import harness, losses
from jaxdl.config import TrainConfig, defaults, doc
from jaxdl.data.synthetic import TRUE_B, TRUE_W, linreg_data
from jaxdl.models.dense import linreg_apply, linreg_init
from jaxdl.train.epoch import shuffled_indices, take_rows
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import init_state

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "2"]


@defaults(max_epochs=(3, "the book"), lr=(0.03, "the book"), batch_size=(10, "the book"), ckpt_every=1)
class Config(TrainConfig):
    """Linear regression on synthetic data (D2L 3.4)."""

    num_examples: int = field(default=1000, metadata=doc("synthetic examples (the book: 1000), at most 10^7", gt=0,
                                                        le=10_000_000))
    noise: float = field(default=0.01, metadata=doc("label noise sigma (the book: 0.01)", ge=0))
    sigma: float = field(default=0.01, metadata=doc("weight init scale (the book: 0.01)", ge=0))


def loss_fn(params, batch, key):
    del key
    pred = linreg_apply(params, batch["X"])
    return losses.squared_loss(pred=pred, target=batch["y"]).mean(), {}


def closed_form(X, y):
    """Least squares on [X, 1]: argmin ||[X 1] theta - y||^2."""
    A = np.concatenate([np.asarray(X, np.float64), np.ones((len(X), 1))], axis=1)
    theta, *_ = np.linalg.lstsq(A, np.asarray(y, np.float64), rcond=None)
    return theta[:-1], theta[-1]


def build(cfg: Config) -> harness.Task:
    k_data, k_init = jax.random.split(jax.random.key(cfg.seed))
    X, y = linreg_data(k_data, cfg.num_examples, noise=cfg.noise)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr)

    def evaluate(p):
        return {"mse": float(jnp.mean((linreg_apply(p, X) - y) ** 2)),
                "w_error": float(jnp.max(jnp.abs(p["w"] - jnp.asarray(TRUE_W)))),
                "b_error": float(jnp.abs(p["b"] - TRUE_B))}

    def report(run, result: harness.Result) -> dict:
        w_cf, b_cf = closed_form(X, y)
        w_hat, b_hat = np.asarray(result.params["w"], np.float64), float(result.params["b"])
        summary = {
            "w_true": list(TRUE_W), "b_true": TRUE_B, "w_hat": w_hat.tolist(), "b_hat": b_hat,
            "w_error": float(np.max(np.abs(w_hat - TRUE_W))), "b_error": abs(b_hat - TRUE_B),
            "w_closed_form": w_cf.tolist(), "b_closed_form": float(b_cf),
            "closed_form_w_error": float(np.max(np.abs(w_cf - TRUE_W))), "closed_form_b_error": abs(b_cf - TRUE_B),
            "sgd_vs_closed_form": float(max(np.max(np.abs(w_hat - w_cf)), abs(b_hat - b_cf))),
            "final_train_loss": result.records[-1].get("train_loss") if result.records else None,
        }
        print(f"w error {summary['w_error']:.2e}  b error {summary['b_error']:.2e}  "
              f"(closed form: {summary['closed_form_w_error']:.2e}, {summary['closed_form_b_error']:.2e})")
        return summary

    return harness.Task(
        state=init_state(linreg_init(k_init, X.shape[1], sigma=cfg.sigma), optimizer), loss_fn=loss_fn,
        optimizer=optimizer,
        epoch=harness.Batches({"X": X, "y": y}, partial(shuffled_indices, batch_size=cfg.batch_size),
                              load_batch=take_rows, batch_size=cfg.batch_size),
        evaluate=evaluate, report=report,
        title=f"linear regression on synthetic data ({cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size})")


def main(cfg: Config):
    return harness.run(cfg, "linreg", partial(build, cfg))
