"""jaxdl from Python (a notebook, a script): run any experiment, read any run folder.

    import jaxdl
    result = jaxdl.run("softmax", max_epochs=5)     # the options are the experiment's flags
    result.summary["test_accuracy"], result.params, result.show()
    again = jaxdl.load_run(result.dir)               # any run folder, finished or not

Each `run` call is a new run folder (runs/NAME/<timestamp>) unless `out=` or `resume=` say
otherwise, so running a notebook cell twice just runs again.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl.cli import load_experiment
from jaxdl.config import make_config
from jaxdl.devices import compile_cache
from jaxdl.errors import JaxdlError
from jaxdl.runs import signals
from jaxdl.runs.run import CKPT_DIR, check_run_folder, checkpoint_epochs, read_json, read_jsonl


@dataclass
class RunResult:
    """A run folder's contents: config, metrics rows, summary, the saved parameters (those of
    the best evaluation when a metric was monitored, else the last) and the figures."""

    dir: Path
    config: dict
    metrics: list[dict]
    summary: dict
    params: Any = None
    figures: dict[str, Path] = field(default_factory=dict)

    def show(self) -> None:
        """Show the figures inline in a notebook (else print where they are)."""
        try:
            from IPython.display import Image, display  # deferred: only a notebook has IPython
        except ImportError:
            print("\n".join(str(p) for p in self.figures.values()))
            return
        for path in self.figures.values():
            display(Image(filename=str(path)))


def _saved_params(run_dir: Path):
    """The parameters of the newest checkpoint (numpy), or None when there is none."""
    epochs = checkpoint_epochs(run_dir)
    if not epochs:
        return None
    import orbax.checkpoint as ocp  # deferred: only reading a checkpoint needs orbax

    folder = (run_dir / CKPT_DIR / str(epochs[-1]) / "state").resolve()
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(folder)
    best = tree.get("best_params")
    return jax.tree.map(np.asarray, best if best is not None else tree["state"]["params"])


def load_run(run_dir) -> RunResult:
    """Everything a run folder holds, for reading from Python."""
    run_dir = Path(run_dir)
    config = check_run_folder(run_dir, "load_run")
    return RunResult(run_dir, config, read_jsonl(run_dir / "metrics.jsonl"),
                     read_json(run_dir / "summary.json") or {}, _saved_params(run_dir),
                     {p.stem: p for p in sorted(run_dir.glob("*.png"))})


def run(experiment: str, **options) -> RunResult:
    """Run `experiment` (a name from `python -m jaxdl list`, or a path to an experiment file)
    with `options` (its Config's fields: `max_epochs=5`, `out="runs/mine"`); returns the
    finished run. Ctrl-C (a kernel interrupt) finishes the epoch, checkpoints and raises
    `jaxdl.errors.Interrupted`; resume with `resume=<its folder>`."""
    module = load_experiment(experiment)
    cfg = make_config(module.Config, options)
    cached = compile_cache.enabled() if getattr(cfg, "compile_cache", False) else contextlib.nullcontext()
    with signals.graceful(), cached:
        done = module.main(cfg)
    if done is None:
        raise JaxdlError(f"{experiment}: its main returned no run folder")
    return load_run(done.dir)
