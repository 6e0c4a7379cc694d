"""Reading inputs without trusting their size: a file, a gzip stream or a zip member is read
in chunks and refused, with one line, as soon as it would pass a bound -- before a zip bomb
(a few kilobytes that expand to gigabytes) or a huge file fills the machine.

The bound is `$JAXDL_READ_LIMIT` bytes when set, else half of the memory available when the
read starts.
"""
from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from pathlib import Path

import psutil

from jaxdl.errors import JaxdlError

CHUNK = 1 << 20


def env_bytes(name: str) -> int | None:
    """A positive byte count from the environment variable `name` (`1e9` allowed), or None
    when it is unset; one-line JaxdlError when it is not one."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        raise JaxdlError(f"{name}={text!r}: expected a number of bytes") from None
    if value < 1:
        raise JaxdlError(f"{name}={text!r}: must be a positive number of bytes")
    return value


def read_limit() -> int:
    """How many bytes one input may hold once decompressed."""
    value = env_bytes("JAXDL_READ_LIMIT")
    return psutil.virtual_memory().available // 2 if value is None else value


def _too_big(name: str, limit: int) -> JaxdlError:
    return JaxdlError(f"{name}: larger than {limit / 2**20:,.0f} MiB once read, more than this machine should "
                      f"hold (half its available memory); set JAXDL_READ_LIMIT=<bytes> to allow more")


def read_stream(stream, name: str, limit: int | None = None) -> bytes:
    """All of `stream`, read in chunks; JaxdlError as soon as it passes `limit` bytes."""
    limit = read_limit() if limit is None else limit
    chunks, total = [], 0
    while chunk := stream.read(min(CHUNK, limit + 1 - total) or 1):
        total += len(chunk)
        if total > limit:
            raise _too_big(name, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def read_file(path, limit: int | None = None) -> bytes:
    """A file's bytes, gunzipped when it is gzip data; bounded, with one-line errors."""
    path = Path(path)
    limit = read_limit() if limit is None else limit
    try:
        if path.stat().st_size > limit:
            raise _too_big(str(path), limit)
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            if not gzipped:
                return read_stream(f, str(path), limit)
            try:
                return read_stream(gzip.GzipFile(fileobj=f), str(path), limit)
            except (OSError, EOFError, zlib.error) as e:
                raise JaxdlError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except FileNotFoundError:
        raise JaxdlError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise JaxdlError(f"{path}: is a folder, not a file") from None
    except PermissionError as e:
        raise JaxdlError(f"{path}: cannot read ({e.strerror})") from None


def read_zip_member(archive: zipfile.ZipFile, member: str, name: str, limit: int | None = None) -> bytes:
    """One member of an open zip archive: refused by its declared size first, then by what it
    actually expands to (a declared size can lie)."""
    limit = read_limit() if limit is None else limit
    if archive.getinfo(member).file_size > limit:
        raise _too_big(name, limit)
    try:
        with archive.open(member) as stream:
            return read_stream(stream, name, limit)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise JaxdlError(f"{name}: corrupt zip member ({e})") from None
