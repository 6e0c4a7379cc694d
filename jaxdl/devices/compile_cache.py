"""JAX's persistent compilation cache: a program compiled once (same shapes, same jax, same
devices) is read back from disk by later runs instead of compiled again, so a second
`make exp NAME=...` starts training sooner. On by default, in `$JAXDL_DATA/compile`
(default ~/.cache/jaxdl/compile; `$JAXDL_COMPILE_CACHE` names another folder), kept under
MAX_BYTES by evicting the least recently used programs, and locked (filelock) so that
concurrent runs can share it; `--no-compile-cache` runs without it. The cached program is
the one the compiler would build, so results do not change.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as cache

from jaxdl.data.download import default_cache_dir


MAX_BYTES = 2 << 30


def default_folder() -> Path:
    return Path(os.environ.get("JAXDL_COMPILE_CACHE") or default_cache_dir() / "compile")


SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes", "jax_compilation_cache_max_size")


@contextlib.contextmanager
def enabled(folder: Path | None = None):
    """Use (and fill) the cache in `folder` for every program compiled inside the block; JAX's
    cache settings are as they were after it (a notebook or test process that runs an
    experiment keeps its own)."""
    folder = Path(folder or default_folder())
    before = {name: getattr(jax.config, name) for name in SETTINGS}
    cache.reset_cache()  # the folder is read when the next program compiles
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # the many small programs add up
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)  # bounded, and locked across processes
    try:
        yield folder
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        cache.reset_cache()
