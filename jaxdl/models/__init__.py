"""Models as pure functions: `init(key, ...) -> params` (a pytree) and `apply(params, X) -> out`."""
from jaxdl.models import dense, init, kge, linen, word2vec
from jaxdl.models.dense import linreg_apply, linreg_init, mlp_apply, mlp_init, softmax_apply, softmax_init

__all__ = ["dense", "init", "kge", "linen", "linreg_apply", "linreg_init", "mlp_apply", "mlp_init", "softmax_apply",
           "softmax_init", "word2vec"]
