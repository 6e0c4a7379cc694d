"""Data parallelism: a built train step, run over the batches of an epoch on several devices.

The harness builds the step with the reduction this module asks for
(`make_train_step(loss_fn, optimizer, **layout.step_reduction)`) and hands it over with the
batch layout (`make_batches`, optionally `load_batch`); `data_parallel` returns the placed
epoch. Models, losses and steps never see a device.

Data parallelism, the same in both forms (`--parallel pmap|shard_map`):

  * parameters and optimizer state are replicated: every device holds the same copy;
  * each epoch's global batches `(S, B, ...)` are drawn from the epoch key by the
    experiment's own `make_batches(data, key)`; every device uses the same key, so all
    agree on the permutation, and device i trains on columns `i*B/N:(i+1)*B/N` of each
    global batch (B must be divisible by the device count N);
  * gradients and metrics are averaged over the named axis `'data'` with `lax.pmean`, so
    every device applies the same update and N devices with global batch B follow one
    device's trajectory with batch B, up to floating-point reduction order -- for losses
    that are means over the examples of a batch (every jaxdl loss; a masked loss
    normalised by its own count becomes a mean of per-device means);
  * per-device randomness (dropout, negative samples): at each step device i uses
    `fold_in(step_key, i)`, where step_key is the key one device would use;
  * the whole epoch is one compiled program: the draw of the batches and a `lax.scan`
    over the steps inside `pmap` / `shard_map`.

`pmap` is the classic form: state carries a leading device axis (one copy per device)
and the step averages the per-device gradients (`grad_reduce`). `shard_map` (under `jit`,
on a `Mesh` with `NamedSharding`s) is the modern form that `pmap` is now built on: state
is one global replicated array, and because shard_map types values as replicated or
varying over the axis, differentiating the device-averaged loss (`loss_reduce`) with
respect to replicated params yields already-averaged gradients (autodiff inserts the
all-reduce). Both give the same result (tested) and move the same bytes; both run
unchanged over the devices of several processes (processes.py).

Cost of the shared draw: with a batcher that returns the batches themselves, every
device gathers the whole epoch and keeps its columns (XLA does not partition a gather
whose indices are replicated) -- one pass over the in-memory training set per epoch per
device. With `load_batch` the batcher returns row indices instead and each device
gathers only its own rows, inside the step.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from jaxdl.devices import processes
from jaxdl.devices.memory import abstract, compile_checked
from jaxdl.devices.select import select_devices
from jaxdl.errors import JaxdlError
from jaxdl.train.epoch import make_scan_epoch, scan_steps

AXIS = "data"  # the named device axis gradients are averaged over
MODES = ("pmap", "shard_map")


def mean_over_devices(tree):
    return lax.pmean(tree, AXIS)


@dataclass(frozen=True)
class Layout:
    """The devices of a run and the form of data parallelism over them: 'single' (one
    device of one process: the plain jitted scan), 'pmap' or 'shard_map'."""

    devices: tuple
    mode: str

    @property
    def step_reduction(self) -> dict:
        """Keyword arguments for `make_train_step`: where the devices' values are averaged."""
        if self.mode == "pmap":
            return {"grad_reduce": mean_over_devices}
        if self.mode == "shard_map":
            return {"loss_reduce": mean_over_devices}
        return {}

    def first_only(self) -> "Layout":
        """The first device alone (for steps that are not data-parallel)."""
        if processes.count() > 1:
            raise JaxdlError("this experiment runs in one process (its step is not data-parallel); "
                             "run it without `launch`")
        return Layout((self.devices[0],), "single")

    @property
    def names(self) -> list[str]:
        return [f"{d.platform}:{d.id}" for d in self.devices]


def layout(spec: str = "all", mode: str = "pmap") -> Layout:
    """`--devices` and `--parallel` -> Layout. One device (of one process) is always 'single'."""
    if mode not in MODES:
        raise JaxdlError(f"--parallel {mode!r}: not one of {', '.join(MODES)}")
    devices = select_devices(spec)
    if not devices:
        raise JaxdlError("no devices selected")
    if len(devices) == 1 and processes.count() == 1:
        mode = "single"
    return Layout(tuple(devices), mode)


@dataclass
class Placed:
    """An epoch placed on devices, and how states cross between host and devices.

    epoch_fn(state, key) -> (state, step_metrics): one epoch; step metrics have shape (S,).
    place(host_state) puts a state on the devices (a fresh copy: epochs donate their state);
    to_host(state) gives one host (numpy) copy -- checkpoints hold that.
    """

    epoch_fn: Callable
    place: Callable
    to_host: Callable
    layout: Layout
    replica_digests: list | None = field(default=None)  # several processes: each one's parameter digest


def batch_shape(make_batches, data) -> tuple[int, int]:
    """(S, B) of the batches `make_batches` draws, found by tracing it (no computation)."""
    shapes = jax.eval_shape(make_batches, data, jax.random.key(0))
    leading = {tuple(leaf.shape[:2]) for leaf in jax.tree.leaves(shapes)}
    if len(leading) != 1 or len(next(iter(leading))) != 2:
        raise JaxdlError(f"make_batches must return leaves with a common leading (steps, batch) shape, got {leading}")
    return next(iter(leading))


def check_divisible(global_batch: int, num_devices: int) -> int:
    """The per-device batch; a global batch the devices cannot split evenly is an error."""
    if global_batch % num_devices:
        lo = global_batch - global_batch % num_devices
        near = f"{lo} or {lo + num_devices}" if lo else f"{num_devices}"
        raise JaxdlError(f"--batch-size {global_batch}: the global batch must be divisible by the "
                         f"{num_devices} devices (e.g. {near})")
    return global_batch // num_devices


def global_put(tree, sharding):
    """Host arrays -> global arrays laid out by `sharding` (each process fills its own devices)."""

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, jax.device_get(tree))


def _key_data(key) -> np.ndarray:
    """A typed key as host uint32 data (what crosses into a multi-device program)."""
    return np.asarray(jax.random.key_data(key))


def data_parallel(train_step, make_batches, data, *, layout: Layout, batch_size: int | None = None,
                  load_batch: Callable | None = None, example_state=None) -> Placed:
    """An epoch of `train_step` over `data` on `layout`'s devices.

    Args:
      train_step: `(state, batch, key) -> (state, metrics)`, built with
        `layout.step_reduction` (it averages what the devices must agree on).
      make_batches: `make_batches(data, key)` -> pytree with leading (S, B): the epoch's
        global batches, or with `load_batch` per-step batch specs (e.g. row indices).
      data: pytree of host arrays (the whole training set; every device keeps a copy).
      batch_size: the configured global batch, named in the error when it does not divide.
      load_batch: optional `load_batch(data, spec_b) -> batch`, run inside each step on the
        device's own columns of the spec (so a device gathers only its own rows).
      example_state: a host train state of the shapes the epoch will get; the epoch is then
        compiled at once and refused if it cannot fit on the devices (devices/memory.py; in a
        job of several processes, only under `shard_map`).
    """
    if layout.mode == "single":  # any batch layout: the plain jitted scan over the leading axis
        return _single(train_step, make_batches, data, layout, load_batch, example_state)
    _, global_batch = batch_shape(make_batches, data)
    if batch_size is not None and batch_size != global_batch:
        raise JaxdlError(f"make_batches draws batches of {global_batch}, the config says {batch_size}")
    check_divisible(global_batch, len(layout.devices))
    if layout.mode == "pmap":
        placed = _pmap(train_step, make_batches, data, layout, global_batch // len(layout.devices), load_batch,
                       example_state)
    else:
        placed = _shard_map(train_step, make_batches, data, layout, load_batch, example_state)
    if processes.count() > 1:
        placed.epoch_fn = _checking_replicas(placed)
    return placed


def _checking_replicas(placed: Placed):
    """The epoch, then a check that every process holds the same parameters (a digest of
    each process's copy, all-gathered: one tiny collective per epoch)."""
    epoch_fn = placed.epoch_fn

    def checked_epoch_fn(state, key):
        state, metrics = epoch_fn(state, key)
        host = placed.to_host(state)
        step = getattr(host, "step", None)
        placed.replica_digests = processes.check_replicas(getattr(host, "params", host),
                                                          step=None if step is None else int(step))
        return state, metrics

    return checked_epoch_fn


def _single(train_step, make_batches, data, layout, load_batch, example_state) -> Placed:
    device = layout.devices[0]
    kwargs = {} if load_batch is None else {"load_batch": load_batch}
    run_epoch = make_scan_epoch(train_step, make_batches, **kwargs)
    data = jax.device_put(data, device)
    if example_state is not None:  # compiled now, and refused now if it cannot fit
        run_epoch = compile_checked(run_epoch, (abstract(example_state, SingleDeviceSharding(device)), data,
                                                jax.random.key(0)), device)

    def place(state):  # a copy: the epoch donates (consumes) the state it is given
        return jax.device_put(state, device, may_alias=False)

    return Placed(lambda state, key: run_epoch(state, data, key), place, jax.device_get, layout)


def _device_steps(train_step, state, data, my_batches, k_steps, load_batch):
    """One device's scan over its columns of the epoch's batches. Step s uses the key one
    device would use, `fold_in(k_steps, s)`, with this device's index folded in."""
    index = lax.axis_index(AXIS)

    def device_step(s, batch_or_spec, key):
        batch = batch_or_spec if load_batch is None else load_batch(data, batch_or_spec)
        return train_step(s, batch, jax.random.fold_in(key, index))

    return scan_steps(device_step, state, my_batches, k_steps)


def _pmap(train_step, make_batches, data, layout, per_device_batch, load_batch, example_state=None) -> Placed:
    devices = list(layout.devices)
    local = [d for d in devices if d.process_index == processes.index()]
    mesh = Mesh(np.asarray(local), (AXIS,))  # the layout pmap itself gives its arguments
    stacked, replicated = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())

    def device_epoch(state, data, key_data):
        k_batches, k_steps = jax.random.split(jax.random.wrap_key_data(key_data))
        batches = make_batches(data, k_batches)  # the same global batches on every device
        start = lax.axis_index(AXIS) * per_device_batch
        mine = jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, per_device_batch, axis=1), batches)
        return _device_steps(train_step, state, data, mine, k_steps, load_batch)

    pmapped = jax.pmap(device_epoch, axis_name=AXIS, in_axes=(0, None, None), devices=devices, donate_argnums=0)
    data_on_devices = jax.device_put(jax.device_get(data), replicated)
    if example_state is not None and processes.count() == 1:  # compiled now, and refused now if it cannot fit
        stacked_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct((len(local), *np.shape(x)), np.asarray(x).dtype),
                                     example_state)
        pmapped = compile_checked(pmapped, (stacked_state, data_on_devices, _key_data(jax.random.key(0))), local)

    def epoch_fn(state, key):
        state, metrics_NxS = pmapped(state, data_on_devices, _key_data(key))
        return state, jax.tree.map(lambda m: m[0], metrics_NxS)  # identical on every device (pmean)

    def place(state):
        host = jax.device_get(state)
        return jax.device_put(jax.tree.map(lambda x: np.broadcast_to(x, (len(local), *np.shape(x))), host), stacked)

    def to_host(state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], state)

    return Placed(epoch_fn, place, to_host, layout)


def _shard_map(train_step, make_batches, data, layout, load_batch, example_state=None) -> Placed:
    # shard_map types every value as replicated or varying over the axis. The params are
    # replicated, the batch varies; differentiating the device-averaged (replicated) loss
    # with respect to the params, autodiff's transpose of the implicit broadcast sums the
    # per-device gradients: the all-reduce comes from autodiff. (Averaging per-device
    # gradients the pmap way would be wrong here: they are already summed.)
    mesh = Mesh(np.asarray(layout.devices), (AXIS,))
    replicated, by_column = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, AXIS))

    def device_steps(state, data, my_batches, k_steps):
        return _device_steps(train_step, state, data, my_batches, k_steps, load_batch)

    sharded_steps = jax.shard_map(device_steps, mesh=mesh, in_specs=(P(), P(), P(None, AXIS), P()),
                                  out_specs=P(), check_vma=True)

    def run_epoch(state, data, key_data):
        k_batches, k_steps = jax.random.split(jax.random.wrap_key_data(key_data))
        # The global batches (or specs), laid out as shard_map takes them: device i, columns i.
        batches = lax.with_sharding_constraint(make_batches(data, k_batches), by_column)
        return sharded_steps(state, data, batches, k_steps)

    jitted = jax.jit(run_epoch, in_shardings=replicated, out_shardings=replicated, donate_argnums=0)
    data_on_devices = global_put(data, replicated)
    if example_state is not None:  # compiled now, and refused now if it cannot fit
        jitted = compile_checked(jitted, (abstract(example_state, replicated), data_on_devices,
                                          abstract(_key_data(jax.random.key(0)), replicated)), layout.devices)

    def place(state):
        return global_put(state, replicated)

    def to_host(state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)

    return Placed(lambda state, key: jitted(state, data_on_devices, _key_data(key)), place, to_host, layout)


# ---- what crosses the interconnect --------------------------------------------------------

_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|f16|bf16|s32|u32|f32|s64|u64|f64)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8}


def allreduce_bytes(hlo_text: str) -> int:
    """Bytes summed over the results of every all-reduce in compiled HLO text (each device
    contributes, and receives, that many bytes per execution of the program)."""
    total = 0
    for line in hlo_text.splitlines():
        if " all-reduce(" not in line and " all-reduce-start(" not in line:
            continue
        lhs = line.split("=", 1)[1].split("all-reduce", 1)[0]
        for dtype, dims in _SHAPE.findall(lhs):
            total += _BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    return total


def step_allreduce_bytes(train_step, state, batch, devices) -> int:
    """All-reduced bytes of one data-parallel step (gradients and metrics), read from the
    step as XLA compiles it under `shard_map` on `devices`; `train_step` built with
    `Layout(devices, 'shard_map').step_reduction`."""
    mesh = Mesh(np.asarray(devices), (AXIS,))
    step = jax.jit(jax.shard_map(train_step, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=P()))
    text = step.lower(state, batch, jax.random.key(0)).compile().as_text()
    return allreduce_bytes(text)
