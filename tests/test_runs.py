"""Run management in-process: the loop's checkpoints, resume, signals and NaN guard; the lock;
checkpoint integrity; the registry and `ps`. (End-to-end runs of real experiments under real
signals are in test_resume.py.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import xla_flags

from jaxdl.devices import Placed
from jaxdl.errors import Interrupted, JaxdlError, NumericalFault
from jaxdl.harness import Task
from jaxdl.harness.runner import train
from jaxdl.runs import checkpoint, lock, ps, registry, signals
from jaxdl.runs.run import Run, checkpoint_epochs
from jaxdl.train.epoch import make_scan_epoch, shuffled_batches
from jaxdl.train.step import init_state, make_train_step

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal handlers need the main thread")


@pytest.fixture(autouse=True)
def _registry(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))


@pytest.fixture(autouse=True)
def _sigint_as_on_a_terminal():
    """Ctrl-C as a terminal delivers it: a suite started in the background by a non-interactive
    shell inherits SIGINT ignored, and the loop rightly leaves an ignored signal ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _loss(params, batch, key):
    logits = batch["X"] @ params["w"] + params["b"]
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1))
    return loss, {}


_X = np.asarray(jax.random.normal(jax.random.key(0), (40, 3)))
_DATA = {"X": _X, "y": (_X[:, 0] > 0).astype(np.int32)}
_OPT = optax.adam(0.1)  # an optimizer with state, so resuming must restore it too
_EPOCH = make_scan_epoch(make_train_step(_loss, _OPT), partial(shuffled_batches, batch_size=8))


def _state():
    return init_state({"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}, _OPT)


def _train(run, *, epoch_fn=None, seed=0, max_epochs=6, ckpt_every=2, place=lambda s: s):
    """The harness's training of a toy task with this epoch function (no devices involved)."""
    cfg = SimpleNamespace(seed=seed, max_epochs=max_epochs, ckpt_every=ckpt_every, progress=False)
    placed = Placed(epoch_fn or (lambda s, k: _EPOCH(s, _DATA, k)), place, jax.device_get, layout=None)
    return train(run, cfg, Task(state=_state(), epoch=None), placed, hint=f"--resume {run.dir}", label="toy")


def _fit(run_dir, max_epochs=6, *, epoch_fn=None, seed=0, resume=False, ckpt_every=2):
    with Run.open("toy", {"max_epochs": max_epochs}, out="" if resume else str(run_dir),
                  resume=str(run_dir) if resume else "") as run:
        result = _train(run, epoch_fn=epoch_fn, seed=seed, max_epochs=max_epochs, ckpt_every=ckpt_every)
        run.write_summary({"finished": True, "epochs": result.epochs_done})
        return run, result


def _signal_during(epoch_no, signum=signal.SIGTERM, times=1):
    """An epoch function that sends itself `signum` while computing epoch `epoch_no` (1-based)."""
    count = {"n": 0}

    def epoch_fn(state, key):
        count["n"] += 1
        if count["n"] == epoch_no:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return _EPOCH(state, _DATA, key)

    return epoch_fn


def _params(result):
    return jax.device_get(result.state.params)


def _same_tree(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    _, ref = _fit(tmp_path / "ref")
    with pytest.raises(Interrupted) as e:  # SIGTERM mid-epoch 3: epoch 3 finishes, is saved
        _fit(tmp_path / "r", epoch_fn=_signal_during(3))
    assert e.value.signum == signal.SIGTERM and "at epoch 3" in str(e.value) and "--resume" in str(e.value)
    assert checkpoint_epochs(tmp_path / "r")[-1] == 3 and not lock.read_lock(tmp_path / "r")
    with pytest.raises(Interrupted):  # SIGINT in the first resumed epoch (4, after checkpoint 3)
        _fit(tmp_path / "r", epoch_fn=_signal_during(1, signal.SIGINT), resume=True)
    assert checkpoint_epochs(tmp_path / "r")[-1] == 4
    _, res = _fit(tmp_path / "r", resume=True)
    assert _same_tree(_params(ref), _params(res)) and int(res.state.step) == int(ref.state.step)
    assert _same_tree(jax.device_get(ref.state.opt_state), jax.device_get(res.state.opt_state))
    assert (tmp_path / "r/metrics.jsonl").read_bytes() == (tmp_path / "ref/metrics.jsonl").read_bytes()
    # a finished run resumed with a larger max_epochs extends to the longer run
    _, longer = _fit(tmp_path / "long", max_epochs=8)
    _, extended = _fit(tmp_path / "ref", max_epochs=8, resume=True)
    assert _same_tree(_params(longer), _params(extended)) and extended.epochs_done == 8
    assert (tmp_path / "ref/metrics.jsonl").read_bytes() == (tmp_path / "long/metrics.jsonl").read_bytes()


def test_second_sigint_stops_at_once(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "r", epoch_fn=_signal_during(2, signal.SIGINT, times=2))
    assert checkpoint_epochs(tmp_path / "r") == []  # ckpt_every 2: nothing saved before epoch 2 ended


def test_signal_outside_the_loop_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as e, signals.graceful():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):  # the handler runs at the next bytecode; this never finishes
            pass
        raise AssertionError("not interrupted")
    assert e.value.signum == signal.SIGTERM and signals.BEFORE_TRAINING in str(e.value)
    assert signal.getsignal(signal.SIGTERM) is before


def test_signal_before_the_first_epoch_saves_nothing(tmp_path):
    def epoch_fn(state, key):
        raise AssertionError("should not train")

    def place(state):  # a signal that arrives while the restored state is being placed
        os.kill(os.getpid(), signal.SIGTERM)
        return state

    with Run.open("toy", {"max_epochs": 3}, out=str(tmp_path / "r")) as run:
        with pytest.raises(Interrupted, match="before the first epoch finished; nothing to checkpoint"):
            _train(run, epoch_fn=epoch_fn, max_epochs=3, place=place)


def test_nan_stops_naming_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path):
    def epoch_fn(state, key):
        state, metrics = _EPOCH(state, _DATA, key)
        if int(state.step) > 15:  # epoch 4 (5 steps an epoch): the second step turns NaN
            metrics = {**metrics, "finite": jnp.arange(5) != 1}
        return state, metrics

    with pytest.raises(NumericalFault) as e:
        _fit(tmp_path / "r", epoch_fn=epoch_fn, ckpt_every=1)
    msg = str(e.value)
    assert "epoch 4, step 2 of 5" in msg and "last good checkpoint: epoch 3" in msg and "--debug-nans" in msg
    assert checkpoint_epochs(tmp_path / "r") == [2, 3]
    assert [r["epoch"] for r in Run(tmp_path / "r", "toy").metrics()] == [1, 2, 3]
    assert registry.lookup(tmp_path / "r")["note"] == "NaN/inf at epoch 4, step 2"


def test_nonfinite_parameters_are_never_checkpointed(tmp_path):
    def epoch_fn(state, key):  # finite loss and gradients, but the last update of epoch 2 overflows
        state, metrics = _EPOCH(state, _DATA, key)
        if int(state.step) == 10:
            state = state._replace(params={**state.params, "b": state.params["b"] * jnp.inf})
        return state, metrics

    with pytest.raises(NumericalFault, match="parameters became NaN/inf in epoch 2"):
        _fit(tmp_path / "r", epoch_fn=epoch_fn)
    assert checkpoint_epochs(tmp_path / "r") == []


def test_resume_refuses_another_seed_or_fewer_epochs(tmp_path):
    _fit(tmp_path / "r", max_epochs=4)
    with pytest.raises(JaxdlError, match="another seed"):
        _fit(tmp_path / "r", max_epochs=5, seed=1, resume=True)
    with pytest.raises(JaxdlError, match="reached epoch 4; give --max-epochs 4 or more"):
        _fit(tmp_path / "r", max_epochs=3, resume=True)
    with pytest.raises(JaxdlError, match="holds a finished run"):
        _fit(tmp_path / "r", max_epochs=4)


@pytest.mark.parametrize("damage", ["silent", "bytes"])
def test_checkpoint_damage_is_detected_and_the_intact_older_one_offered(tmp_path, damage):
    _fit(tmp_path / "r", max_epochs=4)
    assert checkpoint_epochs(tmp_path / "r") == [2, 4]
    ckpt_dir = tmp_path / "r/checkpoints"
    if damage == "silent":  # arrays changed under their record (orbax alone would restore them)
        mngr = checkpoint.manager(ckpt_dir)
        template = {"state": jax.device_get(_state()), "best_params": jax.device_get(_state().params),
                    "key": jax.random.key_data(jax.random.key(0))}
        tree, meta, _ = checkpoint.restore(mngr, template)
        tree["state"].params["w"] = tree["state"].params["w"] + np.float32(1e-6)
        shutil.rmtree(ckpt_dir / "4")
        mngr = checkpoint.manager(ckpt_dir)
        import orbax.checkpoint as ocp

        mngr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
                  force=True)
    else:  # a byte flipped on disk
        target = ckpt_dir / "4/state/manifest.ocdbt"
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 0x55
        target.write_bytes(bytes(raw))
    with pytest.raises(JaxdlError) as e:
        _fit(tmp_path / "r", max_epochs=6, resume=True)
    msg = str(e.value)
    assert f"checkpoint {ckpt_dir / '4'} is corrupt" in msg and "checkpoint 2 is intact" in msg
    assert ("its arrays do not match their SHA-256" in msg) == (damage == "silent")
    assert ("its file state/manifest.ocdbt does not match its SHA-256" in msg) == (damage == "bytes")
    assert f"mv {ckpt_dir / '4'} {ckpt_dir / '4.corrupt'}" in msg
    # follow the advice: move it aside, resume from 2, and end where an undamaged run ends
    os.rename(ckpt_dir / "4", ckpt_dir / "4.corrupt")
    _, resumed = _fit(tmp_path / "r", max_epochs=6, resume=True)
    _, ref = _fit(tmp_path / "ref", max_epochs=6)
    assert _same_tree(_params(ref), _params(resumed))
    assert (tmp_path / "r/metrics.jsonl").read_bytes() == (tmp_path / "ref/metrics.jsonl").read_bytes()


def test_checkpoint_of_other_shapes_is_named_not_called_corrupt(tmp_path):
    mngr = checkpoint.manager(tmp_path / "c")
    checkpoint.save(mngr, 1, {"w": np.zeros((3, 2), np.float32)}, {"epoch": 1})
    with pytest.raises(JaxdlError, match=r"does not fit this config: \['w'\] is float32\[3,2\] in the checkpoint, "
                                         r"float32\[4,2\] now"):
        checkpoint.restore(mngr, {"w": np.zeros((4, 2), np.float32)})


_KILL_MID_SAVE = """
import os, signal, sys, numpy as np
from jaxdl.runs import checkpoint
import orbax.checkpoint._src.path.atomicity as atomicity
mngr = checkpoint.manager(sys.argv[1])
checkpoint.save(mngr, 1, {"w": np.full((50, 50), 1.0, np.float32)}, {"epoch": 1})
async def die(*args, **kwargs):  # every array of checkpoint 2 is written; kill -9 before the rename
    os.kill(os.getpid(), signal.SIGKILL)
atomicity.async_path.rename = die
checkpoint.save(mngr, 2, {"w": np.full((50, 50), 2.0, np.float32)}, {"epoch": 2})
"""


def test_kill_9_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_SAVE, str(ckpt_dir)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p.name for p in ckpt_dir.iterdir()]
    assert "1" in leftovers and "2" not in leftovers and any("tmp" in n for n in leftovers), leftovers
    assert checkpoint_epochs(tmp_path) == [1]
    mngr = checkpoint.manager(ckpt_dir)
    tree, meta, epoch = checkpoint.restore(mngr, {"w": np.zeros((50, 50), np.float32)})
    assert epoch == 1 and meta["epoch"] == 1 and (tree["w"] == 1.0).all()
    checkpoint.save(mngr, 2, {"w": np.full((50, 50), 3.0, np.float32)}, {"epoch": 2})  # and saving goes on
    assert checkpoint.restore(mngr, {"w": np.zeros((50, 50), np.float32)})[2] == 2


def test_torn_metrics_line_is_dropped_and_recomputed_epochs_checked(tmp_path, capsys):
    run = Run.open("toy", {"max_epochs": 3}, out=str(tmp_path / "r"))
    run.append_metrics({"epoch": 1, "train_loss": 0.5})
    run.append_metrics({"epoch": 1, "train_loss": 0.5})  # recomputed after a resume: not duplicated
    run.append_metrics({"epoch": 1, "train_loss": 0.25})  # recomputed differently: kept, with a warning
    run.close()
    assert "epoch 1 recomputed after resuming differs" in capsys.readouterr().err
    with open(tmp_path / "r/metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # kill -9 mid-append
    run = Run.open("toy", {"max_epochs": 3}, resume=str(tmp_path / "r"))
    assert "dropped a torn last line" in capsys.readouterr().err
    run.append_metrics({"epoch": 2, "train_loss": 0.4})
    run.close()
    lines = (tmp_path / "r/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


_HOLD_LOCK = """
import sys, time
from jaxdl.runs import lock
lock.acquire(sys.argv[1], {"experiment": "holder", "devices": ["cpu:0"]})
print("locked", flush=True)
time.sleep(600)
"""


def test_lock_refuses_live_stopped_owner_and_takes_over_dead_one(tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(JaxdlError, match=rf"in use by pid {holder.pid} \(running\)"):
            lock.acquire(run_dir, {})
        holder.send_signal(signal.SIGSTOP)  # Ctrl-Z: still holds the folder
        while lock.process_state(holder.pid) != "stopped":
            time.sleep(0.01)
        with pytest.raises(JaxdlError, match=rf"in use by pid {holder.pid} \(stopped\); stop it with"):
            Run.open("toy", {}, resume="", out=str(run_dir))
        row = ps.describe(run_dir)
        assert row["state"] == "stopped" and row["pid"] == holder.pid and row["devices"] == ["cpu:0"]
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / "run.lock").exists()  # kill -9 leaves the file; the kernel dropped the flock
    lock.acquire(run_dir, {"experiment": "toy"})
    assert f"taking over the stale lock of pid {holder.pid} (dead)" in capsys.readouterr().err
    assert lock.read_lock(run_dir)["pid"] == os.getpid()
    lock.release(run_dir)
    assert not (run_dir / "run.lock").exists()


def test_lock_is_not_fooled_by_a_reused_pid(tmp_path):
    (tmp_path / "run.lock").write_text(json.dumps({"pid": os.getpid(), "create_time": 12345.0}))
    assert lock.owner_state(lock.read_lock(tmp_path)) == "dead"
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(JaxdlError, match="locked by pid 1 on host elsewhere.example"):
        lock.acquire(tmp_path, {})
    (tmp_path / "run.lock").write_bytes(b"\xff\xfe not json")
    lock.acquire(tmp_path, {})  # unreadable: nobody to name, taken silently
    lock.release(tmp_path)


def test_ps_lists_registered_runs_with_state_epoch_and_note(tmp_path, capsys):
    _fit(tmp_path / "done", max_epochs=2)
    with pytest.raises(Interrupted):
        _fit(tmp_path / "cut", max_epochs=4, epoch_fn=_signal_during(1))
    (tmp_path / "gone").mkdir()
    registry.register(tmp_path / "gone", {"pid": 1, "experiment": "x"})  # folder without a run: dropped
    assert ps.main_ps([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["PID", "STATE", "EXPERIMENT", "EPOCH", "CKPT", "DEVICES", "STARTED", "RUN", "NOTE"]
    assert len(out) == 3 and not any("gone" in line for line in out)
    done = next(line for line in out if str(tmp_path / "done") in line)
    assert done.split()[1:5] == ["finished", "toy", "2/2", "2"] and done.endswith("finished")
    cut = next(line for line in out if str(tmp_path / "cut") in line)
    assert cut.split()[1:5] == ["dead", "toy", "1/4", "1"] and cut.endswith("SIGTERM at epoch 1")
    assert ps.main_ps(["--json", str(tmp_path / "cut")]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == 1
    assert ps.main_stop([str(tmp_path / "cut")]) == 0  # not running: says so, resumable
    assert "not running; checkpoint: epoch 1; resume with" in capsys.readouterr().out
    with pytest.raises(JaxdlError, match="not a run folder"):
        ps.main_stop([str(tmp_path / "gone")])


def test_devices_lists_what_jax_sees():
    env = {**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=3"), "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "jaxdl", "devices"], capture_output=True, text=True, env=env,
                          timeout=120)
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and rows[0] == ["index", "platform", "kind", "memory"], proc
    assert [r[:3] for r in rows[1:]] == [[str(i), "cpu", "cpu"] for i in range(3)], proc
