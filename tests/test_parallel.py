"""Data parallelism on 4 fake CPU devices, proven equal to one device.

Fake devices need XLA_FLAGS=--xla_force_host_platform_device_count=4 before jax starts,
so the multi-device work runs in subprocesses (tests/_multidevice.py, and the CLI);
this process keeps its one device and every other test is unaffected.

Tolerance: after 18 steps (3 epochs of 6 global batches of 32), parameters and optimizer
state on 2 and 4 devices agree with one device (the plain jitted scan) to atol 1e-5
(observed ~2e-7: the only difference is the order in which per-example gradients are
summed). The one-device pmap form is what the end-to-end 1-device CLI run uses.
"""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, xla_flags
from jaxdl.cli import main as cli_main
from jaxdl.errors import JaxdlError
from jaxdl.devices import check_divisible, select_devices
from jaxdl.devices.data_parallel import allreduce_bytes

FAKE4 = {"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4"), "JAX_PLATFORMS": "cpu",
         "TF_CPP_MIN_LOG_LEVEL": "3"}
ATOL = 1e-5
E2E_ARGS = ["--max-epochs", "8", "--hidden", "64", "--no-progress"]


@pytest.fixture(scope="module")
def multidevice(tmp_path_factory):
    """Run the worker and the 4-device CLI run side by side; return their results."""
    tmp = tmp_path_factory.mktemp("parallel")
    out = str(tmp / "runs.npz")
    env = {**os.environ, **FAKE4}
    worker = subprocess.Popen([sys.executable, str(REPO / "tests" / "_multidevice.py"), out], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    e2e = subprocess.Popen([sys.executable, "-m", "jaxdl", "exp", "mlp", "--devices", ":4", "--out",
                            str(tmp / "mlp4"), *E2E_ARGS], env=env, cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    log, _ = worker.communicate(timeout=240)
    assert worker.returncode == 0, log[-3000:]
    e2e_log, _ = e2e.communicate(timeout=240)
    arrays = dict(np.load(out))
    report = json.loads(Path(out + ".json").read_text())
    return {"arrays": arrays, "report": report, "e2e": (e2e.returncode, e2e_log, tmp / "mlp4")}


def _leaves(arrays, model, mode, n):
    prefix = f"{model}/{mode}/{n}/leaf"
    return [arrays[k] for k in sorted((k for k in arrays if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))]


@pytest.mark.parametrize("model", ["softmax", "mlp"])
@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
@pytest.mark.parametrize("n", [2, 4])
def test_n_devices_follow_the_single_device_trajectory(multidevice, model, mode, n):
    arrays = multidevice["arrays"]
    assert multidevice["report"]["devices"] == 4
    ref, got = _leaves(arrays, model, "single", 1), _leaves(arrays, model, mode, n)
    assert len(ref) == len(got) >= 2  # params and (for the MLP's adam) optimizer state
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=0, atol=ATOL)
    assert int(arrays[f"{model}/{mode}/{n}/step"]) == 18
    losses = arrays[f"{model}/{mode}/{n}/losses"]
    np.testing.assert_allclose(losses, arrays[f"{model}/single/1/losses"], rtol=1e-5)
    assert losses[-1] < 0.5 * losses[0]  # it learned: the comparison is not between two no-ops


@pytest.mark.parametrize("model", ["softmax", "mlp"])
@pytest.mark.parametrize("n", [2, 4])
def test_pmap_and_shard_map_agree(multidevice, model, n):
    arrays = multidevice["arrays"]
    for a, b in zip(_leaves(arrays, model, "pmap", n), _leaves(arrays, model, "shard_map", n)):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


@pytest.mark.parametrize("mode,n", [("pmap", 4), ("shard_map", 2)])
def test_each_device_draws_its_own_randomness(multidevice, mode, n):
    """loss = u_i * mean(X_i w) with u_i ~ U(key of device i): after one SGD step (lr 1) from
    w = 0, w = -mean_i(u_i * mean(X_i)); computed here from the documented key schedule."""
    import jax

    from jaxdl.data.randomness import index_shuffle

    arrays = multidevice["arrays"]
    X = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    k_batches, k_steps = jax.random.split(jax.random.key(9))
    order = np.asarray(index_shuffle(k_batches, 8))
    step_key = jax.random.fold_in(k_steps, 0)
    u = np.array([float(jax.random.uniform(jax.random.fold_in(step_key, i), ())) for i in range(n)])
    X_i = X[order].reshape(n, 8 // n, 3)
    expected_w = -np.mean(u[:, None] * X_i.mean(axis=1), axis=0)
    np.testing.assert_allclose(arrays[f"noisy/{mode}/{n}/w"], expected_w, rtol=1e-6)
    np.testing.assert_allclose(arrays[f"noisy/{mode}/{n}/u"], [u.mean()], rtol=1e-6)
    assert len(set(u.round(6))) == n  # the devices really drew different numbers


def test_device_flag_errors(multidevice):
    report = multidevice["report"]
    assert report["select"] == {"all": [0, 1, 2, 3], "2": [2], ":2": [0, 1], "1:3": [1, 2], "1,3": [1, 3]}
    assert "divisible by the 3 devices" in report["indivisible"]
    expected = {"too_many": "--devices 5: no device 5 (have 0..3)",
                "duplicate": "--devices 0,2,2: duplicate device index",
                "indivisible": "--batch-size 64: the global batch must be divisible by the 3 devices (e.g. 63 or 66)",
                "bad_mode": "--parallel: 'vmap' is not one of pmap, shard_map"}
    for name, msg in expected.items():
        got = report["cli"][name]
        assert got["code"] == 2 and got["stderr"] == [f"error: {msg}"], (name, got)


def test_allreduce_bytes_per_step_are_the_gradients_and_metrics(multidevice):
    # MLP 12-16-16-4: 12*16+16 + 16*16+16 + 16*4+4 = 548 float32 gradients, plus loss and accuracy.
    assert multidevice["report"]["allreduce_bytes"] == 4 * (548 + 2)


@pytest.mark.slow
def test_mlp_on_4_devices_reaches_the_single_device_accuracy(multidevice, tmp_path, capsys):
    code, log, run4 = multidevice["e2e"]
    assert code == 0, log[-3000:]
    assert cli_main(["exp", "mlp", "--devices", "0", "--out", str(tmp_path / "mlp1"), *E2E_ARGS]) == 0
    s1 = json.loads((tmp_path / "mlp1" / "summary.json").read_text())
    s4 = json.loads((run4 / "summary.json").read_text())
    assert s1["test_accuracy"] >= 0.9
    assert abs(s4["test_accuracy"] - s1["test_accuracy"]) <= 1 / 360 + 1e-9  # at most one test image
    m1 = [json.loads(l) for l in (tmp_path / "mlp1" / "metrics.jsonl").read_text().splitlines()]
    m4 = [json.loads(l) for l in (run4 / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["train_loss"] for r in m4], [r["train_loss"] for r in m1], rtol=1e-4)
    assert json.loads((run4 / "config.json").read_text())["devices"] == ":4"


# ---- in this process (one device) ---------------------------------------------------------

class _Dev:
    def __init__(self, i):
        self.id = i


def test_select_devices_rules():
    devs = [_Dev(i) for i in range(4)]
    assert [d.id for d in select_devices("all", devices=devs)] == [0, 1, 2, 3]
    assert [d.id for d in select_devices(" 3 ", devices=devs)] == [3]  # device 3, as CUDA_VISIBLE_DEVICES=3
    assert [d.id for d in select_devices(":3", devices=devs)] == [0, 1, 2]  # a count: the first three
    assert [d.id for d in select_devices("1:3", devices=devs)] == [1, 2]
    assert [d.id for d in select_devices("3,0", devices=devs)] == [3, 0]
    for spec, msg in [("5", "no device 5 (have 0..3)"), (":5", "only 4 device(s)"), (":0", "selects no device"),
                      ("0,0", "duplicate"), ("1,7", "no device 7"), ("gpu", "expected 'all'"),
                      ("-1,2", "no device -1")]:
        with pytest.raises(JaxdlError, match=re.escape(msg)):
            select_devices(spec, devices=devs)


def test_check_divisible():
    assert check_divisible(64, 4) == 16
    with pytest.raises(JaxdlError, match=r"e\.g\. 63 or 66"):
        check_divisible(64, 3)
    with pytest.raises(JaxdlError, match=r"e\.g\. 4\)"):
        check_divisible(3, 4)


def test_allreduce_bytes_parser():
    hlo = """
  %all-reduce.1 = f32[64,10]{1,0} all-reduce(f32[64,10]{1,0} %x), replica_groups={}, to_apply=%add
  %all-reduce.2 = (f32[3]{0}, bf16[2,2]{1,0}) all-reduce(f32[3]{0} %a, bf16[2,2]{1,0} %b), to_apply=%add
  %ars = f32[5]{0} all-reduce-start(f32[5]{0} %c), to_apply=%add
  %ard = f32[5]{0} all-reduce-done(f32[5]{0} %ars)
  %add.3 = f32[64,10]{1,0} add(f32[64,10]{1,0} %all-reduce.1, f32[64,10]{1,0} %y)
"""
    assert allreduce_bytes(hlo) == 64 * 10 * 4 + 3 * 4 + 4 * 2 + 5 * 4


def test_expected_4gpu_model_by_hand():
    from benchmarks.workloads_parallel import expected_4gpu  # the benchmark's model, tested here

    out = expected_4gpu(1_000_000, 0.2)  # 1 MB all-reduced, 0.2 GFLOP a step
    t1 = 0.2e9 / 10e12 * 1e6  # 20 us at 10 TFLOP/s
    pcie = 15 + 2 * 3 / 4 * 1e6 / 25e9 * 1e6  # latency + ring bytes / bandwidth = 75 us
    assert out["gpu_step_us_1"] == pytest.approx(t1) and out["allreduce_us_pcie4_x16"] == pytest.approx(pcie)
    assert out["speedup_4gpu_pcie4_x16"] == pytest.approx(20 / (5 + 75))
    assert out["speedup_4gpu_nvlink3"] == pytest.approx(20 / (5 + 15 + 1.5e6 / 240e9 * 1e6))
    assert out["batch_for_90pct_efficiency_pcie4_x16"] == 34560  # 9 * 75 us = per-GPU compute at 4 * 256 * 33.75


def test_too_many_devices_on_this_process(tmp_path, capsys):
    assert cli_main(["exp", "softmax", "--devices", "2", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: --devices 2: no device 2 (have 0..0)"
    assert cli_main(["exp", "softmax", "--devices", ":2", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: --devices :2: only 1 device(s) available"
