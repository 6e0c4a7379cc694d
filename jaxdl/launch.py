"""`python -m jaxdl launch`: run an experiment as several cooperating processes.

    python -m jaxdl launch --nproc 2 exp mlp ...        # N processes on this machine
    python -m jaxdl launch exp mlp ...                   # one process of a job a scheduler
                                                         # started (SLURM, Open MPI, ...)
    python -m jaxdl launch --coordinator HOST:PORT --num-processes N --process-id I exp mlp ...

Every process runs the same experiment (see jaxdl/devices/processes.py for what they
share). The local launcher (`--nproc`) starts the processes on 127.0.0.1, relays their
output, forwards stop signals, and stops the others once one has failed.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

from jaxdl import cli
from jaxdl.config import parse_config
from jaxdl.devices import processes
from jaxdl.devices.processes import PEER_FAILED
from jaxdl.errors import JaxdlError
from jaxdl.runs.run import number_ranges

GRACE_SECONDS = 10.0  # the launcher's wait for the others to exit by themselves


def _run_as_process(command: list[str]) -> int:
    """Run a jaxdl command (`exp NAME ...`) as this process of the job and leave the job."""
    who = processes.describe()
    try:
        code = cli.main(command)
    except BaseException as e:  # noqa: BLE001 -- a collective that failed, or a bug
        _report_failure(who, e)
        os._exit(PEER_FAILED)  # skip the shutdown barrier: the others may be gone
    if code != 0:  # cli.main printed the error; do not wait for peers at the barrier
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    processes.shutdown()
    return code


def _report_failure(who: str, e: BaseException) -> None:
    text = str(e)
    if isinstance(e, KeyboardInterrupt):
        print(f"error: {who}: interrupted", file=sys.stderr)
    elif any(s in text for s in ("Gloo", "gloo", "Connection reset", "Connection closed", "heartbeat",
                                 "coordination service", "DEADLINE_EXCEEDED", "UNAVAILABLE")):
        print(f"error: {who}: lost contact with the other processes ({processes.first_line(e, 200)}); "
              "another process has probably died -- stopping", file=sys.stderr)
    else:
        traceback.print_exception(e, file=sys.stderr)
        print(f"error: {who}: {type(e).__name__}: {processes.first_line(e)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()


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
    if args.coordinator:
        check_coordinator(args.coordinator, args.process_id, args.init_timeout, args.num_processes)
    processes.initialize(coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
                         local_devices=local, heartbeat_timeout=args.heartbeat_timeout, init_timeout=args.init_timeout)
    return _run_as_process(command)


def check_coordinator(address: str, process_id: int | None, timeout: float, num_processes: int | None = None) -> None:
    """Before JAX's runtime joins the job (it aborts the process when it cannot), meet the
    other processes on the coordinator's port: process 0 listens there and waits up to
    `timeout` seconds for the other `num_processes - 1` to say hello (their process id and
    their idea of the job's size); every other process must reach it within `timeout`
    seconds and be accepted. A taken port, an unreachable coordinator, a process that never
    comes, a duplicate id or a disagreeing --num-processes: one-line JaxdlError on every
    process concerned, nothing aborted. Without `num_processes` only reachability is checked."""
    host, _, port_text = address.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise JaxdlError(f"launch: --coordinator {address!r}: expected HOST:PORT") from None
    host = host.strip("[]") or "127.0.0.1"
    if process_id == 0:
        try:
            server = socket.create_server(("", port))
        except OSError as e:
            raise JaxdlError(f"launch: process 0 cannot listen on port {port} ({os.strerror(e.errno)}); is another job "
                             f"using it? choose another --coordinator port") from None
        with server:
            if num_processes is not None:
                _welcome(server, num_processes, timeout)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            peer = socket.create_connection((host, port), timeout=min(2.0, timeout))
            break
        except OSError as e:
            if time.monotonic() > deadline:
                why = os.strerror(e.errno) if e.errno else e
                raise JaxdlError(f"launch: could not reach the coordinator {address} within {timeout:g} s "
                                 f"({why}); start process 0 first, or check HOST:PORT") from None
            time.sleep(0.5)
    with peer:
        if num_processes is None:
            return
        peer.settimeout(timeout + 5.0)  # process 0 answers once every process has come, or gives up
        try:
            peer.sendall((json.dumps({"process_id": process_id, "num_processes": num_processes}) + "\n").encode())
            answer = peer.makefile("r", encoding="utf-8").readline().strip()
        except OSError as e:
            answer = f"error: no answer from process 0 ({os.strerror(e.errno) if e.errno else e})"
        if answer != "ok":
            reason = answer.removeprefix("error: ") if answer else "process 0 closed the connection"
            raise JaxdlError(f"launch: process {process_id} was not admitted to the job at {address}: {reason}")


def _welcome(server: socket.socket, num_processes: int, timeout: float) -> None:
    """Process 0's side of `check_coordinator`: admit processes 1..num_processes-1, then let
    each close first (so the port is free again for JAX's coordinator)."""
    deadline = time.monotonic() + timeout
    joined: dict[int, socket.socket] = {}

    def refuse_all(reason: str, extra: socket.socket | None = None) -> JaxdlError:
        for conn in [*joined.values(), *([extra] if extra else [])]:
            try:
                conn.sendall(f"error: {reason}\n".encode())
            except OSError:
                pass
            conn.close()
        return JaxdlError(f"launch: {reason}")

    while len(joined) < num_processes - 1:
        server.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            conn, _ = server.accept()
            conn.settimeout(max(1.0, deadline - time.monotonic()))
            hello = json.loads(conn.makefile("r", encoding="utf-8").readline() or "null")
            pid, size = hello["process_id"], hello["num_processes"]
            if not isinstance(pid, int) or not isinstance(size, int):
                raise TypeError
        except (socket.timeout, TimeoutError):
            missing = sorted(set(range(1, num_processes)) - set(joined))
            raise refuse_all(f"process 0 waited {timeout:g} s for process(es) {number_ranges(missing)} of "
                             f"{num_processes} to join; start them with the same --coordinator, or raise "
                             "--init-timeout") from None
        except (OSError, ValueError, TypeError, KeyError):
            conn.close()  # not one of ours (a port scan, a health check): ignore it
            continue
        if size != num_processes:
            raise refuse_all(f"process {pid} was started with --num-processes {size}, process 0 with {num_processes}; "
                             "give every process the same --num-processes", conn)
        if not 1 <= pid < num_processes or pid in joined:
            raise refuse_all(f"process id {pid} {'is taken twice' if pid in joined else 'is out of range'} in a job "
                             f"of {num_processes}; give each process its own --process-id in 0..{num_processes - 1}",
                             conn)
        joined[pid] = conn
    for conn in joined.values():
        conn.sendall(b"ok\n")
    for conn in joined.values():  # wait for the peer to close first: its side keeps the TIME_WAIT
        try:
            conn.settimeout(5.0)
            conn.recv(1)
        except OSError:
            pass
        conn.close()


def _check_command(command: list[str]) -> None:
    """Parse the experiment's flags once in the launcher: bad input is one line, before
    any process starts."""
    module = cli.load_experiment(command[1])
    parse_config(module.Config, command[2:], f"python -m jaxdl exp {command[1]}")


def _no_orphans():  # runs in the child before exec: die with the launcher
    try:
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
