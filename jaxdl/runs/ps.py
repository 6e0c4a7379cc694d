"""`python -m jaxdl ps` and `python -m jaxdl stop RUN_DIR`: what is running, and stopping it well.

    ps [RUN_DIR ...] [--all] [--json]
        pid, state, experiment, epoch reached / max, newest checkpoint, devices held, run
        folder, and how it ended. States: running; stopped (SIGSTOP / Ctrl-Z: the process
        still holds its memory and devices); finished; dead (the process is gone without
        finishing: interrupted, killed or crashed -- resume it with --resume RUN_DIR).
        Lists the runs signed in to this machine's registry (runs/registry.py), newest
        first: every live one and the 20 most recent others (--all: every one, any host).

    stop RUN_DIR|PID [--timeout SECONDS]
        SIGCONT if the run is stopped, then SIGTERM; the run finishes its epoch, writes a
        checkpoint and exits; `stop` waits for that and reports the checkpoint.

Neither imports jax.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from jaxdl.errors import JaxdlError
from jaxdl.runs import lock, registry
from jaxdl.runs.run import checkpoint_epochs, is_finished, last_epoch, read_json, recorded_experiment, resume_command

RECENT = 20


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise JaxdlError(message)


def describe(run_dir, entry: dict | None = None) -> dict:
    """The facts `ps` shows about one run folder (entry: its registry record, if any)."""
    run_dir = Path(run_dir)
    entry = entry or registry.lookup(run_dir) or {}
    held = None
    for _ in range(3):  # the owner may be rewriting its lock record this instant
        held = lock.read_lock(run_dir)
        if held is not None or not (run_dir / lock.LOCK_NAME).exists():
            break
        time.sleep(0.02)
    owner = lock.owner_state(held) if held else "dead"
    if owner in ("running", "stopped", "elsewhere"):
        state, pid, devices = owner, held.get("pid"), held.get("devices", [])
    else:
        state = "finished" if is_finished(run_dir) else "dead"
        pid, devices = entry.get("pid"), []
    config = read_json(run_dir / "config.json") or {}
    ckpts = checkpoint_epochs(run_dir)
    return {"pid": pid, "state": state,
            "experiment": (held or {}).get("experiment") or entry.get("experiment") or recorded_experiment(run_dir),
            "epoch": last_epoch(run_dir), "max_epochs": config.get("max_epochs"),
            "checkpoint": ckpts[-1] if ckpts else None, "devices": devices,
            "run_dir": str(run_dir.resolve()), "started": (held or entry).get("started"),
            "note": "" if state in ("running", "stopped") else entry.get("note") or
            ("ended without closing (killed or crashed)" if entry and not entry.get("ended") else "")}


def _rows(args) -> list[dict]:
    if args.run_dirs:
        for d in args.run_dirs:
            if not (Path(d) / "config.json").is_file():
                raise JaxdlError(f"{d}: not a run folder (no config.json)")
        return [describe(d) for d in args.run_dirs]
    host = socket.gethostname()
    rows = []
    for entry in registry.entries():
        if not (Path(entry["run_dir"]) / "config.json").is_file():
            registry.forget(entry["run_dir"])  # the folder was deleted
            continue
        if entry.get("host", host) != host and not args.all:
            continue
        bad = [k for k, kinds in (("pid", (int,)), ("started", (int, float)), ("ended", (int, float)))
               if entry.get(k) is not None and (not isinstance(entry[k], kinds) or isinstance(entry[k], bool))]
        if bad:  # one malformed entry breaks no listing
            print(f"notice: skipped the registry entry of {entry['run_dir']}: its {bad[0]} is "
                  f"{entry[bad[0]]!r}", file=sys.stderr)
            continue
        rows.append(describe(entry["run_dir"], entry))
    rows.sort(key=lambda r: -(r["started"] or 0))
    live = [r for r in rows if r["state"] in ("running", "stopped")]
    others = [r for r in rows if r not in live]
    return live + (others if args.all else others[:RECENT])


def _table(rows: list[dict]) -> str:
    header = ["PID", "STATE", "EXPERIMENT", "EPOCH", "CKPT", "DEVICES", "STARTED", "RUN", "NOTE"]
    lines = [header]
    for r in rows:
        epoch = f"{r['epoch']}/{r['max_epochs']}" if r["max_epochs"] is not None else str(r["epoch"])
        started = time.strftime("%m-%d %H:%M", time.localtime(r["started"])) if r["started"] else "-"
        lines.append([str(r["pid"] or "-"), r["state"], r["experiment"] or "?", epoch,
                      "-" if r["checkpoint"] is None else str(r["checkpoint"]),
                      ",".join(map(str, r["devices"])) or "-", started, r["run_dir"], r["note"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1] for line in lines).rstrip()


def main_ps(argv: list[str]) -> int:
    parser = _Parser(prog="python -m jaxdl ps", description="List the jaxdl runs on this machine.")
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="describe these run folders only")
    parser.add_argument("--all", action="store_true", help="every registered run, any host")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args(argv)
    rows = _rows(args)
    if args.json:
        for r in rows:
            print(json.dumps(r))
    elif rows:
        print(_table(rows))
    else:
        print(f"no jaxdl runs registered in {registry.registry_dir()}")
    return 0


def _find(target: str) -> Path:
    """A run folder from a path, or from the pid of a registered run."""
    path = Path(target)
    if path.exists() or not target.isdigit():
        if not (path / "config.json").is_file():
            raise JaxdlError(f"{target}: not a run folder (no config.json)")
        return path
    for entry in registry.entries():
        if entry.get("pid") == int(target) and entry.get("host") == socket.gethostname():
            return Path(entry["run_dir"])
    raise JaxdlError(f"{target}: no such run folder, and no registered run has that pid")


def main_stop(argv: list[str]) -> int:
    parser = _Parser(prog="python -m jaxdl stop", description="Make a run checkpoint and exit.")
    parser.add_argument("target", metavar="RUN_DIR", help="the run folder (or the pid of a registered run)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the checkpoint (600)")
    args = parser.parse_args(argv)
    run_dir = _find(args.target)
    held = lock.read_lock(run_dir)
    state = lock.owner_state(held) if held else "dead"
    if state == "elsewhere":
        raise JaxdlError(f"{run_dir}: its process {held.get('pid')} runs on host {held.get('host')}; stop it there")
    info = describe(run_dir)
    experiment = info["experiment"] or "NAME"
    resume = resume_command(experiment, run_dir)
    if state == "dead":
        how = "finished" if info["state"] == "finished" else \
            f"not running; checkpoint: epoch {info['checkpoint']}; resume with: {resume}" \
            if info["checkpoint"] is not None else "not running and has no checkpoint"
        print(f"{run_dir}: {how}")
        return 0
    lock.check_holder(run_dir, held)
    pid, create_time = int(held["pid"]), held.get("create_time")
    try:
        if state == "stopped":
            os.kill(pid, signal.SIGCONT)
            print(f"continued stopped pid {pid}")
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise JaxdlError(f"pid {pid} ({run_dir}) belongs to another user; cannot signal it") from None
    print(f"sent SIGTERM to pid {pid} ({experiment}, epoch {info['epoch']}); waiting for it to finish the epoch "
          f"and checkpoint ...", flush=True)
    deadline = time.monotonic() + args.timeout
    while lock.process_state(pid, create_time) != "dead":
        if time.monotonic() > deadline:
            raise JaxdlError(f"pid {pid} is still running after {args.timeout:g} s (a long epoch?); it will "
                             f"checkpoint and exit when the epoch ends; `kill -9 {pid}` loses the work since "
                             f"checkpoint {info['checkpoint']}")
        time.sleep(0.05)
    after = describe(run_dir)
    if after["state"] == "finished":
        print(f"pid {pid} finished the run (epoch {after['epoch']}) before it could stop")
    elif after["checkpoint"] is not None:
        print(f"pid {pid} exited; checkpoint of epoch {after['checkpoint']} in {run_dir}; resume with: {resume}")
    else:
        print(f"pid {pid} exited before its first checkpoint; start it again with: {resume}")
    return 0
