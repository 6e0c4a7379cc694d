"""Packages import their submodules when first named: every advertised name resolves, and
starting a run loads only what it uses."""
import importlib
import subprocess
import sys

import pytest

from conftest import REPO

LAZY = ["jaxdl", "jaxdl.data", "jaxdl.eval", "jaxdl.losses", "jaxdl.models", "jaxdl.train"]


@pytest.mark.parametrize("package", LAZY)
def test_every_advertised_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__ and set(module.__all__) <= set(dir(module))
    for name in dir(module):
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute"):
        module.not_a_name  # noqa: B018


def test_a_classifier_run_does_not_load_what_it_does_not_use():
    """What `exp mlp` imports before training (the config, the harness, the experiment's own
    modules) leaves out flax, the federated round, matplotlib and scikit-learn."""
    code = ("import sys, jaxdl.config, jaxdl.harness.runner, jaxdl.models.dense, jaxdl.train.step; "
            "print(' '.join(m for m in ('flax', 'jaxdl.train.federated', 'matplotlib', 'sklearn', "
            "'jaxdl.data.federated') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def test_the_python_api_loads_orbax_only_to_read_a_checkpoint():
    """`import jaxdl.api` (what `jaxdl.run` and `jaxdl.load_run` resolve to) leaves orbax out
    until a checkpoint is read."""
    code = "import sys, jaxdl.api; print('orbax.checkpoint' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
