"""Federated training on devices: the client axis of a FedE round split across them.

All clients train in one compiled round (`jaxdl.train.federated.make_round`, over a
leading client axis C). On several devices the clients are divided among them: the
stacked client state and data are sharded along C (padded with empty clients to a multiple
of the device count; an empty client holds no triples and no entities, so it never trains,
takes part or contributes), the server's table is replicated, and each device trains its
own clients: the jitted round partitions a vmapped local training, and a sequential one
(clients one after the other) runs under `shard_map`, each device taking its clients in
turn. The aggregation's sum over clients becomes one all-reduce. Host copies (what
checkpoints hold) have the real clients only, so a run can resume on another number of
devices.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from jaxdl.devices import processes
from jaxdl.devices.data_parallel import Layout, Placed
from jaxdl.devices.memory import abstract, compile_checked
from jaxdl.errors import JaxdlError

if TYPE_CHECKING:  # the round's types; the module itself is imported by whoever builds the round
    from jaxdl.train.federated import ClientArrays, FedState

CLIENT_AXIS = "clients"


def _pad_clients(tree, count: int):
    """Every leaf's leading (client) axis padded with zeros (False) to `count` rows."""
    return jax.tree.map(lambda a: np.pad(np.asarray(a), [(0, count - np.shape(a)[0])] + [(0, 0)] * (np.ndim(a) - 1)),
                        tree)


def client_parallel(build: Callable, state: FedState, data: ClientArrays, *, layout: Layout) -> Placed:
    """The jitted round `build(client_map)(state, data, key)` on `layout`'s devices, the
    client axis split across them; state donated. `state` and `data` are host copies with
    the real clients. On one device `client_map` is None; on several it is `shard_map` over
    the client axis (a function of per-client arrays runs on each device's own clients)."""
    from jaxdl.train.federated import FedState

    if processes.count() > 1:
        raise JaxdlError("federated training runs in one process (its client axis is split over that "
                         "process's devices); run it without `launch`")
    devices = list(layout.devices)
    num_clients = int(np.shape(data.client_mask_C)[0])
    if len(devices) == 1:
        def place(host_state):
            return jax.device_put(host_state, devices[0], may_alias=False)

        data_on_devices = jax.device_put(data, devices[0])
        to_host = jax.device_get
        shardings = jax.tree.map(lambda _: SingleDeviceSharding(devices[0]), state)
        round_fn = build(None)
    else:
        mesh = Mesh(np.asarray(devices), (CLIENT_AXIS,))
        by_client, replicated = NamedSharding(mesh, P(CLIENT_AXIS)), NamedSharding(mesh, P())
        padded = -(-num_clients // len(devices)) * len(devices)

        def place(host_state):
            host_state = jax.device_get(host_state)
            return FedState(jax.device_put(_pad_clients(host_state.clients, padded), by_client),
                            jax.device_put(np.asarray(host_state.server_entity), replicated),
                            jax.device_put(np.asarray(host_state.round), replicated))

        def to_host(device_state):
            host = jax.device_get(device_state)
            return host._replace(clients=jax.tree.map(lambda a: a[:num_clients], host.clients))

        data_on_devices = jax.device_put(_pad_clients(data, padded), by_client)
        shardings = FedState(jax.tree.map(lambda _: by_client, state.clients), replicated, replicated)

        def client_map(per_client: Callable) -> Callable:
            # every value inside varies by client; check_vma would ask each loop's constants to say so
            return jax.shard_map(per_client, mesh=mesh, in_specs=P(CLIENT_AXIS), out_specs=P(CLIENT_AXIS),
                                 check_vma=False)

        round_fn = build(client_map)
    jitted = jax.jit(round_fn, out_shardings=(shardings, None), donate_argnums=0)
    # compiled now, and refused now if a round cannot fit on the devices
    example = state if len(devices) == 1 else state._replace(clients=_pad_clients(state.clients, padded))
    jitted = compile_checked(jitted, (abstract(example, shardings), data_on_devices, jax.random.key(0)), devices,
                             what="one round")
    return Placed(lambda s, key: jitted(s, data_on_devices, key), place, to_host, layout)
