"""Checksummed downloads, used only when a file is missing and a network is present."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from jaxdl.errors import JaxdlError


def file_digest(path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest, *, algorithm: str, digest: str, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` atomically and check its digest; reuse `dest` if it already matches."""
    dest = Path(dest)
    if dest.is_file() and file_digest(dest, algorithm) == digest:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
        got = file_digest(tmp, algorithm)
        if got != digest:
            raise JaxdlError(f"{url}: {algorithm} mismatch (expected {digest}, got {got})")
        os.replace(tmp, dest)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise JaxdlError(f"cannot download {url} ({e}); put the file at {dest} by hand") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def default_cache_dir() -> Path:
    """$JAXDL_DATA, else ~/.cache/jaxdl."""
    return Path(os.environ.get("JAXDL_DATA", Path.home() / ".cache" / "jaxdl"))
