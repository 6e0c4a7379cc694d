"""Several processes, one run: what a process of a job needs (`jax.distributed`).

The launcher (jaxdl/launch.py) starts the processes; every process runs the same experiment.
`jax.distributed.initialize` connects them (the coordinator runs inside process 0); on CPU
their collectives go through gloo. After that `jax.devices()` lists the devices of all
processes and data parallelism (data_parallel.py) spans all of them: each process puts its
copy of the (in-memory) training set on its own devices, every device draws the same global
batches from the epoch key and trains on its own columns, and gradients are averaged over
all devices of all processes. Parameters are therefore identical everywhere;
`check_replicas` verifies that after every epoch.

Only process 0 writes the run folder (metrics, plots, checkpoints, summary): `is_writer`.
On resume it reads the checkpoint and sends it to the others (`share_restored`); a stop
signal seen by any process stops all of them after the same epoch (`first_signal`).

A process that dies: the others fail in their next collective (gloo sees the connection
drop) and exit with one `error:` line and exit code 4 (`PEER_FAILED`); one that hangs is
declared dead by the coordinator after `--heartbeat-timeout` seconds and JAX terminates the
rest. Resume with the same command and `--resume RUN_DIR` (any process count: the global
batch, hence the trajectory, does not depend on it).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxdl.errors import JaxdlError

PEER_FAILED = 4  # exit code of a process whose peers failed


def initialize(*, coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_devices: list[int] | None = None,
               heartbeat_timeout: int = 20, init_timeout: int = 120, shutdown_timeout: int = 30) -> None:
    """Join the job: `jax.distributed.initialize`, with gloo for collectives on CPU.

    Unset arguments come from the environment (SLURM, Open MPI, Kubernetes, Cloud TPU, or
    JAX_COORDINATOR_ADDRESS); JaxdlError when there is none. Must run before any JAX
    computation.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_devices,
                                   initialization_timeout=init_timeout, heartbeat_timeout_seconds=heartbeat_timeout,
                                   shutdown_timeout_seconds=shutdown_timeout)
    except (ValueError, TypeError) as e:
        raise JaxdlError(f"launch: {str(e).rstrip('.')}; outside a scheduler give --nproc N, or "
                         "--coordinator HOST:PORT --num-processes N --process-id I") from None
    except Exception as e:  # the coordinator could not be reached within init_timeout
        raise JaxdlError(f"launch: could not join the job at {coordinator or 'the detected coordinator'} "
                         f"({first_line(e)})") from None


def shutdown() -> None:
    jax.distributed.shutdown()


def first_line(e: BaseException, limit: int = 300) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def count() -> int:
    """Processes in this job (1 outside `launch`)."""
    return jax.process_count()


def index() -> int:
    return jax.process_index()


def is_writer() -> bool:
    """Process 0 writes the run folder; the others only compute."""
    return jax.process_index() == 0


def describe() -> str:
    return f"process {jax.process_index()}/{jax.process_count()}"


def _broadcast_bytes(payload: bytes | None) -> bytes:
    """Process 0's bytes, on every process (others pass anything)."""
    size = multihost_utils.broadcast_one_to_all(np.int32(len(payload or b"")))
    buf = np.zeros(int(size), np.uint8)
    if payload:
        buf[:] = np.frombuffer(payload, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8).tobytes()


def broadcast_json(obj=None):
    """Process 0's JSON-able `obj`, on every process."""
    payload = json.dumps(obj).encode() if jax.process_index() == 0 else None
    return json.loads(_broadcast_bytes(payload).decode())


def on_writer(fn: Callable[[], object]):
    """`fn()` run by process 0 alone; its JSON-able result, or the JaxdlError it raised
    (re-raised on every process), reaches every process. One process: just `fn()`."""
    if jax.process_count() == 1:
        return fn()
    outcome = None
    if jax.process_index() == 0:
        try:
            outcome = {"value": fn()}
        except JaxdlError as e:
            outcome = {"error": str(e)}
    outcome = broadcast_json(outcome)
    if "error" in outcome:
        raise JaxdlError(outcome["error"])
    return outcome["value"]


def first_signal(received: list[int]) -> int:
    """The stop signal that the lowest-numbered process that received one got (0: none),
    the same on every process: all of them stop after the same epoch."""
    every = np.asarray(multihost_utils.process_allgather(np.int32(received[0] if received else 0))).reshape(-1)
    return int(next((s for s in every if s), 0))


def share_restored(restored, template):
    """Process 0's restored checkpoint `(tree, meta, epoch)` or None, on every process.

    Only process 0 reads the run folder; the others receive the arrays (shaped like
    `template`) over the collectives, so no shared file system is needed."""
    if jax.process_count() == 1:
        return restored
    header = broadcast_json(None if restored is None else {"meta": restored[1], "epoch": restored[2]})
    if header is None:
        return None
    source = restored[0] if jax.process_index() == 0 else template
    leaves, treedef = jax.tree.flatten(source)
    shipped = [multihost_utils.broadcast_one_to_all(np.asarray(x)) for x in leaves]
    tree = jax.tree.unflatten(treedef, [np.asarray(x, np.asarray(t).dtype) for x, t in zip(shipped, leaves)])
    return tree, header["meta"], header["epoch"]


def param_digest(params) -> str:
    """A short hash of a host copy of the parameters (bytes, dtypes, shapes, tree order)."""
    h = hashlib.blake2b(digest_size=8)
    for leaf in jax.tree.leaves(params):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_replicas(params, *, step: int | None = None) -> list[str]:
    """Every process's parameter digest; JaxdlError naming the first process whose
    parameters differ from process 0's."""
    mine = np.frombuffer(bytes.fromhex(param_digest(params)), np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, mine.size)
    return compare_digests([row.astype(np.uint32).tobytes().hex() for row in every], step=step)


def compare_digests(digests: list[str], *, step: int | None = None) -> list[str]:
    """`digests` (one per process) when all agree; else JaxdlError naming the first process
    that differs from process 0."""
    for i, d in enumerate(digests[1:], start=1):
        if d != digests[0]:
            when = f" at step {step}" if step is not None else ""
            raise JaxdlError(f"the parameters on process {i} differ from process 0's{when} "
                             f"({d} vs {digests[0]}): the processes no longer train the same model")
    return digests


def command_prefix() -> str:
    """How this process was started, for messages that say how to resume its run."""
    if jax.process_count() == 1:
        return "python -m jaxdl"
    nproc = os.environ.get("JAXDL_LAUNCH_NPROC")
    return f"python -m jaxdl launch --nproc {nproc}" if nproc else "python -m jaxdl launch"


def checkpoint_options() -> dict:
    """Keyword arguments for `jaxdl.runs.checkpoint.manager`: with several processes only the
    writer saves, so orbax's barriers are kept to it alone."""
    if jax.process_count() == 1:
        return {}
    return {"primary_process": jax.process_index()}
