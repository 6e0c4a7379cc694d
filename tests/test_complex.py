"""ComplEx (Trouillon et al., 2016) and the N3 regulariser (Lacroix et al., 2018): scores
against numpy complex arithmetic, the one-vector negatives against spelled-out triples, N3
against a direct computation, the regulariser off against the plain loss, and the transe
and fede experiments run with --model complex."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.cli import main as cli_main
from jaxdl.data import kg as kgdata
from jaxdl.losses import kge as kloss
from jaxdl.models import kge

COMPLEX = kge.KGEModel("complex", dim=5)
ALL_MODELS = [kge.KGEModel("transe", dim=5), kge.KGEModel("rotate", dim=5), kge.KGEModel("distmult", dim=5),
              COMPLEX]
JIT_OR_NOT = pytest.mark.parametrize("wrap", [jax.jit, lambda f: f], ids=["jit", "eager"])


def _as_complex(v_x2D):
    v = np.asarray(v_x2D, np.float64)
    D = v.shape[-1] // 2
    return v[..., :D] + 1j * v[..., D:]


def _params(model, E=8, R=3, seed=0):
    return kge.init(jax.random.key(seed), model, E, R)


def test_complex_shapes_and_init():
    params = _params(COMPLEX)
    assert (COMPLEX.entity_dim, COMPLEX.relation_dim) == (10, 10)
    assert params["entity"].shape == (8, 10) and params["relation"].shape == (3, 10)
    a = COMPLEX.embedding_range
    assert float(jnp.abs(params["entity"]).max()) <= a and float(jnp.abs(params["relation"]).max()) <= a


@JIT_OR_NOT
def test_complex_score_is_numpy_complex_arithmetic(wrap):
    rng = np.random.default_rng(0)
    h_Bx2D, r_Bx2D, t_Bx2D = rng.normal(size=(3, 4, 10))
    got = wrap(kge.complex_score)(h_Bx2D, r_Bx2D, t_Bx2D)
    h, r, t = _as_complex(h_Bx2D), _as_complex(r_Bx2D), _as_complex(t_Bx2D)
    np.testing.assert_allclose(got, np.real(np.sum(h * r * np.conj(t), -1)), rtol=1e-5, atol=1e-5)


def test_complex_score_by_ids_and_its_asymmetry():
    params = _params(COMPLEX)
    ent, rel = _as_complex(params["entity"]), _as_complex(params["relation"])
    h, r, t = jnp.array([0, 3, 7, 2]), jnp.array([1, 0, 2, 2]), jnp.array([5, 3, 1, 6])
    expect = np.real(np.sum(ent[h] * rel[r] * np.conj(ent[t]), -1))
    np.testing.assert_allclose(kge.score(COMPLEX, params, h, r, t), expect, rtol=1e-5, atol=1e-6)
    # a purely imaginary relation is antisymmetric: s(h, r, t) = -s(t, r, h); a real one symmetric
    imaginary = {**params, "relation": params["relation"].at[:, :COMPLEX.dim].set(0.0)}
    real = {**params, "relation": params["relation"].at[:, COMPLEX.dim:].set(0.0)}
    np.testing.assert_allclose(kge.score(COMPLEX, imaginary, h, r, t), -kge.score(COMPLEX, imaginary, t, r, h),
                               rtol=1e-5, atol=1e-4)  # (3, r, 3) scores 0 up to rounding
    np.testing.assert_allclose(kge.score(COMPLEX, real, h, r, t), kge.score(COMPLEX, real, t, r, h), rtol=1e-5)
    assert not np.allclose(kge.score(COMPLEX, params, h, r, t), kge.score(COMPLEX, params, t, r, h), atol=1e-4)


@JIT_OR_NOT
@pytest.mark.parametrize("corrupt_head", [True, False], ids=["head", "tail"])
def test_complex_score_corrupted_is_score_of_the_negatives(wrap, corrupt_head):
    params = _params(COMPLEX, seed=1)
    triples = jnp.array([[0, 1, 2], [3, 2, 4], [6, 0, 5]])
    replacement_BxK = jnp.array([[1, 2, 7, 0], [3, 3, 5, 6], [0, 4, 2, 1]])
    got = wrap(lambda p: kge.score_corrupted(COMPLEX, p, triples, replacement_BxK, corrupt_head))(params)
    h_B1, r_B1, t_B1 = triples[:, 0:1], triples[:, 1:2], triples[:, 2:3]
    heads, tails = (replacement_BxK, t_B1) if corrupt_head else (h_B1, replacement_BxK)
    np.testing.assert_allclose(got, kge.score(COMPLEX, params, heads, r_B1, tails), rtol=1e-5, atol=1e-6)
    ent, rel = _as_complex(params["entity"]), _as_complex(params["relation"])
    expect = np.real(np.sum(ent[np.asarray(heads)] * rel[np.asarray(r_B1)] * np.conj(ent[np.asarray(tails)]), -1))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# N3
# ---------------------------------------------------------------------------------------
def _numpy_n3(model, params, triples, mask=None):
    ent, rel = np.asarray(params["entity"], np.float64), np.asarray(params["relation"], np.float64)
    entity = _as_complex if model.name in ("rotate", "complex") else (lambda v: v)
    relation = _as_complex if model.name == "complex" else (lambda v: v)
    per = []
    for h, r, t in np.asarray(triples):
        cubes = np.sum(np.abs(entity(ent[h])) ** 3) + np.sum(np.abs(entity(ent[t])) ** 3)
        if model.name != "rotate":  # RotatE's relations are unit rotations: left out
            cubes += np.sum(np.abs(relation(rel[r])) ** 3)
        per.append(cubes)
    per = np.array(per)
    mask = np.ones(len(per), bool) if mask is None else np.asarray(mask)
    return per[mask].mean()


@JIT_OR_NOT
@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.name)
def test_n3_penalty_matches_numpy(wrap, model):
    params = _params(model, seed=2)
    params = jax.tree.map(lambda a: 30 * a, params)  # entries of order 1
    triples = jnp.array([[0, 1, 2], [3, 2, 4], [6, 0, 5], [7, 1, 7]])
    mask = jnp.array([True, False, True, True])
    for m in (None, mask):
        got = wrap(lambda p, m=m: kloss.n3_penalty(model, p, triples, m))(params)
        np.testing.assert_allclose(got, _numpy_n3(model, params, triples, m), rtol=1e-5)


def test_n3_gradient_is_three_modulus_times_entry_and_finite_at_zero():
    z = jnp.array([[3.0, 0.0, 0.0, 4.0, 0.0, 0.0]])  # complex entries 3 + 4i, 0, 0
    params = {"entity": z, "relation": jnp.zeros((1, 6))}
    model = kge.KGEModel("complex", dim=3)
    g = jax.grad(lambda p: kloss.n3_penalty(model, p, jnp.array([[0, 0, 0]])))(params)
    # h and t are the same row: 2 * 3 |z| (Re z, Im z) with |z| = 5; the zero entries and relation get 0
    np.testing.assert_allclose(g["entity"], [[2 * 3 * 5 * 3.0, 0, 0, 2 * 3 * 5 * 4.0, 0, 0]], rtol=1e-6)
    assert bool(jnp.all(g["relation"] == 0)) and bool(jnp.all(jnp.isfinite(g["entity"])))


def test_regularizer_off_is_the_plain_loss_and_on_adds_the_weighted_penalty():
    triples = jnp.array([[0, 1, 2], [3, 2, 4], [6, 0, 5], [1, 1, 1]])
    mask = jnp.array([True, True, True, False])
    key = jax.random.key(4)
    for model in ALL_MODELS:
        params = _params(model, seed=3)
        batch = {"triples": triples, "mask": mask}
        off = jax.jit(kloss.make_loss_fn(model, num_entities=8, num_negatives=5))(params, batch, key)
        # the plain loss spelled out: negatives, scores, per-positive loss, masked mean
        neg = kgdata.corrupt(key, triples, num_entities=8, num_negatives=5, mode="both")
        pos_B = kge.score(model, params, triples[:, 0], triples[:, 1], triples[:, 2])
        neg_BxK = kge.score_corrupted(model, params, triples, neg.replacement_BxK, neg.corrupt_head)
        per_B = kloss.loss_from_scores(pos_B, neg_BxK, mask_BxK=neg.mask_BxK)
        np.testing.assert_allclose(off[0], per_B[:3].mean(), rtol=1e-6)
        assert set(off[1]) == {"pos_score", "neg_score"}
        weight = 0.3
        on = jax.jit(kloss.make_loss_fn(model, num_entities=8, num_negatives=5, regularizer="n3",
                                        regularizer_weight=weight))(params, batch, key)
        np.testing.assert_allclose(on[1]["n3"], _numpy_n3(model, params, triples, mask), rtol=1e-5)
        np.testing.assert_allclose(on[0], off[0] + weight * on[1]["n3"], rtol=1e-6)


@pytest.mark.parametrize("kwargs,msg", [
    ({"regularizer": "n2"}, "regularizer must be one of"),
    ({"regularizer": "n3", "regularizer_weight": -1.0}, "must be >= 0"),
    ({"regularizer_weight": 0.1}, "0 without a regularizer"),
])
def test_make_loss_fn_rejects_bad_regularizers(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        kloss.make_loss_fn(COMPLEX, num_entities=8, num_negatives=2, **kwargs)


# ---------------------------------------------------------------------------------------
# The experiments
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return kgdata.write_kg(tmp_path_factory.mktemp("grid"), kgdata.synthetic_kg(0, side=5))


def test_transe_experiment_runs_complex_with_n3(grid, tmp_path):
    out = tmp_path / "run"
    assert cli_main(["exp", "transe", "--data", str(grid), "--out", str(out), "--no-progress", "--model", "complex",
                     "--regularizer", "n3", "--regularizer-weight", "0.01", "--batch-size", "32", "--max-epochs",
                     "2", "--eval-every", "1", "--dim", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert summary["finished"] and summary["model"] == "complex" and 0 < summary["test_mrr"] <= 1
    assert config["entity_norm"] == "none" and config["regularizer"] == "n3"  # the complex preset
    assert np.load(out / "entity_embeddings.npy").shape == (25, 8)  # 2 x dim reals
    assert np.load(out / "relation_embeddings.npy").shape == (8, 8)


def test_fede_experiment_runs_complex(grid, tmp_path):
    out = tmp_path / "fede"
    assert cli_main(["exp", "fede", "--data", str(grid), "--out", str(out), "--no-progress", "--model", "complex",
                     "--regularizer", "n3", "--regularizer-weight", "0.01", "--clients", "2", "--max-epochs", "2",
                     "--eval-every", "1", "--dim", "4", "--batch-size", "32", "--local-epochs", "1", "--neg", "4",
                     "--entity-norm", "none"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and 0 < summary["test_mrr"] <= 1


@pytest.mark.parametrize("flags,msg", [
    (["--regularizer-weight", "0.1"], "--regularizer-weight 0.1 needs --regularizer n3"),
    (["--regularizer", "n3"], "--regularizer n3 needs a positive --regularizer-weight"),
    (["--regularizer", "l2"], "--regularizer: 'l2' is not one of"),
    (["--regularizer", "n3", "--regularizer-weight", "-1"], "--regularizer-weight: must be >= 0"),
])
def test_bad_regularizer_flags_are_one_line(grid, tmp_path, capsys, flags, msg):
    code = cli_main(["exp", "transe", "--data", str(grid), "--out", str(tmp_path / "run"), "--no-progress",
                     "--model", "complex", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err
