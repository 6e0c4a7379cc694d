"""jaxdl: Dive into Deep Learning and federated knowledge-graph embedding as pure JAX functions.

    import jaxdl
    result = jaxdl.run("mlp", max_epochs=5)          # any experiment, from Python
    jaxdl.models.dense.mlp_init, jaxdl.losses.cross_entropy, jaxdl.train.make_train_step, ...

Rooms, imports pointing one way: experiments -> harness -> devices -> core (train, models,
losses, eval) -> data. Subpackages are imported on first use, so `python -m jaxdl ps`
starts without jax.
"""
from __future__ import annotations

from jaxdl.lazy import lazy_package

__version__ = "0.1.0"

# `jaxdl.models`, `jaxdl.run`, ...: imported when first named (PEP 562)
__all__, __getattr__, __dir__ = lazy_package(__name__, (
    "config", "data", "devices", "eval", "harness", "interpret", "losses", "matcalc", "models", "runs", "train",
    "verify"), {"run": "api", "load_run": "api", "RunResult": "api"})
