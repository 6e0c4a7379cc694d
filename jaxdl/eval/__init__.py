"""Evaluation: metrics computed from trained parameters (accuracy, link prediction, word vectors).
Submodules are imported when first named, so a run loads only what it evaluates with."""
from __future__ import annotations

import importlib

__all__ = ["budget", "classification", "federated", "link_prediction", "word_vectors"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"jaxdl.eval.{name}")
    raise AttributeError(f"module 'jaxdl.eval' has no attribute {name!r}")
