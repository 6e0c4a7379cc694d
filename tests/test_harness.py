"""The harness's pieces, each alone: the loop and a hook of one's own, the config groups and
`@defaults`, the run folder as a context manager, a Task trained end to end."""
from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl import harness
from jaxdl.config import KGEOptions, TrainConfig, build_parser, defaults, doc, parse_config
from jaxdl.errors import JaxdlError
from jaxdl.harness.loop import Loop, fit
from jaxdl.runs import lock
from jaxdl.runs.run import Run
from jaxdl.train.epoch import shuffled_indices, take_rows
from jaxdl.train.optim import OPTIMIZERS
from jaxdl.train.step import init_state


def test_the_loop_calls_a_hook_of_ones_own_in_order_and_stops_when_asked():
    seen = []

    class Recorder:  # a user's hook: no base class, only the methods it needs
        def start(self, loop):
            seen.append(("start", loop.epoch))

        def after_epoch(self, loop):
            seen.append(("epoch", loop.epoch, loop.record["train_x"]))
            loop.stop = loop.epoch == 3

        def close(self, loop):
            seen.append(("close", loop.epoch))

    def epoch_fn(state, key):
        return state + 1, {"x": jnp.arange(4.0) + state, "finite": jnp.ones(4, bool)}

    loop = fit(Loop(state=jnp.asarray(0.0), epoch=0, max_epochs=10), epoch_fn, jax.random.key(0), [Recorder()])
    assert loop.epoch == 3 and float(loop.state) == 3.0
    assert seen == [("start", 0), ("epoch", 1, 1.5), ("epoch", 2, 2.5), ("epoch", 3, 3.5), ("close", 3)]


def _watched(values, *, mode="max", patience=2, min_delta=0.0):
    """Feed `values` (None: an epoch without an evaluation) to EarlyStopping; the Loop after."""
    evaluation = types.SimpleNamespace(params=None)
    stopping = harness.hooks.EarlyStopping(evaluation, "valid_mrr", mode, patience, min_delta)
    loop = Loop(state=None, epoch=0, max_epochs=len(values))
    for epoch, value in enumerate(values, 1):
        loop.epoch, loop.record = epoch, ({} if value is None else {"valid_mrr": value})
        evaluation.params = None if value is None else {"from_epoch": epoch}
        stopping.after_epoch(loop)
        if loop.stop:
            break
    return loop


def test_early_stopping_keeps_the_best_and_stops_after_patience_bad_evaluations():
    loop = _watched([0.1, None, 0.3, 0.3, 0.5, 0.4, None, 0.45, 0.9])  # a tie is not better
    assert (loop.epoch, loop.stop, loop.best.stopped_early) == (8, True, True)
    assert (loop.best.value, loop.best.epoch, loop.best.params, loop.best.bad_evals) == (0.5, 5, {"from_epoch": 5}, 2)
    loop = _watched([0.3, 0.3, 0.3, 0.3])
    assert (loop.epoch, loop.best.epoch, loop.best.stopped_early) == (3, 1, True)
    loop = _watched([0.5, 0.4, 0.3, 0.2], mode="min", patience=None)  # a falling loss; None: never stops
    assert (loop.epoch, loop.stop, loop.best.value, loop.best.epoch, loop.best.bad_evals) == (4, False, 0.2, 4, 0)


def test_early_stopping_counts_a_gain_below_min_delta_as_bad():
    values = [0.30, 0.305, 0.315, 0.32, 0.324]
    loop = _watched(values, patience=2, min_delta=0.01)  # 0.315 beats 0.30 by more than 0.01; the rest do not
    assert (loop.epoch, loop.best.value, loop.best.epoch, loop.best.stopped_early) == (5, 0.315, 3, True)
    loop = _watched(values, patience=2)  # without min_delta each small gain resets the count
    assert (loop.best.epoch, loop.best.stopped_early) == (5, False)
    loop = _watched([2.0, 1.95, 1.5], mode="min", patience=1, min_delta=0.1)
    assert (loop.epoch, loop.best.value, loop.stop) == (2, 2.0, True)
    with pytest.raises(ValueError, match="min_delta"):
        harness.hooks.EarlyStopping(None, "valid_mrr", "max", 2, -0.1)


def test_close_runs_even_when_a_hook_raises():
    closed = []

    class Boom:
        def after_epoch(self, loop):
            raise JaxdlError("boom")

        def close(self, loop):
            closed.append(loop.epoch)

    with pytest.raises(JaxdlError, match="boom"):
        fit(Loop(state=jnp.zeros(()), epoch=0, max_epochs=3), lambda s, k: (s, {"finite": jnp.ones(1, bool)}),
            jax.random.key(0), [Boom()])
    assert closed == [1]


@defaults(lr=(0.03, "the book"), batch_size=10, optimizer="adam")
class _Cfg(TrainConfig):
    """A toy experiment config."""

    width: int = field(default=4, metadata=doc("a width", gt=0))


def test_defaults_keep_help_bounds_and_order_and_name_their_source():
    cfg = _Cfg()
    assert (cfg.lr, cfg.batch_size, cfg.optimizer, cfg.max_epochs) == (0.03, 10, "adam", 10)
    names = [f.name for f in dataclasses.fields(_Cfg)]
    assert names[:3] == ["seed", "out", "resume"] and names[-1] == "width"
    assert names.index("lr") < names.index("devices")  # an inherited field keeps its place
    text = build_parser(_Cfg, "prog").format_help()
    assert "(default: 0.03, the book)" in text
    assert "{" + ",".join(OPTIMIZERS) + "}" in text.replace("\n", "").replace(" ", "")
    with pytest.raises(JaxdlError, match="--lr: must be > 0"):
        parse_config(_Cfg, ["--lr", "0"], "prog")
    with pytest.raises(JaxdlError, match="--optimizer: 'lion' is not one of"):
        parse_config(_Cfg, ["--optimizer", "lion"], "prog")


def test_defaults_refuse_a_field_that_does_not_exist_or_a_second_dataclass():
    with pytest.raises(TypeError, match="no inherited field 'nope'"):
        defaults(nope=1)(type("C", (TrainConfig,), {"__annotations__": {}}))
    with pytest.raises(TypeError, match="instead of @dataclass"):
        defaults(lr=1.0)(dataclasses.dataclass(type("D", (TrainConfig,), {"__annotations__": {}})))


def test_kge_group_is_shared_and_checks_itself():
    @defaults(max_epochs=100)
    class K(KGEOptions, TrainConfig):
        """kge"""

    assert K().model == "transe" and K().max_epochs == 100
    with pytest.raises(JaxdlError, match="--norm applies to TransE only"):
        parse_config(K, ["--model", "rotate", "--norm", "2"], "prog")


def test_a_run_is_a_context_manager_that_releases_its_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))
    with pytest.raises(RuntimeError), Run.open("toy", {"max_epochs": 1}, out=str(tmp_path / "r")) as run:
        assert lock.holds(run.dir)
        raise RuntimeError("the experiment failed")
    assert not lock.holds(tmp_path / "r")


def _toy_task(seed=0):
    X = np.asarray(jax.random.normal(jax.random.key(seed), (64, 3)), np.float32)
    y = X @ np.asarray([1.0, -2.0, 0.5], np.float32)
    opt = optax.sgd(0.1)

    def loss_fn(params, batch, key):
        return jnp.mean((batch["X"] @ params["w"] - batch["y"]) ** 2), {}

    return harness.Task(
        state=init_state({"w": jnp.zeros(3)}, opt), loss_fn=loss_fn, optimizer=opt,
        epoch=harness.Batches({"X": X, "y": y}, partial(shuffled_indices, batch_size=16), take_rows, 16),
        evaluate=lambda p: {"w_error": float(np.abs(p["w"] - np.asarray([1.0, -2.0, 0.5])).max())},
        monitor=("w_error", "min"), report=lambda run, result: {"w": np.asarray(result.best_params["w"]).tolist()})


@dataclasses.dataclass
class _ToyCfg(TrainConfig):
    """toy"""


def test_run_trains_a_task_and_writes_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))
    cfg = _ToyCfg(max_epochs=6, ckpt_every=2, out=str(tmp_path / "r"), progress=False, devices="0")
    run = harness.run(cfg, "toy", _toy_task)
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["finished"] is True and summary["epochs"] == 6
    np.testing.assert_allclose(summary["w"], [1.0, -2.0, 0.5], atol=0.05)
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6] and all("w_error" in r for r in rows)
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "6"]
    assert not lock.holds(run.dir)
    # extended by resuming: epochs 7-8 continue from the checkpoint of epoch 6
    longer = harness.run(dataclasses.replace(cfg, out="", resume=str(run.dir), max_epochs=8), "toy", _toy_task)
    rows = [json.loads(line) for line in (longer.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9))


def test_bad_settings_are_refused_before_the_run_folder_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))
    cfg = _ToyCfg(batch_size=1000, out=str(tmp_path / "r"), progress=False, devices="0")
    with pytest.raises(JaxdlError, match="--batch-size 1000: larger than the 64 training examples"):
        harness.run(cfg, "toy", lambda: dataclasses.replace(_toy_task(), epoch=harness.Batches(
            _toy_task().epoch.data, partial(shuffled_indices, batch_size=1000), take_rows, 1000)))
    assert not (tmp_path / "r").exists()


def test_tensorboard_holds_what_metrics_jsonl_holds(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))
    cfg = _ToyCfg(max_epochs=4, ckpt_every=2, out=str(tmp_path / "r"), progress=False, devices="0")
    run = harness.run(cfg, "toy", _toy_task)
    events = EventAccumulator(str(run.dir / "tensorboard"))
    events.Reload()
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(events.Tags()["scalars"]) == ["train/loss", "w/error"]
    for tag, key in (("train/loss", "train_loss"), ("w/error", "w_error")):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [r["epoch"] for r in rows]
        np.testing.assert_allclose([v for _, v in got], [r[key] for r in rows], rtol=1e-6)


def test_off_a_terminal_each_epoch_is_one_plain_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))
    cfg = _ToyCfg(max_epochs=3, out=str(tmp_path / "r"), devices="0", tensorboard=False)
    harness.run(cfg, "toy", lambda: dataclasses.replace(_toy_task(), label="toy run"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("toy run")]
    assert [line.split()[3] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(" loss " in line and " w_error " in line and line.endswith(" s") for line in lines)
    assert not (tmp_path / "r" / "tensorboard").exists()


def test_cli_suggests_what_was_meant(cli):
    out = cli("exp", "sofmax")
    assert out.returncode == 2 and "did you mean softmax?" in out.stderr
    out = cli("exp", "mlp", "--max-epoch", "3")
    assert out.returncode == 2 and out.stderr.strip().startswith("error: unknown flag --max-epoch; did you mean "
                                                                 "--max-epochs?")
    out = cli("lst")
    assert out.returncode == 2 and "did you mean list?" in out.stderr
    out = cli("list")
    assert out.returncode == 0 and any(line.startswith("softmax") and "Softmax regression" in line
                                       for line in out.stdout.splitlines())
    help_text = cli("exp", "transe", "--help").stdout.replace("\n", "").replace(" ", "")
    assert "--model{transe,rotate,distmult,complex}" in help_text
    assert "--optimizer{sgd,optax_sgd,momentum,adam,adamw}" in help_text


@pytest.mark.slow
def test_the_compile_cache_is_filled_once_and_read_back(tmp_path, cli):
    """A second run with the same shapes finds every program in the cache (no new entry) and
    trains to the same bytes; --no-compile-cache leaves no cache behind."""
    cache = tmp_path / "cache"
    env = {"JAXDL_COMPILE_CACHE": str(cache), "JAXDL_REGISTRY": str(tmp_path / "registry")}
    args = ["exp", "mlp", "--max-epochs", "2", "--hidden", "16", "--no-progress", "--no-tensorboard"]
    assert cli(*args, "--out", str(tmp_path / "a"), env=env).returncode == 0
    entries = sorted(p.name for p in cache.glob("*-cache"))
    assert entries
    assert cli(*args, "--out", str(tmp_path / "b"), env=env).returncode == 0
    assert sorted(p.name for p in cache.glob("*-cache")) == entries
    assert (tmp_path / "a/metrics.jsonl").read_bytes() == (tmp_path / "b/metrics.jsonl").read_bytes()
    other = {**env, "JAXDL_COMPILE_CACHE": str(tmp_path / "unused")}
    assert cli(*args, "--no-compile-cache", "--out", str(tmp_path / "c"), env=other).returncode == 0
    assert not (tmp_path / "unused").exists()


def test_an_in_process_run_leaves_jax_cache_settings_as_they_were(tmp_path, monkeypatch):
    """The cache is on for the run's own programs only: a notebook (or this test process)
    keeps its settings, and programs compiled afterwards are not written to the run's cache."""
    import jax

    from jaxdl.cli import main as cli_main

    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXDL_COMPILE_CACHE", str(cache))
    before = jax.config.jax_compilation_cache_dir
    assert cli_main(["exp", "linreg", "--max-epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert jax.config.jax_compilation_cache_dir == before
    filled = sorted(cache.glob("*-cache"))
    assert filled
    jax.jit(lambda x: x * 3.25 + 1.0)(jax.numpy.arange(7.0)).block_until_ready()  # a program of this process's own
    assert sorted(cache.glob("*-cache")) == filled
