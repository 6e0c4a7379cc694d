"""`make verify`: the whole registry passes, broken derivations are caught, the exit codes."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.cli import main as jaxdl_main
from jaxdl.matcalc import compare
from jaxdl.verify import backprop, check_backprop, check_matcalc, registry
from jaxdl.verify.cli import main as verify_main
from jaxdl.verify.registry import Check


@pytest.mark.slow  # the whole registry: ~300 small programs compiled
def test_real_catalogue_passes_and_writes_json(tmp_path, capsys):
    code = verify_main(["--out", str(tmp_path)])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "verify.json").read_text())
    assert code == 0, out[-3000:]
    assert report["unexpected"] == 0 and report["counts"]["xfail"] >= 6
    rows = report["checks"]
    assert all(r["status"] in ("ok", "xfail") for r in rows)
    identities = {r["name"] for r in rows if r["layout"] in ("numerator", "denominator") and r["status"] == "ok"}
    assert len(identities) >= 30
    for name in identities:  # every identity is checked in both layouts
        assert {r["layout"] for r in rows if r["name"] == name} == {"numerator", "denominator"}
    wrong = [r for r in rows if "[WRONG]" in r["name"]]
    assert len(wrong) == 6 and all(r["status"] == "xfail" and r["max_rel_err"] > 0.1 for r in wrong)
    backprops = {r["name"].split(" ")[0] for r in rows if r["layout"] == "backprop" and "backprop" in r["name"]}
    assert {"linreg", "softmax", "MLP"} <= backprops
    # the table: a header, one line per check, the counts
    assert out.splitlines()[0].split()[:2] == ["name", "layout"]
    assert f"{len(rows)} checks in" in out and "0 unexpected" in out
    statuses = [line.split()[-1] for line in out.splitlines()[2:len(rows) + 2]]
    assert set(statuses) == {"ok", "xfail"} and len(statuses) == len(rows)


def _good():
    return Check("good", "numerator", "x:(2,)", lambda: (np.ones(2), np.ones(2)))


@pytest.mark.parametrize("broken,status", [
    (Check("broken derivation", "numerator", "x:(2,)", lambda: (np.ones(2), np.array([1.0, 2.0]))), "FAIL"),
    (Check("wrong one that passes", "numerator", "x:(2,)", lambda: (np.ones(2), np.ones(2)), expect_fail=True),
     "XPASS"),
    (Check("crashes", "backprop", "-", lambda: 1 / 0), "ERROR"),
    (Check("wrong shape", "denominator", "x:(2,)", lambda: (np.ones((1, 2)), np.ones((2, 1)))), "FAIL"),
])
def test_injected_broken_check_fails_the_run(broken, status, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(registry, "discover", lambda: [_good(), broken])
    assert verify_main(["--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "verify.json").read_text())
    assert [r["status"] for r in report["checks"]] == ["ok", status]
    assert "1 unexpected" in out and f"{status}:" in out  # the reason is printed under the row


def test_expected_failure_alone_is_ok(monkeypatch, capsys):
    wrong = Check("known wrong", "numerator", "x:(2,)", lambda: (np.ones(2), np.zeros(2) + 3), expect_fail=True)
    monkeypatch.setattr(registry, "discover", lambda: [_good(), wrong])
    assert verify_main([]) == 0
    assert "1 failed as expected" in capsys.readouterr().out


def test_filter_and_bad_arguments(capsys):
    assert jaxdl_main(["verify", "--filter", "d(x^T x)"]) == 0  # through `python -m jaxdl verify`
    out = capsys.readouterr().out
    assert "6 checks in" in out and "d(x^T x)/dx = 2 x^T (num)" in out
    for argv, msg in [(["verify", "--filter", "no such derivation"], "no check's name contains"),
                      (["verify", "--frobnicate"], "unrecognized arguments")]:
        assert jaxdl_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: verify:") and msg in err[0]


def test_import_failure_becomes_an_error_row(monkeypatch):
    real_import = registry.importlib.import_module

    def flaky(name):
        if name.endswith("check_matcalc"):
            raise ImportError("boom")
        return real_import(name)

    monkeypatch.setattr(registry.importlib, "import_module", flaky)
    found = registry.discover()
    row = [c for c in found if c.name == "check_matcalc (import)"]
    assert len(row) == 1 and any(c.layout == "backprop" for c in found)
    with pytest.raises(ImportError, match="boom"):
        row[0].compute()


# ---- hand-written backprop ---------------------------------------------------------------------

@pytest.mark.parametrize("model", ["linreg", "softmax", "mlp"])
def test_hand_forward_loss_equals_the_training_loss(model):
    sizes = check_backprop.SIZES[model][0]
    params, batch = check_backprop.problem(model, *sizes)
    with jax.enable_x64(True):
        hand_loss, grads = backprop.value_and_grad(model, params, batch)
        ref_loss = check_backprop.reference_loss(model)(params, batch)
    np.testing.assert_allclose(hand_loss, ref_loss, rtol=1e-12)
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def _broken(model, params, batch):
    """Typical slips: the MLP without the ReLU's mask, softmax without the 1/B, linreg's b
    without the sum."""
    loss, cache = backprop.MODELS[model][0](params, batch)
    if model == "mlp":
        delta = (cache["probs_BxC"] - cache["onehot_BxC"]) / len(batch["y"])
        grads = [None] * len(params)
        for l in reversed(range(len(params))):
            grads[l] = {"w": delta.T @ cache["layer_inputs"][l], "b": delta.sum(0)}
            delta = delta @ params[l]["w"]  # forgot [Z > 0]
        return grads
    if model == "softmax":
        d = cache["probs_BxC"] - cache["onehot_BxC"]  # forgot / B
        return {"w": d.T @ cache["X_BxD"], "b": d.sum(0)}
    r = cache["residual_B"] / len(batch["y"])
    return {"w": cache["X_BxD"].T @ r, "b": r.mean()}  # mean where a sum belongs


@pytest.mark.parametrize("model", ["linreg", "softmax", "mlp"])
def test_broken_backprop_is_caught(model):
    params, batch = check_backprop.problem(model, *check_backprop.SIZES[model][0])
    with jax.enable_x64(True):
        reference = jax.grad(check_backprop.reference_loss(model))(params, batch)
        report = compare(_broken(model, params, batch), reference)
    assert not report.passed and report.max_rel_err > 0.01


def test_backprop_runs_jitted_in_float32():
    params, batch = check_backprop.problem("mlp", *check_backprop.SIZES["mlp"][1])
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    batch = {"X": jnp.asarray(batch["X"], jnp.float32), "y": jnp.asarray(batch["y"])}
    loss, grads = jax.jit(lambda p, b: backprop.value_and_grad("mlp", p, b))(params, batch)
    assert loss.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    reference = jax.jit(jax.grad(check_backprop.reference_loss("mlp")))(params, batch)
    report = compare(grads, reference)
    assert report.passed and report.rtol == 1e-4


def test_wrong_matcalc_derivation_is_in_the_registry():
    wrong = [c for c in check_matcalc.checks() if c.expect_fail]
    assert len(wrong) == 6 and {c.layout for c in wrong} == {"numerator", "denominator"}
