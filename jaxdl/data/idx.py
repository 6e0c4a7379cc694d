"""The IDX format (MNIST, Fashion-MNIST): a magic number, the dimensions, then raw data.

Magic: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), then the number of dimensions; each dimension is a
big-endian uint32. Files may be gzip-compressed. Every malformation raises JaxdlError.
"""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from jaxdl.data.bounded import read_file
from jaxdl.errors import JaxdlError

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    return read_file(path)  # gunzipped when gzip; bounded (see jaxdl.data.bounded)


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array with native byte order."""
    if len(raw) < 4:
        raise JaxdlError(f"{name}: too short to be an IDX file ({len(raw)} bytes)")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _DTYPES or ndim == 0:
        raise JaxdlError(f"{name}: not an IDX file (bad magic number {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise JaxdlError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = math.prod(shape) * dtype.itemsize  # exact: np.prod of int64 would wrap for huge shapes
    body = len(raw) - header
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise JaxdlError(f"{name}: {what}: header says shape {shape} ({expected} bytes), found {body}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def write_idx(path, array: np.ndarray, *, compress: bool = False) -> None:
    """Write an array as IDX (used by tests and to cache converted data)."""
    array = np.asarray(array)
    code = _CODES[array.dtype.newbyteorder("=")]
    raw = b"\x00\x00" + bytes([code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.dtype(_DTYPES[code])).tobytes()
    Path(path).write_bytes(gzip.compress(raw) if compress else raw)
