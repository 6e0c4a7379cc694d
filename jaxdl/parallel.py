"""The one room that knows about devices.

`select_devices(spec)` turns the `--devices` flag into devices; `data_parallel` turns a
pure loss, an optimizer and a batcher into an epoch function over those devices. Models
and losses never see a device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax

from jaxdl.errors import JaxdlError
from jaxdl.train.epoch import make_scan_epoch
from jaxdl.train.step import make_train_step


def select_devices(spec: str = "all", *, devices: list | None = None) -> list:
    """'all', a count ('2'), or comma-separated indices ('0,2,3') -> list of devices."""
    available = list(jax.devices()) if devices is None else list(devices)
    spec = str(spec).strip()
    if spec in ("", "all"):
        return available
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

    epoch_fn(state, key) -> (state, step_metrics); place(state) puts a host state on the
    devices; to_host/from_host convert for checkpoints; params(state) gives host params.
    """

    epoch_fn: Callable
    place: Callable
    to_host: Callable
    from_host: Callable
    devices: list
    mode: str


def data_parallel(loss_fn, optimizer, make_batches, data, *, devices: list, mode: str = "pmap",
                  batch_size: int | None = None) -> DataParallel:
    """An epoch over `data` on `devices`; one device is a plain jitted `lax.scan` epoch."""
    if len(devices) != 1:
        raise JaxdlError(f"data parallelism over {len(devices)} devices is not available yet")
    device = devices[0]
    run_epoch = make_scan_epoch(make_train_step(loss_fn, optimizer), make_batches)
    data = jax.device_put(data, device)

    def place(state):
        return jax.device_put(state, device)

    return DataParallel(lambda state, key: run_epoch(state, data, key), place, lambda s: jax.device_get(s),
                        place, devices, "single")


def main_devices(argv: list[str]) -> int:
    """`python -m jaxdl devices`: index, platform, kind, memory where known."""
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
