"""Several processes, one run: jaxdl on JAX's own distributed runtime (`jax.distributed`).

    python -m jaxdl launch --nproc 2 exp mlp ...        # N processes on this machine
    python -m jaxdl launch exp mlp ...                   # one process of a job a scheduler
                                                         # started (SLURM, Open MPI, ...)
    python -m jaxdl launch --coordinator HOST:PORT --num-processes N --process-id I exp mlp ...

Every process runs the same experiment. `jax.distributed.initialize` connects them (the
coordinator runs inside process 0); on CPU their collectives go through gloo. After that
`jax.devices()` lists the devices of all processes and jaxdl.parallel trains data-parallel
across all of them: each process puts its copy of the (in-memory) training set on its own
devices, every device draws the same global batches from the epoch key and trains on its
own columns, and gradients are averaged over all devices of all processes. Parameters are
therefore identical everywhere; `check_replicas` verifies that after every epoch.

Only process 0 writes the run folder (metrics, plots, checkpoints, summary); on resume it
reads the checkpoint and sends it to the others (`share_restored`), and a stop signal seen
by any process stops all of them after the same epoch (`first_signal`).

A process that dies: the others fail in their next collective (gloo sees the connection
drop) and exit with one `error:` line and exit code 4; one that hangs is declared dead by
the coordinator after `--heartbeat-timeout` seconds and JAX terminates the rest. The local
launcher also stops the others once one has failed. Resume with the same command and
`--resume RUN_DIR` (any process count: the global batch, hence the trajectory, does not
depend on it).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from jaxdl.errors import JaxdlError

PEER_FAILED = 4  # exit code of a process whose peers failed
GRACE_SECONDS = 10.0  # the launcher's wait for the others to exit by themselves


# ---- inside each process ----------------------------------------------------------------

def initialize(*, coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_devices: list[int] | None = None,
               heartbeat_timeout: int = 20, init_timeout: int = 120, shutdown_timeout: int = 30) -> None:
    """Join the job: `jax.distributed.initialize`, with gloo for collectives on CPU.

    Unset arguments come from the environment (SLURM, Open MPI, Kubernetes, Cloud TPU, or
    JAX_COORDINATOR_ADDRESS); JaxdlError when there is none. Must run before any JAX
    computation.
    """
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_devices,
                                   initialization_timeout=init_timeout, heartbeat_timeout_seconds=heartbeat_timeout,
                                   shutdown_timeout_seconds=shutdown_timeout)
    except (ValueError, TypeError) as e:
        raise JaxdlError(f"launch: {str(e).rstrip('.')}; outside a scheduler give --nproc N, or --coordinator HOST:PORT "
                         "--num-processes N --process-id I") from None
    except Exception as e:  # the coordinator could not be reached within init_timeout
        raise JaxdlError(f"launch: could not join the job at {coordinator or 'the detected coordinator'} "
                         f"({_first_line(e)})") from None


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def _broadcast_bytes(payload: bytes | None) -> bytes:
    """Process 0's bytes, on every process (others pass anything)."""
    import numpy as np
    from jax.experimental import multihost_utils

    size = multihost_utils.broadcast_one_to_all(np.int32(len(payload or b"")))
    buf = np.zeros(int(size), np.uint8)
    if payload:
        buf[:] = np.frombuffer(payload, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8).tobytes()


def broadcast_json(obj=None):
    """Process 0's JSON-able `obj`, on every process."""
    import jax

    payload = json.dumps(obj).encode() if jax.process_index() == 0 else None
    return json.loads(_broadcast_bytes(payload).decode())


def first_signal(received: list[int]) -> int:
    """The stop signal that the lowest-numbered process that received one got (0: none),
    the same on every process: all of them stop after the same epoch."""
    import numpy as np
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(np.int32(received[0] if received else 0))).reshape(-1)
    return int(next((s for s in every if s), 0))


def share_restored(restored, template):
    """Process 0's restored checkpoint `(tree, meta, epoch)` or None, on every process.

    Only process 0 reads the run folder; the others receive the arrays (shaped like
    `template`) over the collectives, so no shared file system is needed."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

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
    import hashlib

    import jax
    import numpy as np

    h = hashlib.blake2b(digest_size=8)
    for leaf in jax.tree.leaves(params):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_replicas(params, *, step: int | None = None) -> list[str]:
    """Every process's parameter digest; JaxdlError naming the first process whose
    parameters differ from process 0's."""
    import numpy as np
    from jax.experimental import multihost_utils

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


def open_run(experiment: str, config: dict, *, out: str = "", resume: str = "", devices: list | None = None):
    """`Run.open` for a run of one or several processes: process 0 creates (or reopens) and
    locks the folder, and the others learn its path, or the error that stopped it."""
    import jax

    from jaxdl.runs.run import Run

    if jax.process_count() == 1:
        return Run.open(experiment, config, out=out, resume=resume, devices=devices)
    run, outcome = None, None
    if jax.process_index() == 0:
        try:
            run = Run.open(experiment, config, out=out, resume=resume, devices=devices)
            outcome = {"dir": str(run.dir)}
        except JaxdlError as e:
            outcome = {"error": str(e)}
    outcome = broadcast_json(outcome)
    if "error" in outcome:
        raise JaxdlError(outcome["error"])
    if run is None:
        from pathlib import Path

        run = Run(Path(outcome["dir"]), experiment, is_writer=False)
    return run


def command_prefix() -> str:
    """How this run was started, for messages that say how to resume it."""
    import jax

    if jax.process_count() == 1:
        return "python -m jaxdl"
    nproc = os.environ.get("JAXDL_LAUNCH_NPROC")
    return f"python -m jaxdl launch --nproc {nproc}" if nproc else "python -m jaxdl launch"


def _run_as_process(command: list[str]) -> int:
    """Run a jaxdl command (`exp NAME ...`) as this process of the job and leave the job."""
    import jax

    from jaxdl import cli

    who = f"process {jax.process_index()}/{jax.process_count()}"
    try:
        code = cli.main(command)
    except BaseException as e:  # noqa: BLE001 -- a collective that failed, or a bug
        _report_failure(who, e)
        os._exit(PEER_FAILED)  # skip the shutdown barrier: the others may be gone
    if code != 0:  # cli.main printed the error; do not wait for peers at the barrier
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    jax.distributed.shutdown()
    return code


def _report_failure(who: str, e: BaseException) -> None:
    text = str(e)
    if isinstance(e, KeyboardInterrupt):
        print(f"error: {who}: interrupted", file=sys.stderr)
    elif any(s in text for s in ("Gloo", "gloo", "Connection reset", "Connection closed", "heartbeat",
                                 "coordination service", "DEADLINE_EXCEEDED", "UNAVAILABLE")):
        print(f"error: {who}: lost contact with the other processes ({_first_line(e, 200)}); "
              "another process has probably died -- stopping", file=sys.stderr)
    else:
        import traceback

        traceback.print_exception(e, file=sys.stderr)
        print(f"error: {who}: {type(e).__name__}: {_first_line(e)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()


# ---- the launcher ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise JaxdlError(f"launch: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m jaxdl launch", allow_abbrev=False,
                description="Run an experiment as one or several cooperating processes (jax.distributed).")
    p.add_argument("--nproc", type=int, help="start N processes on this machine (coordinator on 127.0.0.1)")
    p.add_argument("--coordinator", help="HOST:PORT of process 0 (default: from the scheduler's environment)")
    p.add_argument("--num-processes", type=int, help="processes in the job (default: from the environment)")
    p.add_argument("--process-id", type=int, help="this process's index 0..N-1 (default: from the environment)")
    p.add_argument("--local-devices", help="this process's devices, e.g. 0,1 (default: all it sees)")
    p.add_argument("--heartbeat-timeout", type=int, default=20,
                   help="seconds without a heartbeat after which a process counts as dead (default: 20)")
    p.add_argument("--init-timeout", type=int, default=120,
                   help="seconds to wait for every process to join (default: 120)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="exp NAME [flags]")
    return p


def main_launch(argv: list[str]) -> int:
    """`python -m jaxdl launch ...`: see the module docstring."""
    args = _parser().parse_args(argv)
    command = args.command
    if not command or command[0] != "exp" or len(command) < 2:
        raise JaxdlError("launch: give the experiment to run, e.g. `launch --nproc 2 exp mlp --max-epochs 5`")
    if "-h" in command or "--help" in command:  # the experiment's flags, from this process alone
        from jaxdl import cli

        return cli.main(command)
    for name in ("heartbeat_timeout", "init_timeout"):
        if getattr(args, name) < 1:
            raise JaxdlError(f"launch: --{name.replace('_', '-')} must be >= 1")
    local = None
    if args.local_devices:
        try:
            local = [int(i) for i in args.local_devices.split(",")]
        except ValueError:
            raise JaxdlError(f"launch: --local-devices {args.local_devices!r}: expected indices like 0,1") from None
    if args.nproc is not None:
        if args.nproc < 1:
            raise JaxdlError(f"launch: --nproc {args.nproc}: need at least one process")
        if args.coordinator or args.process_id is not None or args.num_processes is not None:
            raise JaxdlError("launch: --nproc starts every process itself; it takes no --coordinator, "
                             "--process-id or --num-processes")
        _check_command(command)
        return _launch_local(args.nproc, command, args)
    if args.process_id is not None and args.num_processes is not None \
            and not 0 <= args.process_id < args.num_processes:
        raise JaxdlError(f"launch: --process-id {args.process_id}: must be in 0..{args.num_processes - 1}")
    initialize(coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
               local_devices=local, heartbeat_timeout=args.heartbeat_timeout, init_timeout=args.init_timeout)
    return _run_as_process(command)


def _check_command(command: list[str]) -> None:
    """Parse the experiment's flags once in the launcher: bad input is one line, before
    any process starts."""
    from jaxdl import cli
    from jaxdl.config import parse_config

    module = cli.load_experiment(command[1])
    parse_config(module.Config, command[2:], f"python -m jaxdl exp {command[1]}")


def _no_orphans():  # runs in the child before exec: die with the launcher
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _relay(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stderr.write(prefix + line)
        sys.stderr.flush()
    stream.close()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _launch_local(nproc: int, command: list[str], args) -> int:
    """Start `nproc` processes on 127.0.0.1, relay their output, forward stop signals, and
    stop them all when one fails. Process 0's output is shown as is; the others' stdout
    is dropped and their stderr shown with a `[process i]` prefix."""
    address = f"127.0.0.1:{free_port()}"
    procs, relays = [], []
    for i in range(nproc):
        argv = [sys.executable, "-m", "jaxdl", "launch", "--coordinator", address, "--num-processes", str(nproc),
                "--process-id", str(i), "--heartbeat-timeout", str(args.heartbeat_timeout),
                "--init-timeout", str(args.init_timeout), *(["--local-devices", args.local_devices]
                                                           if args.local_devices else []), *command]
        procs.append(subprocess.Popen(argv, env={**os.environ, "JAXDL_LAUNCH_NPROC": str(nproc)},
                                      stdout=None if i == 0 else subprocess.DEVNULL,
                                      stderr=None if i == 0 else subprocess.PIPE, text=True,
                                      start_new_session=True, preexec_fn=_no_orphans))
    for i, proc in enumerate(procs[1:], start=1):  # threads only after the last fork
        t = threading.Thread(target=_relay, args=(proc.stderr, f"[process {i}] "), daemon=True)
        t.start()
        relays.append(t)

    forwarded: list[int] = []

    def forward(signum, frame):
        forwarded.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(s) is not signal.SIG_IGN}  # an ignored signal stays ignored (nohup)
    try:
        failed = _wait(procs)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for t in relays:
            t.join(timeout=2)
    if failed is not None:
        i, code = failed
        if not forwarded:
            print(f"error: launch: process {i} of {nproc} {_describe(code)}; the job stopped", file=sys.stderr)
        return code if code > 0 else 128 + (-code)
    return 0


def _wait(procs) -> tuple[int, int] | None:
    """Wait for every process; once one fails give the others GRACE_SECONDS to stop by
    themselves (they notice in their next collective), then terminate them. Returns the
    failure that caused the stop (index, returncode) or None: the first one seen that is not
    a process reporting its peers' failure (exit code PEER_FAILED), since that exit is a
    consequence and can be seen in the same poll as, or even before, its cause."""
    seen: list[tuple[int, int]] = []  # failures in the order they were observed
    deadline = None
    while True:
        codes = [p.poll() for p in procs]
        for i, c in enumerate(codes):
            if c not in (None, 0) and all(j != i for j, _ in seen):
                seen.append((i, c))
        if seen and deadline is None:
            deadline = time.monotonic() + GRACE_SECONDS
        if all(c is not None for c in codes):
            break
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            time.sleep(3)
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            break
        time.sleep(0.05)
    return root_failure(seen)


def root_failure(seen: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The failure to report among (index, returncode) pairs in observed order: the first
    that is not PEER_FAILED, else the first."""
    for i, c in seen:
        if c != PEER_FAILED:
            return i, c
    return seen[0] if seen else None
