"""Pure, keyword-clear loss functions. Per-example forms return shape (B,); reduce with `mean`."""
from jaxdl.losses.dense import (  # noqa: F401
    accuracy,
    cross_entropy,
    cross_entropy_naive,
    gaussian_nll,
    masked_mean,
    softmax_naive,
    squared_loss,
)
