"""Several processes on loopback (`python -m jaxdl launch`), against one process.

Four processes started as a scheduler starts them (SLURM's environment, auto-detected) and
two started by `launch --nproc 2` (then one is killed, and the run resumed). Each process
has one CPU device and gloo collectives; the global batch (64) is
the same in every run, so the runs follow one trajectory. Tolerances: per-epoch train loss
rtol 1e-5 and final parameters atol 1e-5 against the single-process run (observed ~1e-7:
only the order of the gradient sums differs); the processes' own copies of the parameters
are bit-identical (their digests, checked after every epoch, agree).

Time bounds: every subprocess has a timeout; after one process is killed the job must be
gone within KILL_BOUND_S (the survivors notice in their next collective, ~1 s; the
launcher would terminate them after 10 s).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import REPO, TEST_XLA_FLAGS
from jaxdl.cli import main as cli_main
from jaxdl.errors import JaxdlError

EPOCHS = 5
ARGS = ["--max-epochs", str(EPOCHS), "--hidden", "32", "--ckpt-every", "2", "--no-progress"]
KILL_BOUND_S = 20.0
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
ENV["XLA_FLAGS"] = TEST_XLA_FLAGS  # the suite's compiler settings, and one device per process


def _launch(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "jaxdl", "launch", *args], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _params(run_dir: Path):
    import orbax.checkpoint as ocp

    last = max(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    folder = (run_dir / "checkpoints" / str(last) / "state").resolve()
    return ocp.StandardCheckpointer().restore(folder)["state"]["params"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same_run(run_dir: Path, reference: Path) -> None:
    got, want = _metrics(run_dir), _metrics(reference)
    assert [r["epoch"] for r in got] == list(range(1, EPOCHS + 1))
    for key in ("train_loss", "test_loss"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-5, err_msg=key)
    assert want[-1]["train_loss"] < 0.5 * want[0]["train_loss"]  # it trained
    for a, b in zip(_leaves(_params(run_dir)), _leaves(_params(reference))):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    s, s_ref = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    assert s["finished"] and abs(s["test_accuracy"] - s_ref["test_accuracy"]) <= 1 / 360 + 1e-9


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process run, in this process (one device, global batch 64)."""
    out = tmp_path_factory.mktemp("dist") / "single"
    assert cli_main(["exp", "mlp", "--out", str(out), *ARGS]) == 0
    return out


@pytest.mark.slow
def test_four_processes_started_by_a_scheduler_match_one(reference, tmp_path):
    """Four processes started the way `srun -n 4 python -m jaxdl launch exp mlp ...` starts
    them: the same command, told apart only by SLURM's environment, which
    jax.distributed.initialize reads (coordinator on the first node of the step)."""
    from jaxdl.launch import free_port

    out = tmp_path / "four"
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": "4",
             "JAX_COORDINATOR_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, "-m", "jaxdl", "launch", "exp", "mlp", "--out", str(out),
                               "--parallel", "shard_map", *ARGS], cwd=REPO, text=True,
                              env={**ENV, **slurm, "SLURM_PROCID": str(i), "SLURM_LOCALID": "0"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(4)]
    try:
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
        assert stdout.strip().splitlines()[-1] == str(out)  # every process names the one run folder
    _same_run(out, reference)
    digests = json.loads((out / "summary.json").read_text())["replica_digests"]
    assert len(digests) == 4 and len(set(digests)) == 1  # every process holds the same parameters
    assert not (out / "run.lock").exists()


@pytest.mark.slow
def test_killed_process_stops_the_job_and_the_run_resumes(reference, tmp_path):
    """Two processes: when epoch 2 is logged, process 1 is killed (process 0 is paused for
    that instant so the kill lands mid-run however fast the machine is). Process 0 must
    stop by itself with one clear line and the launcher must report it, within the bound;
    resuming with the same command completes the run, equal to the single-process one."""
    out = tmp_path / "two"
    launcher = _launch("--nproc", "2", "exp", "mlp", "--out", str(out), *ARGS)
    try:
        deadline = time.monotonic() + 150
        while not ((out / "metrics.jsonl").is_file() and len(_metrics(out)) >= 2):
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-3000:]
            time.sleep(0.05)
        children = {int(c.cmdline()[c.cmdline().index("--process-id") + 1]): c
                    for c in psutil.Process(launcher.pid).children()}
        children[0].suspend()
        children[1].send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        children[0].resume()
        _, stderr = launcher.communicate(timeout=KILL_BOUND_S + 10)
        elapsed = time.monotonic() - t_kill
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert elapsed < KILL_BOUND_S, elapsed
    assert launcher.returncode == 128 + signal.SIGKILL
    lines = [l for l in stderr.splitlines() if l.startswith("error:")]
    assert any(l.startswith("error: process 0/2: lost contact with the other processes") for l in lines), stderr
    assert lines[-1] == "error: launch: process 1 of 2 was killed by SIGKILL; the job stopped", stderr
    assert "Traceback" not in stderr
    assert len(_metrics(out)) < EPOCHS  # it really stopped mid-run

    resumed = _launch("--nproc", "2", "exp", "mlp", "--resume", str(out), "--no-progress")
    stdout, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr[-3000:]
    assert "resumed" in stdout
    _same_run(out, reference)


@pytest.mark.parametrize("argv,msg", [
    (["launch", "--nproc", "2"], "launch: give the experiment to run"),
    (["launch", "--nproc", "0", "exp", "mlp"], "launch: --nproc 0: need at least one process"),
    (["launch", "--nproc", "2", "--process-id", "1", "exp", "mlp"], "launch: --nproc starts every process itself"),
    (["launch", "--nproc", "2", "exp", "mlp", "--lr", "-1"], "--lr: must be > 0"),
    (["launch", "--nproc", "2", "exp", "nope"], "unknown experiment 'nope'"),
    (["launch", "--num-processes", "2", "--process-id", "2", "exp", "mlp"], "launch: --process-id 2: must be in 0..1"),
    (["launch", "--frob", "exp", "mlp"], "launch: unrecognized arguments: --frob"),
])
def test_launch_bad_input_is_one_line(argv, msg, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {msg}"), err


def test_replica_digests_are_compared():
    from jaxdl import launch
    from jaxdl.devices import processes

    params = {"w": np.arange(3, dtype=np.float32)}
    mine = processes.param_digest(params)
    assert processes.check_replicas(params) == [mine]  # this process alone
    nudged = processes.param_digest({"w": np.nextafter(params["w"], np.float32(9))})
    assert nudged != mine  # one ulp changes the digest
    assert processes.compare_digests([mine, mine, mine]) == [mine] * 3
    with pytest.raises(JaxdlError, match="the parameters on process 2 differ from process 0's at step 7"):
        processes.compare_digests([mine, mine, nudged], step=7)


def test_launcher_reports_the_cause_not_the_peer_that_noticed_it():
    """A peer exiting with PEER_FAILED is a consequence; when it is seen in the same poll
    as (or before) the process that died, the launcher names the dead one."""
    from jaxdl import launch
    from jaxdl.devices import processes

    PF = processes.PEER_FAILED
    assert launch.root_failure([]) is None
    assert launch.root_failure([(0, PF), (1, -9)]) == (1, -9)
    assert launch.root_failure([(0, PF)]) == (0, PF)
    assert launch.root_failure([(1, 1), (0, -9)]) == (1, 1)

    class Done:  # a process that has already exited with `code`
        def __init__(self, code):
            self.returncode = code

        def poll(self):
            return self.returncode

    assert launch._wait([Done(PF), Done(-9)]) == (1, -9)
    assert launch._wait([Done(0), Done(0)]) is None
