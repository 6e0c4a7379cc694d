"""Checkpoints with orbax: a pytree of arrays plus a small JSON record, one folder per epoch.

What the harness saves (see jaxdl/harness/hooks.py): the whole train state (parameters, optimizer
state, step counter), the best parameters so far, and the run's key; the JSON record holds
the epoch and the early-stopping bookkeeping. The data order needs no saving: epoch e draws
it from fold_in(key, e), so the key and the epoch reproduce it.

Atomic: orbax writes each checkpoint into a temporary folder and renames it when complete,
so a crash or `kill -9` mid-write leaves the previous checkpoints intact; an unfinished
temporary folder is never taken for a checkpoint (and is cleaned when the manager next
saves). Checked: each checkpoint folder gets a manifest of its files' SHA-256 once orbax has
finished it, and the record carries every array's shape and dtype and a SHA-256 of the array
bytes, so a restore tells an incompatible checkpoint (another config) from a damaged one --
including damage orbax itself would restore silently -- and names an intact older one.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from jaxdl.errors import JaxdlError
from jaxdl.runs.files import write_bytes_atomic

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.ERROR)
MANIFEST = "jaxdl_files.sha256"


def _orbax():
    """orbax.checkpoint, imported when a run first saves or restores (it takes a while to load)."""
    import orbax.checkpoint

    return orbax.checkpoint


def manager(ckpt_dir: Path, *, max_to_keep: int = 2, primary_process: int | None = None) -> ocp.CheckpointManager:
    """An orbax manager for `ckpt_dir`. `primary_process`: in a job of several processes, the
    one that saves (orbax's barriers are then kept to it alone)."""
    ocp = _orbax()
    if primary_process is not None:
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
        solo = ocp.options.MultiprocessingOptions(primary_host=primary_process, active_processes={primary_process})
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False,
                                               enable_async_checkpointing=False, multiprocessing_options=solo)
        return ocp.CheckpointManager(Path(ckpt_dir).resolve(), options=options)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(ckpt_dir).resolve(), options=options)


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in flat]


def tree_shapes(tree) -> dict[str, str]:
    """{'.state.params[0]["w"]': 'float32[64,32]', ...}"""
    return {name: f"{a.dtype}[{','.join(map(str, a.shape))}]" for name, a in _leaves(tree)}


def tree_digest(tree) -> str:
    """SHA-256 over every leaf's name, dtype, shape and bytes, in tree order."""
    h = hashlib.sha256()
    for name, a in _leaves(tree):
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save(mngr: ocp.CheckpointManager, epoch: int, tree, meta: dict) -> None:
    """Save `tree` (arrays) and `meta` (JSON) as checkpoint `epoch`; blocks until durable."""
    ocp = _orbax()
    tree = jax.tree.map(np.asarray, jax.device_get(tree))
    meta = {**meta, "shapes": tree_shapes(tree), "sha256": tree_digest(tree)}
    mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
              force=True)
    mngr.wait_until_finished()
    _write_manifest(Path(mngr.directory) / str(epoch))


def _file_digests(step_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(step_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _write_manifest(step_dir: Path) -> None:
    """SHA-256 of every file of a finished checkpoint, so damage is found before orbax reads
    it. (A crash before this is written leaves a checkpoint checked by its array digest only.)"""
    write_bytes_atomic(step_dir / MANIFEST, json.dumps(_file_digests(step_dir), indent=0).encode())


def _check_manifest(step_dir: Path) -> None:
    try:
        wanted = json.loads((step_dir / MANIFEST).read_bytes())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        raise _Damaged(f"its {MANIFEST} cannot be read") from None
    if not isinstance(wanted, dict) or not all(isinstance(v, str) for v in wanted.values()):
        raise _Damaged(f"its {MANIFEST} is not a map of file digests")
    found = _file_digests(step_dir)
    for name, digest in wanted.items():
        if name not in found:
            raise _Damaged(f"its file {name} is missing")
        if found[name] != digest:
            raise _Damaged(f"its file {name} does not match its SHA-256")


class _Damaged(Exception):
    pass


def _load(mngr, epoch: int, template, abstract):
    """(tree, meta) of checkpoint `epoch`; JaxdlError if incompatible, _Damaged if corrupt."""
    ocp = _orbax()
    _check_manifest(Path(mngr.directory) / str(epoch))
    try:
        meta = mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for damaged files
        raise _Damaged(f"its record cannot be read: {type(e).__name__}") from None
    if not isinstance(meta, dict):
        raise _Damaged("its record is not a JSON object")
    saved = meta.get("shapes")
    if isinstance(saved, dict):
        wanted = tree_shapes(template)
        if saved != wanted:
            diff = sorted(set(saved.items()) ^ set(wanted.items()))[0][0]
            raise JaxdlError(f"checkpoint {epoch} does not fit this config: {diff} is "
                             f"{saved.get(diff, 'absent')} in the checkpoint, {wanted.get(diff, 'absent')} now; "
                             f"resume with the run's own settings (its config.json)")
    try:
        tree = mngr.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as e:
        raise _Damaged(f"its arrays cannot be read: {type(e).__name__}") from None
    if "sha256" in meta and tree_digest(tree) != meta["sha256"]:
        raise _Damaged("its arrays do not match their SHA-256")
    return tree, meta


def restore(mngr: ocp.CheckpointManager, template, *, epoch: int | None = None):
    """Restore the newest (or the given) checkpoint into the structure of `template`.

    Returns (tree, meta, epoch), or None when there is no checkpoint. A damaged checkpoint
    raises JaxdlError naming the newest intact older one and the command that uses it; one
    written for other shapes (another config) raises JaxdlError saying which array differs.
    """
    steps = sorted(mngr.all_steps())
    if not steps:
        return None
    epoch = steps[-1] if epoch is None else epoch
    abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), template)
    try:
        tree, meta = _load(mngr, epoch, template, abstract)
    except _Damaged as e:
        folder = Path(mngr.directory)
        intact = None
        for older in reversed([s for s in steps if s < epoch]):
            try:
                _load(mngr, older, template, abstract)
                intact = older
                break
            except (_Damaged, JaxdlError):
                continue
        if intact is None:
            raise JaxdlError(f"checkpoint {folder / str(epoch)} is corrupt ({e}) and no older intact checkpoint "
                             f"exists; move it aside to start the run again") from None
        raise JaxdlError(f"checkpoint {folder / str(epoch)} is corrupt ({e}); checkpoint {intact} is intact: "
                         f"to resume from it, move the damaged one aside "
                         f"(mv {folder / str(epoch)} {folder / f'{epoch}.corrupt'}) and resume again") from None
    return tree, meta, epoch
