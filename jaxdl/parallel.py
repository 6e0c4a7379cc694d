"""The one room that knows about devices.

`select_devices(spec)` turns the `--devices` flag into devices; `data_parallel` turns a
pure loss, an optimizer and a batcher into an epoch function over those devices. Models
and losses never see a device.

Data parallelism, the same in both forms (`--parallel pmap|shard_map`):

  * parameters and optimizer state are replicated: every device holds the same copy;
  * each epoch's global batches `(S, B, ...)` are drawn from the epoch key by the
    experiment's own `make_batches(data, key)`; every device uses the same key, so all
    agree on the permutation, and device i trains on columns `i*B/N:(i+1)*B/N` of each
    global batch (B must be divisible by the device count N);
  * gradients and metrics are averaged over the named axis `'data'` with `lax.pmean`
    (`make_train_step(..., grad_reduce=...)`), so every device applies the same update
    and N devices with global batch B follow one device's trajectory with batch B, up to
    floating-point reduction order -- for losses that are means over the examples of a
    batch (every jaxdl loss; a masked loss normalised by its own count becomes a mean of
    per-device means);
  * per-device randomness (dropout, negative samples): at each step device i uses
    `fold_in(step_key, i)`, where step_key is the key one device would use;
  * the whole epoch is one compiled program: the draw of the batches and a `lax.scan`
    over the steps inside `pmap` / `shard_map`.

`pmap` is the classic form: state carries a leading device axis (one copy per device)
and gradients are per-device values that `grad_reduce` averages. `shard_map` (under
`jit`, on a `Mesh` with `NamedSharding`s) is the modern form that `pmap` is now built on:
state is one global replicated array, and because shard_map types values as replicated or
varying over the axis, differentiating the device-averaged loss with respect to replicated
params yields already-averaged gradients (autodiff inserts the all-reduce). Both give the
same result (tested) and move the same bytes; both run unchanged over the devices of
several processes (jaxdl.distributed).

Cost of the shared draw: with a batcher that returns the batches themselves, every
device gathers the whole epoch and keeps its columns (XLA does not partition a gather
whose indices are replicated) -- one pass over the in-memory training set per epoch per
device. With `load_batch` the batcher returns row indices instead and each device
gathers only its own rows, inside the step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.errors import JaxdlError
from jaxdl.train.epoch import make_scan_epoch, scan_steps
from jaxdl.train.step import init_state, make_train_step

AXIS = "data"  # the named device axis gradients are averaged over
MODES = ("pmap", "shard_map", "single")


def select_devices(spec: str = "all", *, devices: list | None = None) -> list:
    """'all', a count ('2'), or comma-separated indices ('0,2,3') -> list of devices.

    Indices refer to `jax.devices()` (see `python -m jaxdl devices`). In a run of several
    processes only 'all' is accepted: each process's devices are chosen when it starts
    (`launch --local-devices`, or CUDA_VISIBLE_DEVICES).
    """
    available = list(jax.devices()) if devices is None else list(devices)
    spec = str(spec).strip()
    if spec in ("", "all"):
        return available
    if devices is None and jax.process_count() > 1:
        raise JaxdlError(f"--devices {spec}: a run of {jax.process_count()} processes uses all their devices; "
                         "pick each process's devices with `launch --local-devices` or CUDA_VISIBLE_DEVICES")
    try:
        parts = [int(p) for p in spec.split(",")]
    except ValueError:
        raise JaxdlError(f"--devices {spec!r}: expected 'all', a count, or indices like 0,2,3") from None
    if "," not in spec:
        count = parts[0]
        if count < 1:
            raise JaxdlError(f"--devices {spec}: need at least one device")
        if count > len(available):
            raise JaxdlError(f"--devices {spec}: only {len(available)} device(s) available")
        return available[:count]
    if len(set(parts)) != len(parts):
        raise JaxdlError(f"--devices {spec}: duplicate device index")
    bad = [i for i in parts if not 0 <= i < len(available)]
    if bad:
        raise JaxdlError(f"--devices {spec}: no device {bad[0]} (have 0..{len(available) - 1})")
    return [available[i] for i in parts]


@dataclass
class DataParallel:
    """What the loop needs to train on a set of devices.

    epoch_fn(state, key) -> (state, step_metrics): one epoch; step metrics have shape (S,).
    place(host_state) puts a state on the devices (replicated); to_host(state) gives one
    host copy (numpy) -- checkpoints hold that; from_host is place.
    """

    epoch_fn: Callable
    place: Callable
    to_host: Callable
    from_host: Callable
    devices: list
    mode: str
    steps_per_epoch: int = 0
    global_batch: int = 0
    replica_digests: list | None = None  # several processes: each one's parameter digest, last epoch


def _batch_shape(make_batches, data) -> tuple[int, int]:
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


def _global_put(tree, sharding):
    """Host arrays -> global arrays laid out by `sharding` (each process fills its own devices)."""

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, jax.device_get(tree))


def _key_data(key) -> np.ndarray:
    """A typed key as host uint32 data (what crosses into a multi-device program)."""
    return np.asarray(jax.random.key_data(key))


def data_parallel(loss_fn, optimizer, make_batches, data, *, devices: list, mode: str = "pmap",
                  batch_size: int | None = None, load_batch: Callable | None = None,
                  make_step: Callable | None = None) -> DataParallel:
    """An epoch over `data` on `devices`, data-parallel in the form `mode`.

    Args:
      loss_fn: `loss_fn(params, batch, key) -> (loss, metrics)`, a mean over the batch.
      optimizer: any optax GradientTransformation.
      make_batches: `make_batches(data, key)` -> pytree with leading (S, B): the epoch's
        global batches, or with `load_batch` per-step batch specs (e.g. row indices).
      data: pytree of host arrays (the whole training set; every device keeps a copy).
      devices: from `select_devices`.
      mode: 'pmap', 'shard_map', or 'single' (a plain jitted scan on devices[0]).
      batch_size: the configured global batch, named in the error when it does not divide.
      load_batch: optional `load_batch(data, spec_b) -> batch`, run inside each step on the
        device's own columns of the spec (so a device gathers only its own rows).
      make_step: optional `make_step(grad_reduce) -> train_step(state, batch, key)` for a
        step that is not `make_train_step(loss_fn, optimizer)` (e.g. a row-sparse update);
        it must apply `grad_reduce` (a `lax.pmean` over the axis 'data', or None on one
        device) to whatever the devices must agree on. Under shard_map such a step runs
        untyped (`check_vma=False`), exactly as under pmap.

    Returns:
      DataParallel; `epoch_fn(place(init_state(...)), key)` trains one epoch.
    """
    if mode not in MODES:
        raise JaxdlError(f"--parallel {mode!r}: not one of {', '.join(MODES[:2])}")
    if not devices:
        raise JaxdlError("no devices selected")
    if len(set(devices)) != len(devices):
        raise JaxdlError("the same device was selected twice")
    custom = make_step is not None
    if not custom:
        if loss_fn is None or optimizer is None:
            raise ValueError("data_parallel needs loss_fn and optimizer, or make_step")
        make_step = lambda grad_reduce: make_train_step(loss_fn, optimizer, grad_reduce=grad_reduce)  # noqa: E731
    steps, global_batch = _batch_shape(make_batches, data)
    if batch_size is not None and batch_size != global_batch:
        raise JaxdlError(f"make_batches draws batches of {global_batch}, the config says {batch_size}")
    num = len(devices)
    check_divisible(global_batch, num)
    if num == 1 and jax.process_count() == 1:
        mode = "single"  # one device: the plain jitted scan, whatever --parallel says
    if mode == "single":
        if num != 1 or jax.process_count() > 1:
            raise JaxdlError(f"the single-device form cannot use {num} devices")
        dp = _single(make_step(None), make_batches, data, devices[0], load_batch)
    elif mode == "pmap":
        dp = _pmap(make_step(_reduce_over_devices), make_batches, data, devices, global_batch // num, load_batch)
    elif custom:
        dp = _shard_map(make_step(_reduce_over_devices), make_batches, data, devices, load_batch, typed=False)
    else:  # shard_map's typed form: autodiff all-reduces the gradients (see _shard_map)
        dp = _shard_map(make_train_step(_mean_over_devices(loss_fn), optimizer), make_batches, data, devices,
                        load_batch, typed=True)
    dp.steps_per_epoch, dp.global_batch = steps, global_batch
    if jax.process_count() > 1:
        dp.epoch_fn = _checking_replicas(dp)
    return dp


def _checking_replicas(dp: DataParallel):
    """The epoch, then a check that every process holds the same parameters (a digest of
    each process's copy, all-gathered: one tiny collective per epoch)."""
    from jaxdl.distributed import check_replicas

    epoch_fn = dp.epoch_fn

    def checked_epoch_fn(state, key):
        state, metrics = epoch_fn(state, key)
        host = dp.to_host(state)
        step = getattr(host, "step", None)
        dp.replica_digests = check_replicas(getattr(host, "params", host), step=None if step is None else int(step))
        return state, metrics

    return checked_epoch_fn


def _single(train_step, make_batches, data, device, load_batch) -> DataParallel:
    kwargs = {} if load_batch is None else {"load_batch": load_batch}
    run_epoch = make_scan_epoch(train_step, make_batches, **kwargs)
    data = jax.device_put(data, device)

    def place(state):  # a copy: the epoch donates (consumes) the state it is given
        return jax.device_put(state, device, may_alias=False)

    return DataParallel(lambda state, key: run_epoch(state, data, key), place, jax.device_get, place,
                        [device], "single")


def _reduce_over_devices(tree):
    return lax.pmean(tree, AXIS)


def _device_steps(train_step, state, data, my_batches, k_steps, load_batch):
    """One device's scan over its columns of the epoch's batches. Step s uses the key one
    device would use, `fold_in(k_steps, s)`, with this device's index folded in."""
    index = lax.axis_index(AXIS)

    def device_step(s, batch_or_spec, key):
        batch = batch_or_spec if load_batch is None else load_batch(data, batch_or_spec)
        return train_step(s, batch, jax.random.fold_in(key, index))

    return scan_steps(device_step, state, my_batches, k_steps)


def _pmap(train_step, make_batches, data, devices, per_device_batch, load_batch) -> DataParallel:
    local = [d for d in devices if d.process_index == jax.process_index()]
    mesh = Mesh(np.asarray(local), (AXIS,))  # the layout pmap itself gives its arguments
    stacked, replicated = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())

    def device_epoch(state, data, key_data):
        k_batches, k_steps = jax.random.split(jax.random.wrap_key_data(key_data))
        batches = make_batches(data, k_batches)  # the same global batches on every device
        start = lax.axis_index(AXIS) * per_device_batch
        mine = jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, per_device_batch, axis=1), batches)
        return _device_steps(train_step, state, data, mine, k_steps, load_batch)

    pmapped = jax.pmap(device_epoch, axis_name=AXIS, in_axes=(0, None, None), devices=devices,
                       donate_argnums=0)
    data_on_devices = jax.device_put(jax.device_get(data), replicated)

    def epoch_fn(state, key):
        state, metrics_NxS = pmapped(state, data_on_devices, _key_data(key))
        return state, jax.tree.map(lambda m: m[0], metrics_NxS)  # identical on every device (pmean)

    def place(state):
        host = jax.device_get(state)
        return jax.device_put(jax.tree.map(lambda x: np.broadcast_to(x, (len(local), *np.shape(x))), host),
                              stacked)

    def to_host(state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], state)

    return DataParallel(epoch_fn, place, to_host, place, list(devices), "pmap")


def _mean_over_devices(loss_fn):
    """The loss (and its metrics) averaged over the device axis: the global batch's mean."""

    def global_loss(params, batch, key):
        return _reduce_over_devices(loss_fn(params, batch, key))

    return global_loss


def _shard_map(train_step, make_batches, data, devices, load_batch, *, typed: bool) -> DataParallel:
    # typed: shard_map types every value as replicated or varying over the axis. The params
    # are replicated, the batch varies; differentiating the device-averaged (replicated)
    # loss with respect to the params, autodiff's transpose of the implicit broadcast sums
    # the per-device gradients: the all-reduce comes from autodiff. (Averaging per-device
    # gradients the pmap way would be wrong here: they are already summed.) A custom step
    # runs untyped and reduces with its grad_reduce, as under pmap.
    mesh = Mesh(np.asarray(devices), (AXIS,))
    replicated, by_column = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, AXIS))

    def device_steps(state, data, my_batches, k_steps):
        return _device_steps(train_step, state, data, my_batches, k_steps, load_batch)

    sharded_steps = jax.shard_map(device_steps, mesh=mesh, in_specs=(P(), P(), P(None, AXIS), P()),
                                  out_specs=P(), check_vma=typed)

    def run_epoch(state, data, key_data):
        k_batches, k_steps = jax.random.split(jax.random.wrap_key_data(key_data))
        # The global batches (or specs), laid out as shard_map takes them: device i, columns i.
        batches = lax.with_sharding_constraint(make_batches(data, k_batches), by_column)
        return sharded_steps(state, data, batches, k_steps)

    jitted = jax.jit(run_epoch, in_shardings=replicated, out_shardings=replicated, donate_argnums=0)
    data_on_devices = _global_put(data, replicated)

    def place(state):
        return _global_put(state, replicated)

    def to_host(state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)

    return DataParallel(lambda state, key: jitted(state, data_on_devices, _key_data(key)), place, to_host, place,
                        list(devices), "shard_map")


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


def step_allreduce_bytes(loss_fn, optimizer, params, batch, devices) -> int:
    """All-reduced bytes of one data-parallel step (gradients and metrics), read from the
    step as XLA compiles it under `shard_map` on `devices`."""
    mesh = Mesh(np.asarray(devices), (AXIS,))
    train_step = make_train_step(_mean_over_devices(loss_fn), optimizer)
    state = init_state(params, optimizer)
    step = jax.jit(jax.shard_map(lambda s, b, k: train_step(s, b, k), mesh=mesh,
                                 in_specs=(P(), P(AXIS), P()), out_specs=P()))
    text = step.lower(state, batch, jax.random.key(0)).compile().as_text()
    return allreduce_bytes(text)


def main_devices(argv: list[str]) -> int:
    """`python -m jaxdl devices`: index, platform, kind, memory where known."""
    if argv:
        raise JaxdlError(f"devices: takes no arguments, got {' '.join(argv)}")
    for i, d in enumerate(jax.devices()):
        mem = ""
        try:
            stats = d.memory_stats() or {}
            if "bytes_limit" in stats:
                mem = f"{stats['bytes_limit'] / 2**30:.1f} GiB"
        except Exception:  # not every backend reports memory
            pass
        print(f"{i}\t{d.platform}\t{d.device_kind}\t{mem}")
    return 0
