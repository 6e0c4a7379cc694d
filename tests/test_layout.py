"""The shape of the codebase: rooms with one job, imports pointing one way.

    experiments -> harness -> devices -> core (train, models, losses, eval, ...) -> data

Read from the source (imports anywhere in a module, also inside functions), so a moved
import cannot hide an edge.
"""
from __future__ import annotations

import ast
import re

import pytest

from conftest import REPO

LIBRARY = REPO / "jaxdl"
CORE = ("train", "models", "losses", "eval", "data", "matcalc", "interpret", "verify", "errors")
DEVICE_WORDS = re.compile(r"\b(Mesh|NamedSharding|shard_map|pmap|device_put|process_count|process_index)\b")


def _imports(path) -> set[str]:
    """Every jaxdl module path `path` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in ("jaxdl", "experiments", "benchmarks")}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _modules(folder: str):
    base = LIBRARY / folder
    return sorted(base.rglob("*.py")) if base.is_dir() else [LIBRARY / f"{folder}.py"]


@pytest.mark.parametrize("room,forbidden", [
    *[(core, ("harness", "devices", "cli", "launch", "config")) for core in CORE],
    ("devices", ("harness", "cli", "launch", "config", "runs")),
    ("runs", ("harness", "devices", "cli", "launch", "config", "train", "models", "losses")),
    ("harness", ("cli", "launch")),
])
def test_dependencies_point_one_way(room, forbidden):
    offenders = []
    for path in _modules(room):
        for module in _imports(path):
            if module.split(".")[0] in ("experiments", "benchmarks") or (
                    module.startswith("jaxdl.") and _room(module) in forbidden):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, offenders


def test_nothing_in_the_library_imports_experiments_or_benchmarks():
    offenders = [f"{p.relative_to(REPO)}: {m}" for p in sorted(LIBRARY.rglob("*.py")) for m in _imports(p)
                 if m.split(".")[0] in ("experiments", "benchmarks")]
    assert not offenders, offenders


def test_only_the_device_room_speaks_of_devices():
    """Meshes, shardings, pmap/shard_map, device placement and process counts live in
    jaxdl/devices alone; the rest of the library and the experiments never see them (the
    `--parallel` choices come from the device room's own list)."""
    offenders = []
    for path in sorted(LIBRARY.rglob("*.py")) + sorted((REPO / "experiments").glob("*.py")):
        if path.is_relative_to(LIBRARY / "devices"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            if DEVICE_WORDS.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_experiments_are_files_not_an_installed_package():
    assert not (REPO / "experiments" / "__init__.py").exists()
    assert "experiments" not in (REPO / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]")[1]
