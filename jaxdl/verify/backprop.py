"""Backpropagation written out by hand for linear regression, softmax regression and the MLP.

Each model has a forward pass that returns the loss and the intermediate values it
computed (`cache`), and a backward pass that turns those into the gradient of the loss
with respect to every parameter, as a pytree of the parameters' structure. The losses are
the ones the experiments train with (means over the batch B); `make verify` compares every
gradient with `jax.grad` (jaxdl/verify/check_backprop.py).

Shapes: X_BxD inputs, y_B targets (floats for regression, integer labels for
classification); parameters as in `jaxdl.models.dense` ({'w', 'b'}, the MLP a list).

Linear regression, L = 1/B sum_i 1/2 (x_iᵀw + b − y_i)²; with r = Xw + b − y:
    dL/dw = Xᵀ r / B,   dL/db = sum(r) / B
Weights are stored (out, in) as in `jaxdl.models.dense`, so a layer computes XWᵀ + b and
its weight gradient is the (out, in) product dL/dOᵀ X (the book's W is our Wᵀ, and its
dL/dW = Xᵀ dL/dO is the transpose of ours).

Softmax regression, logits O = XWᵀ + b, L = −1/B sum_i log softmax(o_i)[y_i]; with
P = softmax(O) row by row and Y one-hot, dL/dO = (P − Y) / B, and
    dL/dW = (dL/dO)ᵀ X,   dL/db = column sums of dL/dO
MLP, H_0 = X, Z_l = H_{l−1} W_lᵀ + b_l, H_l = relu(Z_l), logits Z_L; going back from
δ_L = (P − Y) / B:
    dL/dW_l = δ_lᵀ H_{l−1},   dL/db_l = column sums of δ_l,   δ_{l−1} = (δ_l W_l) ⊙ [Z_{l−1} > 0]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


# ---- linear regression ----------------------------------------------------------------------------

def linreg_forward(params, batch):
    """Squared loss of y = Xw + b; returns (loss, cache)."""
    X_BxD, y_B = batch["X"], batch["y"]
    residual_B = X_BxD @ params["w"] + params["b"] - y_B
    loss = 0.5 * jnp.mean(residual_B ** 2)
    return loss, {"X_BxD": X_BxD, "residual_B": residual_B}


def linreg_backward(params, cache):
    """{'w': dL/dw (D,), 'b': dL/db ()} from the forward pass's cache."""
    del params  # the gradient needs only the cache
    X_BxD, residual_B = cache["X_BxD"], cache["residual_B"]
    d_pred_B = residual_B / residual_B.shape[0]  # dL/d(prediction)
    return {"w": X_BxD.T @ d_pred_B, "b": d_pred_B.sum()}


# ---- softmax regression ---------------------------------------------------------------------------

def _softmax_cross_entropy(logits_BxC, labels_B):
    logp_BxC = jax.nn.log_softmax(logits_BxC, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(logp_BxC, labels_B[:, None], axis=-1))
    return loss, jnp.exp(logp_BxC), jax.nn.one_hot(labels_B, logits_BxC.shape[-1], dtype=logits_BxC.dtype)


def softmax_forward(params, batch):
    """Cross-entropy of logits XWᵀ + b against integer labels; returns (loss, cache)."""
    X_BxD = batch["X"]
    logits_BxC = X_BxD @ params["w"].T + params["b"]
    loss, probs_BxC, onehot_BxC = _softmax_cross_entropy(logits_BxC, batch["y"])
    return loss, {"X_BxD": X_BxD, "probs_BxC": probs_BxC, "onehot_BxC": onehot_BxC}


def softmax_backward(params, cache):
    """{'w': dL/dW (C, D), 'b': dL/db (C,)} from the cache: dL/dO = (P − Y) / B."""
    del params
    d_logits_BxC = (cache["probs_BxC"] - cache["onehot_BxC"]) / cache["probs_BxC"].shape[0]
    return {"w": d_logits_BxC.T @ cache["X_BxD"], "b": d_logits_BxC.sum(axis=0)}


# ---- MLP ------------------------------------------------------------------------------------------

def mlp_forward(params, batch):
    """Cross-entropy of the MLP (ReLU between layers); the cache keeps every layer's input
    H_{l−1} and every hidden pre-activation Z_l."""
    H = batch["X"]
    layer_inputs, pre_activations = [], []
    for layer in params[:-1]:
        layer_inputs.append(H)
        Z = H @ layer["w"].T + layer["b"]
        pre_activations.append(Z)
        H = jax.nn.relu(Z)
    layer_inputs.append(H)
    logits_BxC = H @ params[-1]["w"].T + params[-1]["b"]
    loss, probs_BxC, onehot_BxC = _softmax_cross_entropy(logits_BxC, batch["y"])
    return loss, {"layer_inputs": layer_inputs, "pre_activations": pre_activations,
                  "probs_BxC": probs_BxC, "onehot_BxC": onehot_BxC}


def mlp_backward(params, cache):
    """[{'w': dL/dW_l, 'b': dL/db_l} for each layer], last layer first back to the first."""
    delta = (cache["probs_BxC"] - cache["onehot_BxC"]) / cache["probs_BxC"].shape[0]  # dL/dZ_L
    grads = [None] * len(params)
    for l in reversed(range(len(params))):
        H_in = cache["layer_inputs"][l]
        grads[l] = {"w": delta.T @ H_in, "b": delta.sum(axis=0)}
        if l > 0:  # through W_l, then through the ReLU that made H_{l-1}
            Z_prev = cache["pre_activations"][l - 1]
            delta = (delta @ params[l]["w"]) * (Z_prev > 0).astype(delta.dtype)
    return grads


MODELS = {
    "linreg": (linreg_forward, linreg_backward),
    "softmax": (softmax_forward, softmax_backward),
    "mlp": (mlp_forward, mlp_backward),
}


def value_and_grad(model: str, params, batch):
    """(loss, grads) by the hand-written forward and backward passes of `model`."""
    forward, backward = MODELS[model]
    loss, cache = forward(params, batch)
    return loss, backward(params, cache)
