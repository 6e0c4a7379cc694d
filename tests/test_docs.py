"""The API reference (`make docs`, pdoc from the docstrings) builds without a warning."""
from __future__ import annotations

import warnings

import pdoc


def test_api_reference_builds_without_warnings(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc("jaxdl", output_directory=tmp_path)
    assert not [str(w.message) for w in caught]
    harness = (tmp_path / "jaxdl" / "harness.html").read_text()
    assert "Task" in harness and "Batches" in harness
    assert (tmp_path / "jaxdl" / "devices" / "data_parallel.html").is_file()
