"""Evaluation: metrics computed from trained parameters (accuracy, link prediction, word vectors)."""
from jaxdl.eval import classification, federated, link_prediction, word_vectors

__all__ = ["classification", "federated", "link_prediction", "word_vectors"]
