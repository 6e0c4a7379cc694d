"""Models as pure functions: `init(key, ...) -> params` (a pytree) and `apply(params, X) -> out`.
Submodules are imported when first named."""
from jaxdl.lazy import lazy_package

__all__, __getattr__, __dir__ = lazy_package(__name__, ("dense", "init", "kge", "linen", "word2vec"), {
    name: "dense" for name in ("linreg_apply", "linreg_init", "mlp_apply", "mlp_init", "softmax_apply",
                               "softmax_init")})
