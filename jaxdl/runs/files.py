"""Writing into run folders without following links: nothing a run writes can be turned into
a write to some other file by a symbolic link planted in its folder (a shared /tmp, say).

Whole files are written to a fresh temporary file beside their name -- created exclusively,
so never an existing file or link -- and renamed over it (a rename replaces a link, never
the file it points to); appends and the lock open with O_NOFOLLOW; `refuse_links` turns
down a run folder that holds a link at all. Imports no jax.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from jaxdl.errors import JaxdlError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(x):
    if isinstance(x, np.generic) or hasattr(x, "__array__"):  # numpy scalars, numpy and jax arrays
        a = np.asarray(x)
        return a.item() if a.ndim == 0 else a.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def json_bytes(obj, *, indent: int | None = 2) -> bytes:
    return (json.dumps(obj, indent=indent, default=_json_default) + "\n").encode()


def write_bytes_atomic(path, data: bytes, *, mode: int = 0o644) -> None:
    """`path` holds `data`, whole or not at all (see the module docstring); `mode` less the umask."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_figure(fig, path, *, dpi: int = 110) -> None:
    """A matplotlib Figure as a PNG at `path`, written like any other file of a run."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_bytes_atomic(path, buffer.getvalue())


def write_json_atomic(path, obj, *, mode: int = 0o644) -> None:
    write_bytes_atomic(path, json_bytes(obj), mode=mode)


def open_nofollow(path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a symbolic link at `path` with one clear error."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise JaxdlError(f"{path}: is a symbolic link; a run writes only files of its own (remove the link)") \
                from None
        raise


def append_line(path, line: str) -> None:
    """Append one line (and fsync): a crash leaves at most a torn last line."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_links(folder) -> None:
    """JaxdlError when `folder` holds a symbolic link (a run folder holds only its own files)."""
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_symlink():
            raise JaxdlError(f"{entry}: is a symbolic link; a run folder holds only its own files (remove it)")
