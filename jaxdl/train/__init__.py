"""The pure training core: the one step, the scanned epoch, optimizers, FedE's round.
Submodules are imported when first named."""
from jaxdl.lazy import lazy_package

__all__, __getattr__, __dir__ = lazy_package(__name__, ("epoch", "federated", "fusion", "optim", "sparse", "step"), {
    "make_scan_epoch": "epoch", "shuffled_batches": "epoch", "shuffled_indices": "epoch", "take_rows": "epoch",
    "make_optimizer": "optim", "sgd": "optim", "TrainState": "step", "init_state": "step",
    "make_train_step": "step"})
