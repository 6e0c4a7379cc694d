"""The pure training core: the one step, the scanned epoch, optimizers, FedE's round."""
from jaxdl.train import epoch, federated, optim, sparse, step
from jaxdl.train.epoch import make_scan_epoch, shuffled_batches, shuffled_indices, take_rows
from jaxdl.train.optim import make_optimizer, sgd
from jaxdl.train.step import TrainState, init_state, make_train_step

__all__ = ["TrainState", "epoch", "federated", "init_state", "make_optimizer", "make_scan_epoch", "make_train_step",
           "optim", "sgd", "shuffled_batches", "shuffled_indices", "sparse", "step", "take_rows"]
