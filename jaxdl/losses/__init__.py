"""Pure, keyword-clear loss functions. Per-example forms return shape (B,); reduce with `mean`.
Submodules are imported when first named."""
from jaxdl.lazy import lazy_package

__all__, __getattr__, __dir__ = lazy_package(__name__, ("classification", "dense", "kge", "word2vec"), {
    name: "dense" for name in ("accuracy", "cross_entropy", "cross_entropy_naive", "gaussian_nll", "masked_mean",
                               "softmax_naive", "squared_loss")})
