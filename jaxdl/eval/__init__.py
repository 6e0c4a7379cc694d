"""Evaluation: metrics computed from trained parameters (accuracy, link prediction, word vectors).
Submodules are imported when first named, so a run loads only what it evaluates with."""
from jaxdl.lazy import lazy_package

__all__, __getattr__, __dir__ = lazy_package(__name__, ("budget", "classification", "federated", "link_prediction",
                                                        "word_vectors"))
