"""Shared test helpers. Tests never read ../shared/ and never touch the network."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The tests' programs are tiny, so compiling them is most of the suite's time. LLVM's level-0
# code generation, and XLA:CPU's older loop emitters in place of its MLIR fusion emitters, build
# them far sooner (the README's section on the tests has the figures). The programs (and what
# the tests check of them) are the same; speed is measured by `make bench`, with XLA's
# defaults. Set before jax is imported, and inherited by every process a test starts.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


# Every process a test starts imports jaxdl afresh: let them share its compiled bytecode (the
# gitignored __pycache__ folders) even where the environment tells Python not to write it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a child process: the suite's own and `flags` (fake CPU devices, say)."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, cwd: Path | None = None):
    """Run `python -m jaxdl ARGS` in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "jaxdl", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or REPO)


def pytest_collection_modifyitems(items):
    """Modules holding end-to-end runs (marked slow) first, each module's tests kept together
    (module fixtures are built once): the suite's two processes then share out the long runs
    early, instead of one finishing its last long run while the other has nothing left."""
    slow_modules = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow_modules)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(autouse=True, scope="session")
def _private_run_registry(tmp_path_factory):
    """Runs made by the tests sign in to a registry of their own, not the user's `jaxdl ps`."""
    patch = pytest.MonkeyPatch()
    patch.setenv("JAXDL_REGISTRY", str(tmp_path_factory.getbasetemp() / "registry"))
    patch.setenv("JAXDL_COMPILE_CACHE", str(tmp_path_factory.getbasetemp() / "compile"))  # not the user's
    yield
    patch.undo()
