"""Will it fit? A placed program's memory, as XLA compiled it, against what its device has --
checked before the first epoch runs, so that settings the machine cannot hold are refused
in one line instead of failing (or taking the machine down) minutes later.
"""
from __future__ import annotations

import jax
import numpy as np
import psutil

from jaxdl.data.bounded import env_bytes
from jaxdl.errors import JaxdlError

SETTINGS_HINT = "--batch-size, --hidden, --dim, --neg, --window, --local-epochs"


def device_limit(device) -> tuple[int, str]:
    """Bytes the device can give a program, and what that is: an accelerator's memory limit,
    or for the CPU the host memory available now; at most `$JAXDL_MEMORY_LIMIT` bytes when
    that is set (a share of a machine others use too)."""
    stats = _stats(device)
    if "bytes_limit" in stats:
        limit, where = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"free on {device.device_kind}"
    else:
        limit, where = int(psutil.virtual_memory().available), "of host memory available"
    cap = env_bytes("JAXDL_MEMORY_LIMIT")
    if cap is not None and cap < limit:
        limit, where = cap, "that JAXDL_MEMORY_LIMIT allows"
    return limit, where


def size(n: int) -> str:
    """'1.5 GiB', '120 MiB', '64 KiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def abstract(tree, sharding):
    """Shapes and dtypes of a host pytree, laid out by `sharding` (one for every leaf, or a
    pytree of shardings matching `tree`): what `lower` needs."""
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s), tree, sharding)


def compile_checked(jitted, args: tuple, devices, *, what: str = "one epoch"):
    """`jitted` compiled for `args` (arrays or ShapeDtypeStructs), after checking that its
    arguments, outputs and temporaries fit on each of `devices` (one device or a list; for a
    program split over several, XLA's figures are per device, and CPU devices share the
    host's memory); JaxdlError naming the estimate, the limit and the flags that shrink it
    otherwise."""
    if jax.config.jax_disable_jit:  # op by op (--debug-nans): nothing to compile ahead
        return jitted
    compiled = jitted.lower(*args).compile()
    stats = compiled.memory_analysis()
    if stats is not None:
        need = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
                - stats.alias_size_in_bytes)
        check_fits(need, devices, what=what)
    return compiled


def check_fits(need: int, devices, *, what: str) -> None:
    """Refuse, in one line, a program needing `need` bytes on each of `devices` that they cannot
    hold. Devices drawing on host memory (CPU) are checked together against the host; each
    accelerator against its own memory."""
    devices = list(devices) if isinstance(devices, (list, tuple)) else [devices]
    devices = [d for d in devices if d.process_index == jax.process_index()] or devices[:1]
    on_host = [d for d in devices if "bytes_limit" not in _stats(d)]
    for group in ([on_host] if on_host else []) + [[d] for d in devices if d not in on_host]:
        total = need * len(group)
        limit, where = device_limit(group[0])
        if total > limit:
            on = f" on each of {len(group)} devices ({size(total)} in all)" if len(group) > 1 else f" on {group[0]}"
            raise JaxdlError(f"{what} needs about {size(need)}{on}, more than the {size(limit)} {where}; "
                             f"choose smaller settings ({SETTINGS_HINT})")


def _stats(device) -> dict:
    try:
        return device.memory_stats() or {}
    except Exception:  # not every backend reports memory
        return {}


def tree_bytes(tree) -> int:
    """Bytes of a pytree of arrays or ShapeDtypeStructs."""
    return int(sum(np.prod(np.shape(x), dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def make_checked(make_state, *, copies: int = 3, what: str = "the model and optimizer state"):
    """`make_state()` as host arrays, after checking from its shapes alone (`jax.eval_shape`:
    nothing is allocated) that `copies` of it fit in the host memory available now: the host
    copy, the copy on the device and its update. One-line JaxdlError otherwise."""
    nbytes = tree_bytes(jax.eval_shape(make_state))
    limit, where = device_limit(jax.devices("cpu")[0])
    if nbytes * copies > limit:
        raise JaxdlError(f"{what} needs about {size(nbytes)} ({copies} copies in training: {size(nbytes * copies)}), "
                         f"more than the {size(limit)} {where}; choose smaller settings ({SETTINGS_HINT})")
    return jax.device_get(make_state())
