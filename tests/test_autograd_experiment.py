"""experiments/autograd.py: every claim holds, and a false claim stops the run with one
clear line."""
import json

import jax.numpy as jnp
import pytest

from jaxdl.cli import load_experiment
from jaxdl.cli import main as cli_main
from jaxdl.errors import JaxdlError


def _run(tmp_path, name, *flags):
    out = tmp_path / name
    assert cli_main(["exp", "autograd", "--out", str(out), *flags]) == 0
    return json.loads((out / "summary.json").read_text()), json.loads((out / "results.json").read_text())


def test_all_claims_hold(tmp_path, capsys):
    autograd = load_experiment("autograd")

    summary, results = _run(tmp_path, "a", *autograd.SMOKE_ARGS)
    out = capsys.readouterr().out
    claims = results["claims"]
    assert summary["finished"] and summary["all_hold"] and summary["failed"] == 0
    assert summary["claims"] == len(claims) == 25 + 2  # 25 + --trials
    assert all(c["holds"] for c in claims) and {c["part"] for c in claims} == {1, 2, 3, 4}
    assert "27 claims, all hold" in out and "[FAILED]" not in out
    texts = " | ".join(c["claim"] for c in claims)
    for must in ("jax.grad(f)(a) == f(a) / a", "TracerBoolConversionError", "forward mode works",
                 "static-trip fori_loop", "dz/dx == u", "vjp", "diag(J)", "keepdims=True it is a row",
                 "keepdims=True it is a column"):
        assert must in texts, must
    branches = {c["detail"].get("branch") for c in claims if c["part"] == 1} - {None}
    assert branches == {"b", "100 b"}  # both sides of the `if`
    # (same seed, same results.json: tests/test_determinism.py runs every experiment twice)


def test_a_false_claim_stops_the_run(tmp_path, monkeypatch, capsys):
    autograd = load_experiment("autograd")

    monkeypatch.setattr(autograd, "f_python", lambda a: a ** 3)  # grad 3a^2 != f(a)/a = a^2
    code = cli_main(["exp", "autograd", "--out", str(tmp_path / "r"), "--trials", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: claim failed: part 1:")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert not results["claims"][0]["holds"]
    with pytest.raises(JaxdlError, match="claim failed"):
        autograd.main(autograd.Config(trials=1, out=str(tmp_path / "s")))


def test_functions_agree_where_claimed():
    autograd = load_experiment("autograd")

    for a in (0.3, -0.7, 2.5):
        a = jnp.asarray(a)
        assert jnp.allclose(autograd.f_lax(a), autograd.f_python(a))
        assert jnp.allclose(autograd.f_fori(a, int(autograd.doublings(a))), autograd.f_python(a))


@pytest.mark.parametrize("flags,msg", [(["--trials", "0"], "--trials: must be > 0"),
                                       (["--lr", "0.1"], "unknown flag --lr")])
def test_bad_flags(flags, msg, capsys, tmp_path):
    assert cli_main(["exp", "autograd", "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
