"""Pure, keyword-clear loss functions. Per-example forms return shape (B,); reduce with `mean`."""
from jaxdl.losses import classification, dense, kge, word2vec
from jaxdl.losses.dense import (
    accuracy,
    cross_entropy,
    cross_entropy_naive,
    gaussian_nll,
    masked_mean,
    softmax_naive,
    squared_loss,
)

__all__ = ["accuracy", "classification", "cross_entropy", "cross_entropy_naive", "dense", "gaussian_nll", "kge",
           "masked_mean", "softmax_naive", "squared_loss", "word2vec"]
