"""Where experiments live: one copyable file each, `experiments/NAME.py`, loaded from its file
(no package to install, no edit of sys.path)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from jaxdl.errors import JaxdlError

EXPERIMENTS_ENV = "JAXDL_EXPERIMENTS"


def experiments_dir() -> Path:
    """Where experiment files are found: $JAXDL_EXPERIMENTS, else ./experiments, else the
    experiments/ folder beside the installed package (a checkout)."""
    if os.environ.get(EXPERIMENTS_ENV):
        return Path(os.environ[EXPERIMENTS_ENV])
    here = Path.cwd() / "experiments"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "experiments"


def experiment_names() -> list[str]:
    """The experiments: every `NAME.py` in `experiments_dir()` not starting with '_'."""
    folder = experiments_dir()
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []


def load_experiment(name: str):
    """The module of experiment `name` (or of a path to an experiment file), loaded from its
    file: each experiment is a self-contained, copyable file."""
    path = Path(name) if name.endswith(".py") else experiments_dir() / f"{name}.py"
    if not path.is_file():
        raise JaxdlError(f"unknown experiment {name!r}; known: {', '.join(experiment_names())}")
    module_name = f"jaxdl_experiment_{path.stem}"
    if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
