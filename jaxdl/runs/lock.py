"""A run folder's lock: `run.lock`, held with flock(2) for the whole life of its process.

The kernel drops an flock when its holder dies, however it dies (`kill -9` included), so a
lock never outlives its owner, while a process stopped with Ctrl-Z / SIGSTOP keeps it (it
still holds its memory and devices). The file names the owner -- pid, host, process start
time, experiment, devices -- so a refused second run can say who holds the folder and in
what state, and `jaxdl ps` can show it. A file left by a dead owner is taken over with a
notice. Where flock is unavailable (some network filesystems) the recorded pid and its
start time (against pid reuse) decide; a lock written on another host is never taken over
automatically.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

import psutil

from jaxdl.errors import JaxdlError

LOCK_NAME = "run.lock"
_HELD: dict[str, int] = {}  # resolved run folder -> open descriptor holding its flock


def this_process() -> dict:
    """pid, host and start time: together they name a process even after pid reuse."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "create_time": psutil.Process().create_time()}


def process_state(pid: int, create_time: float | None = None) -> str:
    """'running', 'stopped' (SIGSTOP/Ctrl-Z: still holds memory and devices), or 'dead'.

    With `create_time`, a live pid that started at another time (a reused pid) is 'dead'.
    """
    try:
        proc = psutil.Process(int(pid))
        status = proc.status()
        if create_time is not None and abs(proc.create_time() - float(create_time)) > 1.0:
            return "dead"
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, TypeError):
        return "dead"
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return "stopped"
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return "dead"
    return "running"


def owner_state(record: dict | None) -> str:
    """State of the process a lock record names: running/stopped/dead, or 'elsewhere'
    when it was written on another host (its process cannot be checked from here)."""
    if not record or not isinstance(record.get("pid"), int) or record["pid"] <= 0:
        return "dead"
    if record.get("host", socket.gethostname()) != socket.gethostname():
        return "elsewhere"
    return process_state(record["pid"], record.get("create_time"))


def _parse(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_lock(run_dir) -> dict | None:
    """The lock record of `run_dir`, or None when there is none (or it is unreadable)."""
    try:
        return _parse((Path(run_dir) / LOCK_NAME).read_bytes().decode("utf-8", "replace"))
    except OSError:
        return None


def _read_fd(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return _parse(b"".join(chunks).decode("utf-8", "replace"))


def _write_fd(fd: int, record: dict) -> None:
    data = json.dumps(record).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def refusal(run_dir, record: dict, state: str) -> JaxdlError:
    pid = record.get("pid", "?")
    if state == "elsewhere":
        return JaxdlError(f"{run_dir}: locked by pid {pid} on host {record.get('host')}; if that run is gone, "
                          f"delete {Path(run_dir) / LOCK_NAME}")
    return JaxdlError(f"{run_dir}: in use by pid {pid} ({state}); stop it with `python -m jaxdl stop {run_dir}`")


def acquire(run_dir, info: dict) -> None:
    """Take the lock of `run_dir` for this process (re-entrant); refuse if another live
    process holds it; take over, with a notice, a lock left by a dead one."""
    key = str(Path(run_dir).resolve())
    if key in _HELD:
        return
    path = Path(run_dir) / LOCK_NAME
    me = this_process()
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise JaxdlError(f"{path}: is a symbolic link; a run writes only files of its own "
                                 f"(remove the link)") from None
            raise
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                kernel_says_free = True
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    held = read_lock(run_dir) or {}
                    raise refusal(run_dir, held, owner_state(held) if held else "running") from None
                kernel_says_free = False  # no flock here (ENOLCK, EOPNOTSUPP): trust the record
            try:
                same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:  # the previous owner unlinked it as we opened it: open afresh
                os.close(fd)
                continue
            previous = _read_fd(fd)
            if previous and previous.get("pid") not in (None, me["pid"]):
                state = owner_state(previous)
                if state == "elsewhere" or (state != "dead" and not kernel_says_free) or \
                        (state != "dead" and previous.get("create_time") is None):
                    raise refusal(run_dir, previous, state)
                if state != "dead":  # alive but not holding the flock: not using the folder
                    state = "not holding it"
                print(f"notice: {run_dir}: taking over the stale lock of pid {previous['pid']} ({state})",
                      file=sys.stderr)
            _write_fd(fd, {**me, "cmdline": psutil.Process().cmdline(), **info})
        except BaseException:
            os.close(fd)
            raise
        _HELD[key] = fd
        return
    raise JaxdlError(f"{run_dir}: could not take the run lock (it keeps changing hands)")


def check_holder(run_dir, record: dict) -> None:
    """Before a signal goes to the pid a lock record names: JaxdlError unless that process is
    the run's own -- it holds the run's flock now, and its start time and command line are
    the ones recorded (a pid alone may have been reused, or written by anyone)."""
    pid = record.get("pid")
    refuse = f"{run_dir}: not signalling pid {pid}"
    if not isinstance(pid, int) or record.get("create_time") is None:
        raise JaxdlError(f"{refuse}: its lock record does not say which process it is (no start time)")
    try:
        proc = psutil.Process(pid)
        started, cmdline = proc.create_time(), proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        raise JaxdlError(f"{refuse}: no such process of yours") from None
    if abs(started - float(record["create_time"])) > 1.0:
        raise JaxdlError(f"{refuse}: it started at another time than the run's process (a reused pid)")
    if "cmdline" in record and record["cmdline"] != cmdline:
        raise JaxdlError(f"{refuse}: its command line is not the run's")
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise JaxdlError(f"{refuse}: the run's lock cannot be read ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return  # held by someone: the process the record names, whose identity matched above
        if "cmdline" not in record:  # no flock on this filesystem: only a full record may stand in
            raise JaxdlError(f"{refuse}: the lock cannot be tested here and its record names no command line") \
                from None
        return
    else:
        raise JaxdlError(f"{refuse}: nobody holds the run's lock, so pid {pid} is not running it")
    finally:
        os.close(fd)


def holds(run_dir) -> bool:
    return str(Path(run_dir).resolve()) in _HELD


def update(run_dir, **fields) -> None:
    """Add fields to our own lock record (a no-op if we do not hold the lock)."""
    fd = _HELD.get(str(Path(run_dir).resolve()))
    if fd is None:
        return
    _write_fd(fd, {**(_read_fd(fd) or this_process()), **fields})


def release(run_dir) -> None:
    """Remove our lock file and drop the flock (a no-op if we do not hold it)."""
    fd = _HELD.pop(str(Path(run_dir).resolve()), None)
    if fd is None:
        return
    path = Path(run_dir) / LOCK_NAME
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
