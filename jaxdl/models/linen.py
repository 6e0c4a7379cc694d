"""Concise `flax.linen` versions of the dense models (init/apply only, no NNX).

`to_linen` / `from_linen` convert between our from-scratch pytrees and linen's
{'params': {'Dense_i': {'kernel', 'bias'}}} so both can be run on identical parameters.
linen's kernel is (in, out), the transpose of our (out, in) weight.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class LinRegNet(nn.Module):
    @nn.compact
    def __call__(self, X):
        return nn.Dense(1, name="Dense_0")(X)[..., 0]


class SoftmaxNet(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, X):
        return nn.Dense(self.num_classes, name="Dense_0")(X)


class MLPNet(nn.Module):
    hidden: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, X):
        for i, h in enumerate(self.hidden):
            X = nn.relu(nn.Dense(h, name=f"Dense_{i}")(X))
        return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(X)


def to_linen(params):
    """Our pytree (linreg dict, softmax dict, or MLP list) -> linen variables."""
    if isinstance(params, list):
        layers = params
    elif params["w"].ndim == 1:
        layers = [{"w": params["w"][None, :], "b": jnp.reshape(params["b"], (1,))}]
    else:
        layers = [params]
    return {"params": {f"Dense_{i}": {"kernel": l["w"].T, "bias": l["b"]} for i, l in enumerate(layers)}}


def from_linen_mlp(variables):
    """linen MLP variables -> our list-of-layers pytree."""
    p = variables["params"]
    return [{"w": p[f"Dense_{i}"]["kernel"].T, "b": p[f"Dense_{i}"]["bias"]} for i in range(len(p))]
