"""Where the runs of this machine sign in, so `jaxdl ps` finds them wherever their folders are.

One small JSON file per run folder in `$JAXDL_REGISTRY` (default `~/.cache/jaxdl/registry`),
named by a hash of the folder's absolute path and rewritten when the run is resumed:

    {"run_dir", "experiment", "pid", "host", "create_time", "devices", "started",
     "ended", "note"}

`note` says how the process ended ("finished", "SIGTERM at epoch 4", "NaN at epoch 3, step 7").
`ps` drops entries whose folder is gone. The registry is a convenience: failing to write
it (a read-only home, a full disk) never stops a run. No jax import here: `ps` is instant.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from jaxdl.runs.files import write_bytes_atomic


def registry_dir() -> Path:
    """$JAXDL_REGISTRY, else ~/.cache/jaxdl/registry."""
    return Path(os.environ.get("JAXDL_REGISTRY") or Path.home() / ".cache" / "jaxdl" / "registry")


def _entry_path(run_dir) -> Path:
    digest = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return registry_dir() / f"{digest}.json"


def _write(path: Path, record: dict) -> None:
    """The entry, readable by this user only, in a registry folder that is this user's alone."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(record).encode(), mode=0o600)


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_bytes().decode("utf-8", "replace"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("run_dir"), str) else None


def register(run_dir, record: dict) -> None:
    """Sign the run in (or again, on resume); never raises."""
    try:
        _write(_entry_path(run_dir), {"run_dir": str(Path(run_dir).resolve()), "ended": None, "note": "",
                                      **record})
    except OSError:
        pass


def update(run_dir, **fields) -> None:
    """Add fields to the run's entry (e.g. ended, note); never raises."""
    path = _entry_path(run_dir)
    record = _read(path)
    if record is None:
        return
    try:
        _write(path, {**record, **fields})
    except OSError:
        pass


def lookup(run_dir) -> dict | None:
    return _read(_entry_path(run_dir))


def entries() -> list[dict]:
    """Every readable entry (any host), unsorted."""
    folder = registry_dir()
    if not folder.is_dir():
        return []
    return [r for p in folder.glob("*.json") if (r := _read(p)) is not None]


def forget(run_dir) -> None:
    try:
        _entry_path(run_dir).unlink(missing_ok=True)
    except OSError:
        pass
