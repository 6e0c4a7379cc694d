"""The one room that knows about devices and processes.

    select.py         `--devices` -> devices; `python -m jaxdl devices`
    data_parallel.py  a built train step over an epoch's batches: one device, pmap or shard_map
    clients.py        FedE: the client axis of a round split across devices
    processes.py      several processes of one job (`jax.distributed`): who writes, what they share
    memory.py         will it fit: a state from its shapes, an epoch as XLA compiled it

It receives steps and rounds that are already built and returns them placed, with the
functions that move a state between host and devices; models, losses and steps never see
a device.
"""
from jaxdl.devices.clients import client_parallel
from jaxdl.devices.data_parallel import Layout, Placed, check_divisible, data_parallel, layout
from jaxdl.devices.memory import make_checked
from jaxdl.devices.select import device_names, main_devices, select_devices

__all__ = ["Layout", "Placed", "check_divisible", "client_parallel", "data_parallel", "device_names", "layout",
           "main_devices", "make_checked", "select_devices"]
