"""Will it fit? A placed program's memory, as XLA compiled it, against what its device has --
checked before the first epoch runs, so that settings the machine cannot hold are refused
in one line instead of failing (or taking the machine down) minutes later.
"""
from __future__ import annotations

import jax
import numpy as np
import psutil

from jaxdl.errors import JaxdlError

SETTINGS_HINT = "--batch-size, --hidden, --dim, --neg, --window, --local-epochs"


def device_limit(device) -> tuple[int, str]:
    """Bytes the device can give a program, and what that is: an accelerator's memory limit,
    or for the CPU the host memory available now."""
    try:
        stats = device.memory_stats() or {}
    except Exception:  # not every backend reports memory
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"free on {device.device_kind}"
    return int(psutil.virtual_memory().available), "of host memory available"


def size(n: int) -> str:
    """'1.5 GiB', '120 MiB', '64 KiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def abstract(tree, sharding):
    """Shapes and dtypes of a host pytree, laid out by `sharding` (what `lower` needs)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding), tree)


def compile_checked(jitted, args: tuple, device, *, what: str = "one epoch"):
    """`jitted` compiled for `args` (arrays or ShapeDtypeStructs), after checking that its
    arguments, outputs and temporaries fit on `device`; JaxdlError naming the estimate, the
    limit and the flags that shrink it otherwise."""
    if jax.config.jax_disable_jit:  # op by op (--debug-nans): nothing to compile ahead
        return jitted
    compiled = jitted.lower(*args).compile()
    stats = compiled.memory_analysis()
    if stats is not None:
        need = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
                - stats.alias_size_in_bytes)
        limit, where = device_limit(device)
        if need > limit:
            raise JaxdlError(f"{what} needs about {size(need)} on {device}, more than the {size(limit)} {where}; "
                             f"choose smaller settings ({SETTINGS_HINT})")
    return compiled
