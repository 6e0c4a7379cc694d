"""A real experiment (`python -m jaxdl exp mlp`) interrupted every way a run gets interrupted,
resumed each time, and compared bit for bit with the same run left alone.

One uninterrupted reference run (30 epochs) runs beside one chain of processes on another
folder, all with the same seed:

  1. SIGTERM as soon as the run folder exists (set-up, jax compilation or the first epoch)
  2. resume; SIGSTOP (Ctrl-Z) mid-training; `jaxdl ps` shows it stopped; `jaxdl stop`
     continues it, it checkpoints and exits
  3. resume; `kill -9` mid-training (mostly mid-checkpoint: one is written every epoch)
  4. resume to the end (24 epochs): finished
  5. resume the finished run with --max-epochs 30: extended

and the chain must end with the reference's metrics.jsonl (byte for byte) and parameters
(bit for bit). metrics.jsonl only ever grows, without a duplicated epoch.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import psutil
import pytest

from conftest import REPO

FLAGS = ["--hidden", "32", "--ckpt-every", "1", "--no-progress"]


@pytest.fixture
def env(tmp_path, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "jax_cache"  # compiled once, reused by every process
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAXDL_REGISTRY": str(tmp_path / "registry"),
            "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


class Proc:
    """`python -m jaxdl ARGS` in the background, its output in files (no pipe to fill)."""

    def __init__(self, tmp_path: Path, name: str, args: list[str], env: dict):
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen([sys.executable, "-m", "jaxdl", *args], stdout=out, stderr=err,
                                          env=env, cwd=REPO)
        self.pid = self.popen.pid

    def wait(self, timeout: float = 240) -> int:
        return self.popen.wait(timeout)

    def stderr(self) -> str:
        return self.err.read_text()


def _until(condition, what: str, timeout: float = 240, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.popen.returncode}) before {what}: {proc.stderr()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _epochs(run_dir: Path) -> int:
    try:
        return (run_dir / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _checkpoints(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxdl", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def _final_arrays(run_dir: Path, epoch: int) -> list[np.ndarray]:
    mngr = ocp.CheckpointManager(run_dir.resolve() / "checkpoints")
    tree = mngr.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _clean_exit(proc: Proc, rc: int) -> str:
    code = proc.wait()
    err = proc.stderr()
    assert code == rc, err
    assert "Traceback" not in err, err
    return err


@pytest.mark.slow
def test_interrupted_every_way_and_resumed_equals_uninterrupted(tmp_path, env):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = Proc(tmp_path, "ref", ["exp", "mlp", *FLAGS, "--max-epochs", "30", "--out", str(ref_dir)], env)
    resume = ["exp", "mlp", "--resume", str(run_dir)]
    history = []

    def grew_without_duplicates():
        text = (run_dir / "metrics.jsonl").read_text() if (run_dir / "metrics.jsonl").exists() else ""
        text = text[:text.rfind("\n") + 1]  # after kill -9: a torn last line (dropped on resume)
        epochs = [json.loads(line)["epoch"] for line in text.splitlines()]
        assert epochs == list(range(1, len(epochs) + 1)), epochs
        if history:
            assert text.startswith(history[-1]), "metrics.jsonl was rewritten"
        history.append(text)

    # 1. SIGTERM while the run is being set up (or compiling, or in its first epoch)
    p = Proc(tmp_path, "p1", ["exp", "mlp", *FLAGS, "--max-epochs", "24", "--out", str(run_dir)], env)
    _until(lambda: (run_dir / "config.json").exists(), "the run folder", proc=p)
    p.popen.send_signal(signal.SIGTERM)
    last = _clean_exit(p, 128 + signal.SIGTERM).strip().splitlines()[-1]
    assert last.startswith("interrupted: SIGTERM"), last
    if "at epoch" in last:  # it was in the first epoch: that epoch finished and was saved
        assert _checkpoints(run_dir) == [1] and _epochs(run_dir) == 1, last
    else:  # before training: nothing to save
        assert "nothing to checkpoint" in last and _checkpoints(run_dir) == [] and _epochs(run_dir) == 0, last
    grew_without_duplicates()

    # 2. resume; Ctrl-Z mid-training; ps shows it stopped; stop ends it with a checkpoint
    p = Proc(tmp_path, "p2", resume, env)
    start = _epochs(run_dir)
    _until(lambda: _epochs(run_dir) >= start + 4, "four more epochs", proc=p)
    p.popen.send_signal(signal.SIGSTOP)
    _until(lambda: psutil.Process(p.pid).status() == psutil.STATUS_STOPPED, "the stop")
    listing = _cli(["ps", "--json"], env)
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    row = next(r for r in rows if r["run_dir"] == str(run_dir.resolve()))
    assert (row["pid"], row["state"], row["experiment"], row["max_epochs"]) == (p.pid, "stopped", "mlp", 24), row
    assert row["devices"] == ["cpu:0"] and row["epoch"] >= start + 4
    stopped = _cli(["stop", str(run_dir)], env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"continued stopped pid {p.pid}" in stopped.stdout
    reached = _epochs(run_dir)
    assert f"checkpoint of epoch {reached} in" in stopped.stdout, stopped.stdout
    assert f"SIGTERM at epoch {reached}: checkpoint of epoch {reached} saved" in _clean_exit(p, 143)
    assert _checkpoints(run_dir)[-1] == reached and 4 <= reached < 24
    grew_without_duplicates()

    # 3. resume; kill -9 mid-training (a checkpoint is written every epoch, so mostly mid-write)
    p = Proc(tmp_path, "p3", resume, env)
    _until(lambda: _epochs(run_dir) >= reached + 3, "three more epochs", proc=p)
    p.popen.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL
    assert _epochs(run_dir) < 24 and (run_dir / "run.lock").exists()  # killed before the end; lock left
    row = json.loads(_cli(["ps", "--json", str(run_dir)], env).stdout)
    assert row["state"] == "dead" and row["note"] == "ended without closing (killed or crashed)", row
    grew_without_duplicates()

    # 4. resume to the end: the stale lock is taken over with a notice
    p = Proc(tmp_path, "p4", resume, env)
    err = _clean_exit(p, 0)
    assert "taking over the stale lock of pid" in err and "(dead)" in err, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] is True and summary["epochs"] == 24
    grew_without_duplicates()

    # 5. resume the finished run with a larger --max-epochs: it is extended
    p = Proc(tmp_path, "p5", [*resume, "--max-epochs", "30"], env)
    assert "max_epochs 24 -> 30" in _clean_exit(p, 0)
    grew_without_duplicates()
    listing = _cli(["ps"], env).stdout
    assert any(line.split()[1:4] == ["finished", "mlp", "30/30"] for line in listing.splitlines()), listing

    _clean_exit(ref, 0)
    assert (run_dir / "metrics.jsonl").read_bytes() == (ref_dir / "metrics.jsonl").read_bytes()
    mine, theirs = _final_arrays(run_dir, 30), _final_arrays(ref_dir, 30)
    assert len(mine) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(mine, theirs))
    s_run, s_ref = (json.loads((d / "summary.json").read_text()) for d in (run_dir, ref_dir))
    assert s_run["test_accuracy"] == s_ref["test_accuracy"] and s_run["epochs"] == s_ref["epochs"] == 30
