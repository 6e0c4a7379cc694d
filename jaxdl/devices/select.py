"""Which devices a run uses: the `--devices` flag, and `python -m jaxdl devices`."""
from __future__ import annotations

import jax

from jaxdl.errors import JaxdlError


def select_devices(spec: str = "all", *, devices: list | None = None) -> list:
    """`--devices`, the way CUDA_VISIBLE_DEVICES and FedE's `--gpu` read it -> list of devices.

    'all' (every device); '2' (device 2 alone); '0,2,3' (these, in this order); a count or a
    range in slice notation: ':2' (the first two), '1:3' (devices 1 and 2). Indices refer to
    `jax.devices()` (see `python -m jaxdl devices`). In a run of several processes only 'all'
    is accepted: each process's devices are chosen when it starts (`launch --local-devices`,
    or CUDA_VISIBLE_DEVICES).
    """
    available = list(jax.devices()) if devices is None else list(devices)
    spec = str(spec).strip()
    if spec in ("", "all"):
        return available
    if devices is None and jax.process_count() > 1:
        raise JaxdlError(f"--devices {spec}: a run of {jax.process_count()} processes uses all their devices; "
                         "pick each process's devices with `launch --local-devices` or CUDA_VISIBLE_DEVICES")
    try:
        if ":" in spec:
            start, _, stop = spec.partition(":")
            indices = list(range(int(start or 0), int(stop)))
            if not indices:
                raise JaxdlError(f"--devices {spec}: selects no device")
            if indices[-1] >= len(available):
                raise JaxdlError(f"--devices {spec}: only {len(available)} device(s) available")
        else:
            indices = [int(p) for p in spec.split(",")]
    except ValueError:
        raise JaxdlError(f"--devices {spec!r}: expected 'all', an index (2), indices (0,2,3) or a count (:2)") \
            from None
    if len(set(indices)) != len(indices):
        raise JaxdlError(f"--devices {spec}: duplicate device index")
    bad = [i for i in indices if not 0 <= i < len(available)]
    if bad:
        raise JaxdlError(f"--devices {spec}: no device {bad[0]} (have 0..{len(available) - 1})")
    return [available[i] for i in indices]


def device_names(devices: list) -> list[str]:
    """'platform:id' of each device (what run.lock and `ps` show)."""
    return [f"{d.platform}:{d.id}" for d in devices]


def main_devices(argv: list[str]) -> int:
    """`python -m jaxdl devices`: index, platform, kind, memory where known."""
    if argv in (["-h"], ["--help"]):
        print("usage: python -m jaxdl devices\n\nThe devices JAX sees, by the index --devices takes "
              "(e.g. --devices 0,2): platform, kind, memory where the backend reports it.")
        return 0
    if argv:
        raise JaxdlError(f"devices: takes no arguments, got {' '.join(argv)} (see python -m jaxdl devices --help)")
    rows = [("index", "platform", "kind", "memory")]
    for i, d in enumerate(jax.devices()):
        mem = "-"
        try:
            stats = d.memory_stats() or {}
            if "bytes_limit" in stats:
                mem = f"{stats['bytes_limit'] / 2**30:.1f} GiB"
        except Exception:  # not every backend reports memory
            pass
        rows.append((str(i), d.platform, d.device_kind, mem))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0
