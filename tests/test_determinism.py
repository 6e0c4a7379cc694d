"""Every experiment, run twice with the same seed on its SMOKE_ARGS, gives identical results.

Found automatically: every module in experiments/ (`jaxdl.cli.experiment_names()`). One run
is a fresh interpreter with another PYTHONHASHSEED, the other this process, so neither jit
caches nor Python's set/dict-of-str ordering can make them agree by accident (the second
reads the first's programs from the compilation cache only where it traced the same HLO).
Compared: metrics.jsonl byte for byte (where the experiment trains), else the JSON results
it writes, without wall-clock fields. This doubles as the smoke test of every experiment:
both runs must exit 0 and leave a finished run folder. The loops that
tests/test_kill_safety.py runs twice (a reference and a killed-and-resumed run, in processes
with different hash seeds, every sub-run's metrics compared byte for byte) are compared there.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from test_kill_safety import LOOPS as KILLED_AND_RESUMED
from jaxdl.cli import experiment_names, load_experiment
from jaxdl.cli import main as cli_main

pytestmark = pytest.mark.slow

_WALL_CLOCK = re.compile(r"second|time|_ms$|per_s|throughput|speed|elapsed|duration")


def _without_wall_clock(obj, run_dir: str):
    if isinstance(obj, dict):
        return {k: _without_wall_clock(v, run_dir) for k, v in obj.items() if not _WALL_CLOCK.search(k)}
    if isinstance(obj, list):
        return [_without_wall_clock(v, run_dir) for v in obj]
    if isinstance(obj, str):
        return obj.replace(run_dir, "<run>")
    return obj


def _results(run_dir) -> dict[str, object]:
    """What must agree: metrics.jsonl's bytes, else every JSON result file, wall clock removed."""
    if (run_dir / "metrics.jsonl").is_file():
        return {"metrics.jsonl": (run_dir / "metrics.jsonl").read_bytes()}
    skip = {"config.json", "run.json"}  # the run folder's own path, pids, start times
    return {p.name: _without_wall_clock(json.loads(p.read_text()), str(run_dir))
            for p in sorted(run_dir.glob("*.json")) if p.name not in skip}


@pytest.mark.parametrize("name", [name for name in experiment_names() if name not in KILLED_AND_RESUMED])
def test_same_seed_same_results(name, tmp_path, monkeypatch, capsys):
    module = load_experiment(name)
    fields = {f.name for f in dataclasses.fields(module.Config)}
    args = ["exp", name, *module.SMOKE_ARGS] + (["--no-progress"] if "progress" in fields else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "12345",
           "JAXDL_REGISTRY": str(tmp_path / "registry")}
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))
    other = subprocess.run([sys.executable, "-m", "jaxdl", *args, "--out", str(tmp_path / "b")], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    assert other.returncode == 0, other.stderr
    assert cli_main([*args, "--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    assert a, f"{name} wrote neither metrics.jsonl nor JSON results"
    assert a == b
    summary = tmp_path / "a" / "summary.json"
    if summary.is_file():
        assert json.loads(summary.read_text()).get("finished", True) is True
