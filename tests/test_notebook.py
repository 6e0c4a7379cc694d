"""The example notebook runs headless on a real kernel (nbclient) and says what the README says."""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("JAXDL_EXPERIMENTS", str(REPO / "experiments"))
    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "test accuracy" in text and "PASS  max rel err" in text and "\nFAIL  max rel err" in text
    gap = float(text.split("(f(x) - f(blank)) = ")[1].split()[0])
    assert abs(gap) < 1e-4  # Shapley efficiency: the values add up to f(x) - f(blank)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the saved curves, the notebook's own plot, the Shapley map: inline
    assert list((tmp_path / "runs" / "mlp").iterdir())  # the run folder, beside the notebook
