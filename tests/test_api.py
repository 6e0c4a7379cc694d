"""The Python entry points: `jaxdl.run` returns the finished run, and `jaxdl.load_run` reads
the same folder back, parameters included."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxdl
from jaxdl.errors import JaxdlError


def test_run_then_load_run_give_the_same_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))
    result = jaxdl.run("linreg", max_epochs=2, out=str(tmp_path / "run"), progress=False, tensorboard=False)
    again = jaxdl.load_run(result.dir)
    assert result.params is not None and result.metrics and result.summary
    assert len(result.metrics) == 2 and again.metrics == result.metrics and again.summary == result.summary
    assert jax.tree.structure(again.params) == jax.tree.structure(result.params)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(result.params)):
        np.testing.assert_array_equal(a, b)
    assert "curves" in again.figures and again.figures["curves"].is_file()


def test_load_run_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(JaxdlError):
        jaxdl.load_run(tmp_path)
