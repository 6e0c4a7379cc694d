"""word2vec models, losses and the row-sparse step, each against an independent computation."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data import text
from jaxdl.losses import word2vec as losses
from jaxdl.matcalc import compare
from jaxdl.models import word2vec as w2v
from jaxdl.train import sparse
from jaxdl.train.step import TrainState, init_state, make_train_step
from jaxdl.verify import check_word2vec

V, D, B, K, C = 13, 6, 8, 4, 4


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"W_in": jnp.asarray(rng.normal(size=(V, D)), jnp.float32),
            "W_out": jnp.asarray(rng.normal(size=(V, D)), jnp.float32)}


def test_init_is_word2vecs():
    p = w2v.init(jax.random.key(0), 500, 40)
    chex.assert_shape((p["W_in"], p["W_out"]), (500, 40))
    assert float(jnp.abs(p["W_in"]).max()) <= 0.5 / 40 and float(p["W_in"].std()) > 0.25 / 40 / np.sqrt(3)
    assert not p["W_out"].any()


def test_models_equal_brute_force_dot_products():
    p = _params()
    W_in, W_out = np.asarray(p["W_in"]), np.asarray(p["W_out"])
    rng = np.random.default_rng(1)
    center, targets = rng.integers(0, V, B), rng.integers(0, V, (B, 1 + K))
    contexts, cmask = rng.integers(0, V, (B, C)), rng.random((B, C)) < 0.6
    cmask[0] = False  # an example without contexts: h = 0
    sg = np.array([[W_in[center[b]] @ W_out[t] for t in targets[b]] for b in range(B)])
    h = np.array([W_in[contexts[b][cmask[b]]].mean(0) if cmask[b].any() else np.zeros(D) for b in range(B)])
    cb = np.array([[h[b] @ W_out[t] for t in targets[b]] for b in range(B)])
    np.testing.assert_allclose(w2v.skipgram_apply(p, center, targets), sg, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w2v.cbow_apply(p, contexts, cmask, targets), cb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w2v.full_softmax_apply(p, center), W_in[center] @ W_out.T, rtol=1e-5, atol=1e-5)


def test_negative_sampling_loss_is_the_masked_bce_and_stable():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(B, 1 + K)) * 3
    mask = rng.random((B, 1 + K)) < 0.7
    y = np.asarray(losses.positive_then_negatives(K))
    expected = (-np.log(1 / (1 + np.exp(-s[:, :1]))) * mask[:, :1]).sum(1) + \
        (-np.log(1 / (1 + np.exp(s[:, 1:]))) * mask[:, 1:]).sum(1)
    got = losses.negative_sampling_loss(logits_BxT=jnp.asarray(s), labels_BxT=y[None],
                                        mask_BxT=jnp.asarray(mask, float))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    extreme = jnp.array([[-1000.0, 1000.0], [1000.0, -1000.0]])
    out = losses.negative_sampling_loss(logits_BxT=extreme, labels_BxT=jnp.array([[1.0, 0.0]]),
                                        mask_BxT=jnp.ones((2, 2)))
    np.testing.assert_allclose(out, [2000.0, 0.0], rtol=1e-6)


def test_full_softmax_loss_against_logsumexp_and_stable():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(B, V)) * 4
    targets = rng.integers(0, V, B)
    m = logits.max(1, keepdims=True)
    expected = (m[:, 0] + np.log(np.exp(logits - m).sum(1))) - logits[np.arange(B), targets]
    np.testing.assert_allclose(losses.full_softmax_loss(logits_BxV=jnp.asarray(logits), targets_B=jnp.asarray(targets)),
                               expected, rtol=1e-5)
    assert np.isfinite(losses.full_softmax_loss(logits_BxV=jnp.array([[1000.0, -1000.0]]), targets_B=jnp.array([1])))


@pytest.mark.parametrize("check", check_word2vec.checks(), ids=lambda c: c.name[:40])
def test_hand_derived_gradients_match_autodiff(check):
    hand, auto = check.compute()
    report = compare(hand, auto, rtol=check.rtol, layout=check.layout)
    assert report.passed != check.expect_fail, report


def _batches(seed=4):
    """A skip-gram and a CBOW batch with repeated rows and padding."""
    rng = np.random.default_rng(seed)
    center = rng.integers(1, V, B)
    center[:3] = 5  # the same centre three times: its updates must accumulate
    mask = np.ones(B, bool)
    mask[-2:] = False
    sg = {"center": center, "context": rng.integers(1, V, B), "mask": mask}
    cmask = rng.random((B, C)) < 0.7
    cmask[:, 0] = True
    cb = {"center": center, "contexts": rng.integers(1, V, (B, C)), "context_mask": cmask, "mask": mask}
    return jax.tree.map(jnp.asarray, sg), jax.tree.map(jnp.asarray, cb)


@pytest.mark.parametrize("shared", [False, True], ids=["per-pair", "shared"])
@pytest.mark.parametrize("kind", ["skipgram", "cbow"])
def test_row_sparse_step_equals_dense_optax_sgd(kind, shared):
    noise = jnp.asarray(text.packed_alias_table(text.noise_distribution(np.arange(V) + 1.0)))
    make = losses.skipgram_objective if kind == "skipgram" else losses.cbow_objective
    objective = make(noise=noise, num_negatives=K, shared=shared)
    sg, cb = _batches()
    batch = sg if kind == "skipgram" else cb
    params = _params(5)
    lr = 0.3
    sparse_step = jax.jit(sparse.make_row_sparse_sgd_step(objective, lambda step, batch: lr))
    dense_step = jax.jit(make_train_step(sparse.dense_loss(objective), optax.sgd(lr)))
    key = jax.random.key(7)
    s_state, s_m = sparse_step(TrainState(params, optax.EmptyState(), jnp.zeros((), jnp.int32)), batch, key)
    d_state, d_m = dense_step(init_state(params, optax.sgd(lr)), batch, key)
    chex.assert_trees_all_close(s_state.params, d_state.params, atol=1e-5, rtol=1e-5)
    assert not jnp.allclose(s_state.params["W_out"], params["W_out"])  # it did update
    assert float(s_m["loss"]) == pytest.approx(float(d_m["loss"]), rel=1e-6)
    assert int(s_m["examples"]) == B - 2 and bool(s_m["finite"]) and int(s_state.step) == 1


@pytest.mark.parametrize("shared", [False, True], ids=["per-pair", "shared"])
@pytest.mark.parametrize("kind", ["skipgram", "cbow"])
def test_hand_row_gradients_equal_autodiff(kind, shared):
    """The objectives' hand-derived row gradients against jax.grad of their own loss, in
    float64, with repeated rows, masked negatives and a padding example."""
    noise = jnp.asarray(text.packed_alias_table(text.noise_distribution(np.arange(V) + 1.0)))
    make = losses.skipgram_objective if kind == "skipgram" else losses.cbow_objective
    objective = make(noise=noise, num_negatives=K, shared=shared)
    sg, cb = _batches()
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) * 20, _params(8))  # sigmoids far from 1/2
        indices, inputs = objective.select(sg if kind == "skipgram" else cb, jax.random.key(3))
        rows = sparse.gather_rows(params, indices)
        (loss, aux), grads = objective.value_and_row_grads(rows, inputs)
        (ad_loss, ad_aux), ad_grads = jax.value_and_grad(objective.loss_on_rows, has_aux=True)(rows, inputs)
        chex.assert_trees_all_close(grads, ad_grads, rtol=1e-10, atol=1e-12)
        assert float(loss) == pytest.approx(float(ad_loss), rel=1e-12)
        assert int(aux["examples"]) == int(ad_aux["examples"])
        assert float(jnp.abs(grads["W_out"]).max()) > 1e-3  # not trivially zero


@pytest.mark.parametrize("shared", [False, True], ids=["per-pair", "shared"])
def test_cbow_word2vec_update_moves_each_context_by_the_whole_hidden_gradient(shared):
    """word2vec.c's CBOW rule: each of an example's n context rows gets n times its true
    gradient (the whole dL/dh); W_out's gradient and the loss are unchanged."""
    noise = jnp.asarray(text.packed_alias_table(text.noise_distribution(np.arange(V) + 1.0)))
    _, cb = _batches()
    exact = losses.cbow_objective(noise=noise, num_negatives=K, shared=shared)
    w2v_rule = losses.cbow_objective(noise=noise, num_negatives=K, shared=shared, word2vec_update=True)
    params = _params(9)
    indices, inputs = exact.select(cb, jax.random.key(4))
    rows = sparse.gather_rows(params, indices)
    (loss, _), grads = exact.value_and_row_grads(rows, inputs)
    (loss_w, _), grads_w = w2v_rule.value_and_row_grads(rows, inputs)
    n = np.asarray(cb["context_mask"]).sum(1)[:, None, None]
    np.testing.assert_allclose(grads_w["W_in"], n * np.asarray(grads["W_in"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads_w["W_out"], grads["W_out"], rtol=1e-6)
    assert float(loss_w) == float(loss) and (n > 1).any()


def test_shared_negatives_are_one_draw_per_batch():
    noise = jnp.asarray(text.packed_alias_table(np.r_[0.0, 0.9, 0.1]))  # word 1 is nearly always drawn
    objective = losses.skipgram_objective(noise=noise, num_negatives=40, shared=True)
    batch = {"center": jnp.array([2, 2, 1]), "context": jnp.array([1, 2, 2]), "mask": jnp.array([True, False, True])}
    indices, inputs = jax.jit(objective.select)(batch, jax.random.key(0))
    rows, mask = np.asarray(indices["W_out"]), np.asarray(inputs["mask_BxK"])
    np.testing.assert_array_equal(rows[:3], [1, 2, 2])  # the positives, then the batch's K noise words
    negatives = rows[3:]
    assert len(negatives) == 40 and set(negatives) == {1, 2}  # <unk> has probability 0
    np.testing.assert_array_equal(mask[0], negatives != 1)
    assert not mask[1].any()  # a padding example counts nothing
    np.testing.assert_array_equal(mask[2], negatives != 2)


def test_skip_inactive_leaves_params_and_counts_the_step():
    noise = jnp.asarray(text.packed_alias_table(text.noise_distribution(np.arange(V) + 1.0)))
    step = jax.jit(sparse.skip_inactive(sparse.make_row_sparse_sgd_step(
        losses.skipgram_objective(noise=noise, num_negatives=K), lambda s, b: 0.5)))
    sg, _ = _batches()
    params = _params(6)
    state = TrainState(params, optax.EmptyState(), jnp.array(3, jnp.int32))
    idle, m = step(state, {**sg, "active": jnp.array(False)}, jax.random.key(0))
    chex.assert_trees_all_equal(idle.params, params)
    assert int(idle.step) == 4 and float(m["loss"]) == 0 and bool(m["finite"]) and int(m["examples"]) == 0
    busy, m = step(state, {**sg, "active": jnp.array(True)}, jax.random.key(0))
    assert float(m["loss"]) > 0 and not jnp.array_equal(busy.params["W_in"], params["W_in"])


def test_finite_flag_catches_a_nan_row():
    noise = jnp.asarray(text.packed_alias_table(text.noise_distribution(np.arange(V) + 1.0)))
    sg, _ = _batches()
    params = _params(7)
    params["W_in"] = params["W_in"].at[int(sg["center"][0])].set(jnp.nan)
    for check_grads in (True, False):
        step = jax.jit(sparse.make_row_sparse_sgd_step(losses.skipgram_objective(noise=noise, num_negatives=K),
                                                       lambda s, b: 0.1, check_grads=check_grads))
        _, m = step(TrainState(params, optax.EmptyState(), jnp.zeros((), jnp.int32)), sg, jax.random.key(0))
        assert not bool(m["finite"])


def test_linear_decay_by_progress_is_gensims_schedule():
    lr_fn = sparse.linear_decay_by_progress(0.025, min_lr=1e-4, steps_per_epoch=10, epochs=4)
    for step, progress, done in [(0, 0.0, 0.0), (10, 0.5, 1.5), (39, 0.99, 3.99), (45, 1.0, 4.0)]:
        expected = 0.025 - (0.025 - 1e-4) * min(done / 4, 1.0)
        assert float(lr_fn(jnp.array(step), {"progress": jnp.array(progress)})) == pytest.approx(expected, rel=1e-5)


def test_negatives_never_equal_positive_after_masking():
    noise = jnp.asarray(text.packed_alias_table(np.r_[0.0, 0.9, 0.1]))  # word 1 is nearly always drawn
    select = losses.skipgram_objective(noise=noise, num_negatives=6).select
    batch = {"center": jnp.array([2, 2]), "context": jnp.array([1, 2]), "mask": jnp.array([True, False])}
    indices, inputs = jax.jit(select)(batch, jax.random.key(0))
    targets, mask = np.asarray(indices["W_out"]), np.asarray(inputs["mask_BxT"])
    assert (targets[:, 1:] != 0).all()  # <unk> has probability 0
    np.testing.assert_array_equal(mask[0, 1:], targets[0, 1:] != 1)
    assert not mask[1].any()  # a padding example counts nothing
