"""Every training loop survives `kill -9`: each experiment, killed as soon as it has written its
first checkpoint and resumed with `--resume`, ends with the same metrics.jsonl (byte for byte,
in every sub-run) as the same run left alone in a process with another hash seed; this is also
these loops' same-seed-same-results test (tests/test_determinism.py). The harness gives every
experiment the same checkpoints and resume, so this is one test for transe, each fede setting
(`--setting all`, across its sub-runs), word2vec and interpret (mlp: tests/test_resume.py; a
2-process launch: tests/test_distributed.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

LOOPS = {
    "transe": ["--max-epochs", "16", "--eval-every", "2", "--dim", "8", "--ckpt-every", "2"],
    "fede": ["--setting", "all", "--max-epochs", "8", "--eval-every", "2", "--dim", "8", "--batch-size", "64",
             "--local-epochs", "1", "--ckpt-every", "2"],
    "word2vec": ["--max-epochs", "5", "--dim", "16", "--synthetic-sentences", "1500", "--ckpt-every", "1"],
    "interpret": ["--max-epochs", "8", "--digits-epochs", "6", "--explain", "3", "--background", "4",
                  "--shapley-samples", "8", "--ig-steps", "4", "--digits-per-class", "1", "--digits-samples", "4",
                  "--ckpt-every", "1"],
}


def _jaxdl(*args, env, hash_seed: int, stderr_path):
    """`python -m jaxdl ARGS` with PYTHONHASHSEED `hash_seed`: each process of a test orders its
    sets and dicts of str its own way, so agreeing runs are deterministic, not alike by chance.
    Its stderr goes to `stderr_path`, a file, so a talkative run never blocks on a full pipe."""
    env = {**env, "PYTHONHASHSEED": str(hash_seed)}
    with open(stderr_path, "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "jaxdl", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def _metrics(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("metrics.jsonl"))}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_killed_and_resumed_is_bit_for_bit(name, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAXDL_REGISTRY": str(tmp_path / "registry")}
    flags = [*LOOPS[name], "--no-progress", "--no-tensorboard"]
    reference = _jaxdl("exp", name, *flags, "--out", str(tmp_path / "ref"), env=env, hash_seed=1,
                       stderr_path=tmp_path / "ref.stderr")
    # The others read the reference's programs back from the compilation cache, which keys a
    # program by its HLO: one that traced differently would be compiled afresh.
    assert reference.wait(300) == 0, (tmp_path / "ref.stderr").read_text()
    victim = _jaxdl("exp", name, *flags, "--out", str(tmp_path / "cut"), env=env, hash_seed=2,
                    stderr_path=tmp_path / "cut.stderr")
    deadline = time.monotonic() + 300
    while victim.poll() is None and not list((tmp_path / "cut").rglob("checkpoints/[0-9]*")):
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    killed = victim.poll() is None
    if killed:
        os.kill(victim.pid, signal.SIGKILL)
    victim.wait(60)
    resumed = _jaxdl("exp", name, "--resume", str(tmp_path / "cut"), "--no-progress", "--no-tensorboard", env=env,
                     hash_seed=3, stderr_path=tmp_path / "resumed.stderr")
    assert resumed.wait(300) == 0, (tmp_path / "resumed.stderr").read_text()
    assert killed, f"{name} finished before it could be killed: make its run longer"
    ref, cut = _metrics(tmp_path / "ref"), _metrics(tmp_path / "cut")
    assert ref and ref.keys() == cut.keys() and ref == cut
