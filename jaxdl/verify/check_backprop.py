"""Hand-written backprop (jaxdl/verify/backprop.py) against `jax.grad` of the training losses.

The reference is the loss the experiments train with: the squared loss of
`experiments/linreg.py` and `jaxdl.losses.classification.classification_loss(apply, "ce")` for
softmax regression and the MLP, differentiated by `jax.grad`. Every parameter's gradient
is compared, in float64 (scoped with `jax.enable_x64`) at several shapes, and once in
float32, the precision training runs at.
"""
from __future__ import annotations

import zlib

import jax
import numpy as np

from jaxdl import losses
from jaxdl.losses.classification import classification_loss
from jaxdl.models import dense
from jaxdl.verify import backprop
from jaxdl.verify.registry import Check, compile_fast

# (batch B, inputs D, hidden sizes, outputs C) per model; the last entry is also run in float32.
SIZES = {
    "linreg": [(8, 3, (), 1), (1, 1, (), 1), (16, 5, (), 1)],
    "softmax": [(8, 5, (), 3), (1, 2, (), 2), (12, 7, (), 10)],
    "mlp": [(8, 5, (7,), 3), (6, 4, (6, 5), 4), (1, 3, (4, 4, 4), 2)],
}
TITLES = {
    "linreg": "linreg backprop: dw = X^T r / B, db = sum(r) / B",
    "softmax": "softmax regression backprop: dW = (P - Y)^T X / B",
    "mlp": "MLP backprop: delta = (delta' W) * [Z > 0], dW = delta^T H",
}


def reference_loss(model: str):
    """The training loss of `model` as a function of (params, batch), for `jax.grad`."""
    if model == "linreg":
        return lambda p, batch: losses.squared_loss(pred=dense.linreg_apply(p, batch["X"]), target=batch["y"]).mean()
    apply = {"softmax": dense.softmax_apply, "mlp": dense.mlp_apply}[model]
    loss_fn = classification_loss(apply, "ce")
    return lambda p, batch: loss_fn(p, batch, None)[0]


def problem(model: str, B: int, D: int, hidden: tuple[int, ...], C: int, *, seed: int = 0):
    """Random parameters in the models' pytree layout (Xavier-scaled weights, so every layer
    carries signal; small random biases, so their gradients are exercised) and a batch, as
    NumPy float64 arrays fixed by the model, sizes and seed."""
    rng = np.random.default_rng([seed, zlib.crc32(f"{model} {B} {D} {hidden} {C}".encode())])
    X = rng.standard_normal((B, D))
    if model == "linreg":
        params = {"w": rng.standard_normal(D), "b": np.asarray(rng.standard_normal())}
        return params, {"X": X, "y": rng.standard_normal(B)}
    sizes = [D, *hidden, C]
    layers = [{"w": rng.standard_normal((b, a)) * np.sqrt(2.0 / (a + b)), "b": 0.1 * rng.standard_normal(b)}
              for a, b in zip(sizes[:-1], sizes[1:])]
    params = layers[0] if model == "softmax" else layers
    return params, {"X": X, "y": rng.integers(0, C, B)}


def hand_and_autodiff(model: str, sizes, dtype=np.float64):
    """(hand gradients, jax.grad gradients) as NumPy pytrees of `dtype`."""
    params, batch = problem(model, *sizes)
    cast = lambda a: a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a  # noqa: E731
    params, batch = jax.tree.map(cast, params), jax.tree.map(cast, batch)
    reference = reference_loss(model)

    def both(params, batch):
        return backprop.value_and_grad(model, params, batch)[1], jax.grad(reference)(params, batch)

    with jax.enable_x64(dtype == np.float64):
        return jax.device_get(compile_fast(both, params, batch)(params, batch))


def _shapes(model: str, B, D, hidden, C, dtype) -> str:
    text = f"X:({B},{D})"
    if hidden:
        text += f" hidden:{hidden}"
    if model != "linreg":
        text += f" classes:{C}"
    return text + ("" if dtype == np.float64 else f" {np.dtype(dtype).name}")


def checks() -> list[Check]:
    found = []
    for model, sizes_list in SIZES.items():
        runs = [(s, np.float64) for s in sizes_list] + [(sizes_list[-1], np.float32)]
        for sizes, dtype in runs:
            found.append(Check(TITLES[model], "backprop", _shapes(model, *sizes, dtype),
                               (lambda m=model, s=sizes, d=dtype: hand_and_autodiff(m, s, d))))
    return found
