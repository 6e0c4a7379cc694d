"""jaxdl: Dive into Deep Learning and federated knowledge-graph embedding as pure JAX functions.

    import jaxdl
    result = jaxdl.run("mlp", max_epochs=5)          # any experiment, from Python
    jaxdl.models.dense.mlp_init, jaxdl.losses.cross_entropy, jaxdl.train.make_train_step, ...

Rooms, imports pointing one way: experiments -> harness -> devices -> core (train, models,
losses, eval) -> data. Subpackages are imported on first use, so `python -m jaxdl ps`
starts without jax.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("config", "data", "devices", "eval", "harness", "interpret", "losses", "matcalc", "models", "runs",
                "train", "verify")
_API = {"run": "jaxdl.api", "load_run": "jaxdl.api", "RunResult": "jaxdl.api"}
__all__ = list(_SUBPACKAGES)  # and run, load_run, RunResult (jaxdl.api), resolved on first use


def __getattr__(name: str):
    """`jaxdl.models`, `jaxdl.run`, ...: imported when first named (PEP 562)."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"jaxdl.{name}")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'jaxdl' has no attribute {name!r}")
