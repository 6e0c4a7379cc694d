"""The three foundation experiments, run in-process at their documented defaults.

These are the numbers the README quotes: softmax >= 0.94, MLP >= 0.96 test accuracy on
digits, linear regression within 0.01 of the truth.
"""
import json

import numpy as np
import pytest

from jaxdl.cli import main as cli_main


def _run(name, tmp_path, *flags):
    out = tmp_path / name
    assert cli_main(["exp", name, "--out", str(out), "--no-progress", *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["finished"] is True
    assert [r["epoch"] for r in records] == list(range(1, summary["epochs"] + 1))
    assert (out / "curves.png").stat().st_size > 1000 and (out / "config.json").is_file()
    return summary, records


def test_linreg_recovers_truth(tmp_path):
    s, _ = _run("linreg", tmp_path)
    assert s["w_error"] < 0.01 and s["b_error"] < 0.01
    assert s["sgd_vs_closed_form"] < 0.01
    np.testing.assert_allclose(s["w_closed_form"], [2.0, -3.4], atol=2e-3)


def test_softmax_default_accuracy(tmp_path):
    s, records = _run("softmax", tmp_path)
    assert s["test_accuracy"] >= 0.94
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_mlp_default_accuracy(tmp_path):
    s, _ = _run("mlp", tmp_path)
    assert s["test_accuracy"] >= 0.96 and s["hidden"] == [256]


def test_softmax_mse_trains_worse_than_ce(tmp_path):
    ce, _ = _run("softmax", tmp_path / "ce", "--max-epochs", "10")
    mse, _ = _run("softmax", tmp_path / "mse", "--max-epochs", "10", "--loss", "mse")
    assert mse["test_accuracy"] < ce["test_accuracy"]


@pytest.mark.parametrize("argv,msg", [
    (["exp", "nope"], "unknown experiment 'nope' (known:"),
    (["exp", "softmax", "--lr", "-0.1"], "--lr: must be > 0"),
    (["exp", "mlp", "--max-epochs", "0"], "--max-epochs: must be > 0"),
    (["exp", "mlp", "--hidden", "a,b"], "--hidden"),
    (["exp", "softmax", "--frobnicate"], "unknown flag --frobnicate"),
    (["exp", "softmax", "--dataset", "fashion_mnist", "--data-dir", "/nonexistent"], "no such directory"),
    (["exp", "linreg", "--batch-size", "5000"], "larger than"),
    (["frob"], "unknown command"),
])
def test_bad_input_one_line(argv, msg, capsys, tmp_path):
    code = cli_main([*argv, "--out", str(tmp_path / "r")] if argv[0] == "exp" and len(argv) > 2 else argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err
