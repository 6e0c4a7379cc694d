"""A run folder and what goes in it.

    config.json      the full config of the latest invocation (a resumed run reads it back)
    run.json         the experiment's name and every invocation (time, pid, command line)
    metrics.jsonl    one JSON object per epoch: {"epoch": e, <metric>: value, ...}; deterministic
                     (no wall times), appended across interruptions, never truncated or
                     duplicated (a torn last line left by `kill -9` mid-write is dropped)
    timing.jsonl     wall-clock seconds per epoch (kept apart so metrics stay reproducible)
    summary.json     final metrics, with "finished": true once the run completed (a finished
                     run that is resumed to extend it is marked unfinished until it ends)
    curves.png       loss/accuracy curves
    checkpoints/     orbax checkpoints, one folder per saved epoch (see checkpoint.py)
    run.lock         the owning process, held with flock while it lives (see lock.py)

`Run.open(...)` is a context manager: leaving it releases the lock, however the block ends.
A run also signs in to the machine's registry (registry.py) so `python -m jaxdl ps` can list it.
This module imports no jax, so `ps` and `stop` start instantly.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxdl.errors import JaxdlError
from jaxdl.runs import lock, registry
from jaxdl.runs.files import append_line, json_bytes, open_nofollow, refuse_links, write_bytes_atomic, write_json_atomic

CKPT_DIR = "checkpoints"
RUN_FILES = ("config.json", "run.json", "metrics.jsonl", "timing.jsonl", "summary.json", "run.lock")
# Settings of one invocation, not of the run: a resumed run does not take them from its
# config.json, and a change in them is no change of the run's settings.
PER_INVOCATION = frozenset({"resume", "out", "debug_nans", "progress", "tensorboard", "compile_cache"})


def resume_command(experiment: str, run_dir, *, prefix: str = "python -m jaxdl") -> str:
    """The command that continues the run in `run_dir` (`prefix`: how jaxdl was started, e.g.
    through `launch`)."""
    return f"{prefix} exp {experiment} --resume {run_dir}"


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None when missing, unreadable or not an object."""
    try:
        obj = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def jsonl_lines(path: Path) -> list[str]:
    """The lines of a .jsonl file, split on newlines only (a stray carriage return, form feed
    or other Unicode line break inside damaged bytes stays part of its line)."""
    if not path.is_file():
        return []
    lines = path.read_bytes().decode("utf-8", "replace").split("\n")
    return lines[:-1] if lines[-1] == "" else lines  # the newline ending the last line starts no line


def read_jsonl(path: Path) -> list[dict]:
    """Records of a .jsonl file; a torn last line (crash mid-append) is ignored."""
    records = []
    for line in jsonl_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def last_epoch(run_dir) -> int:
    """The last epoch logged in metrics.jsonl (0 when none)."""
    epochs = [r["epoch"] for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if isinstance(r.get("epoch"), int)]
    return max(epochs, default=0)


def checkpoint_epochs(run_dir) -> list[int]:
    """Epochs with a complete checkpoint folder (orbax's unfinished temporary folders excluded)."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def is_finished(run_dir) -> bool:
    summary = read_json(Path(run_dir) / "summary.json")
    return bool(summary and summary.get("finished") is True)


def recorded_experiment(run_dir) -> str | None:
    info = read_json(Path(run_dir) / "run.json")
    name = info.get("experiment") if info else None
    return name if isinstance(name, str) else None


def check_run_folder(run_dir, flag: str = "--resume") -> dict:
    """The saved config of the run folder `run_dir`; a clear error if it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise JaxdlError(f"{flag} {run_dir}: no such folder")
    if not run_dir.is_dir():
        raise JaxdlError(f"{flag} {run_dir}: not a folder")
    path = run_dir / "config.json"
    if not path.is_file():
        raise JaxdlError(f"{flag} {run_dir}: not a run folder (no config.json)")
    config = read_json(path)
    if config is None:
        raise JaxdlError(f"{flag} {run_dir}: config.json is corrupt (not a JSON object)")
    return config


def _repair_jsonl(path: Path) -> None:
    """Drop a torn last line (the process died while appending it) so appends stay whole."""
    if not path.is_file():
        return
    fd = open_nofollow(path, os.O_RDWR)
    with os.fdopen(fd, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)
    print(f"notice: {path}: dropped a torn last line (the process died while writing it)", file=sys.stderr)


def _config_changes(old: dict, new: dict) -> list[str]:
    return [f"{k} {old[k]!r} -> {new[k]!r}" for k in new
            if k in old and k not in PER_INVOCATION and old[k] != new[k]]


@dataclass
class Run:
    dir: Path
    experiment: str
    is_writer: bool = True  # only process 0 writes in multi-process runs
    note: str = ""  # how the process ended, for `ps` (set by the loop: "SIGTERM at epoch 4", ...)
    _logged: dict | None = field(default=None, repr=False)  # epoch -> logged record
    _pending: tuple | None = field(default=None, repr=False)  # (config, time, old config) not yet written

    # ---- creation -------------------------------------------------------------------
    @staticmethod
    def open(experiment: str, config: dict, *, out: str = "", resume: str = "", is_writer: bool = True,
             devices: list[str] | None = None) -> "Run":
        """Create (or, with `resume`, reopen) a run folder, take its lock, write config.json.

        Refuses: a folder another live process holds (naming its pid and state); `--resume`
        of a folder that is not a run folder, or holds another experiment's run, or has
        checkpoints past `max_epochs`; `--out` into an existing run folder (resume it instead).
        """
        run_dir, old_config = _choose_folder(experiment, config, out=out, resume=resume)
        run = Run(run_dir, experiment, is_writer)
        if not is_writer:
            return run
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JaxdlError(f"{run_dir}: cannot create the run folder ({e.strerror})") from None
        refuse_links(run_dir)
        device_names = list(devices or [])
        started = time.time()
        lock.acquire(run_dir, {"experiment": experiment, "run_dir": str(run_dir.resolve()),
                               "devices": device_names, "started": started})
        try:
            for name in ("metrics.jsonl", "timing.jsonl"):
                _repair_jsonl(run_dir / name)
            run._pending = (config, started, old_config)
            if not resume:
                run.commit()
            registry.register(run_dir, {**lock.this_process(), "experiment": experiment, "devices": device_names,
                                        "started": started})
        except BaseException:  # including a SIGTERM raised here (see signals.py)
            lock.release(run_dir)
            raise
        return run

    def commit(self) -> None:
        """Write the invocation's config.json (and note it in run.json). A resumed run does
        this once its checkpoint has been checked (the loop calls it) or when it first writes
        a result, so a refused resume leaves the folder as it was."""
        if self._pending is None or not self.is_writer:
            return
        config, started, old_config = self._pending
        self._pending = None
        resumed = old_config is not None
        if resumed:
            changes = _config_changes(old_config, config)
            if changes:
                print(f"notice: resuming {self.dir} with changed settings: {'; '.join(changes)}", file=sys.stderr)
            summary = read_json(self.dir / "summary.json")
            if summary is not None and summary.get("finished") is True:  # extending a finished run
                write_json_atomic(self.dir / "summary.json", {"finished": False, "previous": summary})
        write_json_atomic(self.dir / "config.json", config)
        info = read_json(self.dir / "run.json") or {"experiment": self.experiment, "created": started}
        info.setdefault("invocations", []).append(
            {"time": started, "pid": os.getpid(), "argv": sys.argv, "resume": resumed})
        write_json_atomic(self.dir / "run.json", info)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock and record in the registry how the process ended."""
        if self.is_writer and lock.holds(self.dir):
            lock.release(self.dir)
            registry.update(self.dir, ended=time.time(), note=self.note or "exited")

    # ---- metrics ----------------------------------------------------------------------
    def _records(self) -> dict:
        if self._logged is None:
            self._logged = {int(r["epoch"]): r for r in read_jsonl(self.dir / "metrics.jsonl")
                            if isinstance(r.get("epoch"), int)}
        return self._logged

    def logged_epochs(self) -> set[int]:
        return set(self._records())

    def append_metrics(self, record: dict, *, seconds: float | None = None) -> None:
        """Append one epoch's record unless that epoch is already logged. A resumed run
        recomputes the epochs after its last checkpoint; they are identical (same keys,
        same data order), so they are not rewritten -- and if one is not, say so."""
        if not self.is_writer:
            return
        self.commit()
        epoch = int(record["epoch"])
        line = json_bytes(record, indent=None).decode().rstrip("\n")
        logged = self._records()
        if epoch in logged:
            old, new = json.dumps(logged[epoch], sort_keys=True), json.dumps(json.loads(line), sort_keys=True)
            if old != new:
                print(f"warning: {self.dir}: epoch {epoch} recomputed after resuming differs from metrics.jsonl "
                      f"(kept the logged record; was the config changed?)", file=sys.stderr)
            return
        append_line(self.dir / "metrics.jsonl", line)
        logged[epoch] = json.loads(line)
        if seconds is not None:
            append_line(self.dir / "timing.jsonl", json.dumps({"epoch": epoch, "seconds": seconds}))

    def metrics(self) -> list[dict]:
        return read_jsonl(self.dir / "metrics.jsonl")

    def check_metrics(self, upto: int) -> None:
        """On resume at epoch `upto`: name, in one line, the epochs 1..upto that metrics.jsonl
        lacks or holds unreadably (the checkpoint covers them; they cannot be recomputed from
        it), so that no row goes missing unnoticed."""
        path = self.dir / "metrics.jsonl"
        unreadable = []
        for number, line in enumerate(jsonl_lines(path), start=1):
            try:
                ok = isinstance(json.loads(line), dict)
            except json.JSONDecodeError:
                ok = False
            if not ok and line.strip():
                unreadable.append(number)
        missing = sorted(set(range(1, upto + 1)) - self.logged_epochs())
        if missing or unreadable:
            what = (f"lacks epoch(s) {number_ranges(missing)}" if missing else "") + \
                   (" and " if missing and unreadable else "") + \
                   (f"has unreadable line(s) {number_ranges(unreadable)}" if unreadable else "")
            print(f"warning: {path} {what}; the checkpoint of epoch {upto} covers them, so the run goes on, but "
                  f"those rows are lost (start afresh with --out to have every row)", file=sys.stderr)

    def write_summary(self, summary: dict) -> None:
        if self.is_writer:
            self.commit()
            write_json_atomic(self.dir / "summary.json", summary)
            if summary.get("finished") is True:
                self.note = "finished"

    def write_json(self, name: str, obj) -> None:
        self.write_bytes(name, json_bytes(obj))

    def write_bytes(self, name: str, data: bytes) -> None:
        """A file of the run's own (`name` inside the folder), written whole and link-safe."""
        if self.is_writer:
            self.commit()
            write_bytes_atomic(self.dir / name, data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))

    def save_array(self, name: str, array) -> None:
        """`name` (.npy) holds `array`, as np.save writes it."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        self.write_bytes(name, buffer.getvalue())


def _choose_folder(experiment: str, config: dict, *, out: str, resume: str) -> tuple[Path, dict | None]:
    """The run folder to open, and the saved config when resuming; refusals as in `Run.open`."""
    folder = Path(resume or out) if (resume or out) else None
    if folder is not None and folder.is_dir():
        refuse_links(folder)
        for name in RUN_FILES:
            if (folder / name).exists() and not (folder / name).is_file():
                raise JaxdlError(f"{folder / name}: is not a file; a run folder's {name} must be one (move it aside)")
        if (folder / CKPT_DIR).exists() and not (folder / CKPT_DIR).is_dir():
            raise JaxdlError(f"{folder / CKPT_DIR}: is not a folder; a run folder's {CKPT_DIR} must be one (move it "
                             "aside)")
        if not resume and checkpoint_epochs(folder) and not (folder / "config.json").is_file():
            raise JaxdlError(f"--out {out}: holds checkpoints but no config.json: another run's, or a damaged one; "
                             f"choose another folder")
    old_config = None
    if resume:
        run_dir = Path(resume)
        old_config = check_run_folder(run_dir, "--resume")
        recorded = recorded_experiment(run_dir)
        if recorded is not None and recorded != experiment:
            raise JaxdlError(f"--resume {resume}: holds a {recorded!r} run, not {experiment!r}; "
                             f"resume it with: {resume_command(recorded, resume)}")
        _refuse_if_held(run_dir)
        reached = checkpoint_epochs(run_dir)
        max_epochs = config.get("max_epochs")
        if reached and isinstance(max_epochs, int) and max_epochs < reached[-1]:
            raise JaxdlError(f"--resume {resume}: the run has reached epoch {reached[-1]}; give "
                             f"--max-epochs {reached[-1]} or more (it is {max_epochs})")
    elif out:
        run_dir = Path(out)
        if run_dir.exists() and not run_dir.is_dir():
            raise JaxdlError(f"--out {out}: exists and is not a folder")
        if (run_dir / "config.json").is_file():
            _refuse_if_held(run_dir)
            if is_finished(run_dir):
                raise JaxdlError(f"--out {out}: holds a finished run; choose another folder (or extend it: "
                                 f"--resume {out} --max-epochs N)")
            raise JaxdlError(f"--out {out}: holds an unfinished run; continue it with --resume {out}")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / experiment / stamp
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = Path("runs") / experiment / f"{stamp}-{n}"
    return run_dir, old_config


def number_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(f"{start}" if start == n else f"{start}-{n}")
            start = None
    return ", ".join(out)


def _refuse_if_held(run_dir: Path) -> None:
    """Refuse early, before anything is read or written, if a live process holds the folder."""
    held = lock.read_lock(run_dir)
    state = lock.owner_state(held) if held else "dead"
    if state != "dead" and not lock.holds(run_dir):
        raise lock.refusal(run_dir, held, state)
