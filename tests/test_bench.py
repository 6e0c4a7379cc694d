"""`make bench` (`python -m benchmarks`, from the repository root): the quick run end to end
(schema of bench.json), the harness's handling of bad flags and failing workloads, the FLOP
counts behind `peak_fraction`, and that the library itself never imports the benchmarks."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from benchmarks import cli as bench_cli
from benchmarks import workloads_core as core
from benchmarks import workloads_fb15k as wfb
from benchmarks.__main__ import run as bench_main
from benchmarks.registry import BenchContext, Workload, discover
from jaxdl.cli import main as jaxdl_main
from jaxdl.models import dense
from jaxdl.train.optim import sgd
from jaxdl.train.step import init_state, make_train_step
from jaxdl.losses.classification import classification_loss

REPO = Path(__file__).resolve().parent.parent
CORE = ("linreg_step", "softmax_step", "mlp_step", "softmax_epoch")
ROOMS = ("core", "fb15k", "fede", "interpret", "kge", "parallel", "startup", "word2vec")
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def run_bench(*args: str, timeout: float = 1800):
    """`python -m benchmarks ARGS` in a subprocess from the repository root (the quick run takes
    minutes on a small, shared machine: the timeout is only a guard against a hang)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.mark.slow
def test_quick_bench_of_the_other_rooms_runs_every_workload(tmp_path):
    """The rooms beside core, briefly (in a test of their own, so the suite's processes
    share the work): no workload fails."""
    out = tmp_path / "bench"
    others = [room for room in ROOMS if room != "core"]
    proc = run_bench("--quick", "--only", ",".join(others), "--out", str(out), "--threads", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = json.loads((out / "bench.json").read_text())["workloads"]
    assert {w.name for w in discover() if w.group != "core"} == {r["name"] for r in records}
    failed = {r["name"]: r["error"] for r in records if "error" in r}
    assert not failed, failed
    # The FedE workload's five rounds time one computation: the vmapped (packed and padded) and
    # sequential rounds and the loop of steps give the per-client loop's server table.
    fede = next(r for r in records if r["name"] == "fede_round_10_clients")
    assert fede["round_change_max_abs"] > 1e-3  # the round trains
    assert fede["loop_steps_vs_loop_max_abs_diff"] == 0
    assert max(fede[f"{name}_vs_loop_max_abs_diff"] for name in ("vmap", "padded", "sequential")) <= 1e-6


@pytest.mark.slow
def test_quick_bench_writes_the_table_and_bench_json(tmp_path):
    out = tmp_path / "bench"
    proc = run_bench("--quick", "--only", "core", "--out", str(out), "--threads", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)  # the folder, last
    assert "% of peak" in proc.stdout and "speed-up" in proc.stdout
    bench = json.loads((out / "bench.json").read_text())
    assert bench["peak_gflops"] > 0 and bench["threads"] == 2 and bench["threads_pinned"] is True
    assert bench["quick"] is True and {"cpu", "jax", "loadavg_start"} <= set(bench["machine"])
    records = {r["name"]: r for r in bench["workloads"]}
    assert set(CORE) <= set(records)
    failed = {name: r["error"] for name, r in records.items() if "error" in r}
    assert not failed, failed
    for name in CORE:
        r = records[name]
        for key in ("eager_ms", "jit_ms", "compile_ms", "gflop", "peak_fraction", "speedup"):
            assert isinstance(r[key], float) and r[key] > 0, (name, key, r.get(key))
        assert r["jit_p10_ms"] <= r["jit_ms"] <= r["jit_p90_ms"]
        assert r["peak_fraction"] == pytest.approx(r["gflop"] / (r["jit_ms"] / 1e3) / bench["peak_gflops"])
    epoch = records["softmax_epoch"]
    assert epoch["scan_ms"] == epoch["jit_ms"] and epoch["loop_ms"] > 0 and epoch["scan_copy_ms"] > 0
    assert epoch["scan_vs_loop_max_abs_diff"] < 1e-5  # both forms train identically
    if HAVE_TORCH:
        assert records["mlp_step"]["peer_torch_eager_ms"] > 0
        assert records["mlp_step"]["ratio_torch_eager"] == pytest.approx(
            records["mlp_step"]["jit_ms"] / records["mlp_step"]["peer_torch_eager_ms"])
        assert epoch["peer_torch_dataloader_ms"] > 0 and epoch["peer_torch_slicing_ms"] > 0
    assert records["matcalc_jacobian"]["max_abs_err_vs_closed_form"] < 1e-5
    assert (out / "bench.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["finished"] is True


def test_a_failing_workload_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    def boom(ctx):
        raise RuntimeError("kaput")

    def fine(ctx):
        assert ctx.quick and ctx.peak_gflops > 0
        return {"jit_ms": 2.0, "eager_ms": 50.0, "gflop": 0.001, "peer_other_ms": 4.0}

    monkeypatch.setattr(bench_cli, "discover", lambda: [Workload("boom", boom), Workload("fine", fine)])
    assert bench_cli.main(["--quick", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path)
    records = {r["name"]: r for r in json.loads((tmp_path / "bench.json").read_text())["workloads"]}
    assert records["boom"]["error"] == "RuntimeError: kaput" and "Traceback" in records["boom"]["traceback"]
    fine_r = records["fine"]
    assert fine_r["speedup"] == 25.0 and fine_r["ratio_other"] == 0.5
    assert fine_r["achieved_gflops"] == pytest.approx(0.5)


@pytest.mark.parametrize("argv, message", [
    (["--only", "no_such_workload"], "unknown workload 'no_such_workload'"),
    (["--threads", "0"], "--threads 0"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, message, capsys):
    assert bench_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_the_library_cli_sends_bench_to_the_benchmarks_folder(capsys):
    assert jaxdl_main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "benchmarks/" in err and "make bench" in err


def test_every_room_is_discovered_from_the_benchmarks_folder():
    found = discover()
    assert not [w.name for w in found if w.name.endswith("(import)")]  # every room imported
    assert {w.group for w in found} == set(ROOMS)
    assert set(CORE) <= {w.name for w in found}


def test_the_library_never_imports_benchmarks_or_experiments():
    imports = re.compile(r"^\s*(from|import)\s+(benchmarks|experiments)\b", re.MULTILINE)
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / "jaxdl").rglob("*.py"))
                 if imports.search(p.read_text())]
    assert not offenders, offenders


def test_only_selects_by_name_or_group():
    found = [Workload("a", None, "core"), Workload("b", None, "kge"), Workload("c", None, "kge")]
    assert [w.name for w in bench_cli.select(found, "a")] == ["a"]
    assert [w.name for w in bench_cli.select(found, "kge")] == ["b", "c"]
    assert [w.name for w in bench_cli.select(found, "")] == ["a", "b", "c"]


@pytest.mark.parametrize("hidden", [[], [256], [64, 32]])
def test_flop_count_matches_xla_cost_analysis(hidden):
    """The hand count (matmuls only) against XLA's count of the compiled step (which also
    counts the element-wise work, well under 2% here)."""
    key = jax.random.key(0)
    state = init_state(dense.mlp_init(key, 784, hidden, 10), sgd(0.1))
    batch = core.classification_data(key, 256, 784, 10)
    step = make_train_step(classification_loss(dense.mlp_apply), sgd(0.1))
    xla_flops = jax.jit(step).lower(state, batch, key).compile().cost_analysis()["flops"]
    hand = core.dense_train_gflop(256, [784, *hidden, 10]) * 1e9
    assert hand == pytest.approx(xla_flops, rel=0.02)
    assert hand < xla_flops  # what the hand count leaves out is extra work, never less


@pytest.mark.parametrize("quick, reason", [(True, "quick mode"), (False, "data not found")])
def test_fb15k_workloads_skip_with_a_note_in_quick_mode_or_without_the_graphs(quick, reason):
    """The FB15k-237 workloads take minutes: quick mode, or a checkout without ../shared,
    skips each of them cleanly (a record marked skipped, a note), building nothing."""
    ctx = BenchContext(quick=quick, threads=1, shared_data=None)
    found = wfb.workloads()
    assert {w.group for w in found} == {"fb15k"}
    for w in found:
        record = w.run(ctx)
        assert record["name"] == w.name and record["skipped"].startswith(reason)
    assert ctx.notes and len(ctx.notes) == (1 if quick else len(found))
