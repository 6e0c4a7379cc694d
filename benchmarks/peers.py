"""Peer frameworks for side-by-side figures: optional, imported only when a workload asks.

Peers come from the optional extra (`pip install -e .[peers]`, `make peers`); when one is
missing a workload records a note and skips its peer columns, never fails.
"""
from __future__ import annotations

import importlib
import os

from jax._src import xla_bridge  # backends_are_initialized has no public spelling

from benchmarks.registry import BenchContext


def import_peer(ctx: BenchContext, module: str, skipped: str):
    """The peer library `module`, or None with one note in `ctx.notes` (saying which
    figures are `skipped`) when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        note = f"{module} not installed: {skipped} skipped (make peers)"
        if note not in ctx.notes:
            ctx.notes.append(note)
        return None


def import_torch(ctx: BenchContext):
    """`torch`, with its intra-op threads set to `ctx.threads` (the same as XLA's), or None
    (with a note in `ctx.notes`) when it is not installed."""
    torch = import_peer(ctx, "torch", "PyTorch peer figures")
    if torch is None:
        return None
    if torch.get_num_threads() != ctx.threads:
        torch.set_num_threads(ctx.threads)
    return torch


def pin_xla_threads(threads: int) -> bool:
    """Ask XLA's CPU client for `threads` intra-op threads (the PJRT_NPROC environment
    variable, read when the CPU backend starts). True if it will take effect, False when
    the backend has already started in this process (then the count is what it was)."""
    if xla_bridge.backends_are_initialized():
        return os.environ.get("PJRT_NPROC") == str(threads)
    os.environ["PJRT_NPROC"] = str(threads)
    return True
