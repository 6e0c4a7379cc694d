"""Knowledge-graph embedding: reader, synthetic graph, negatives, scores, losses, ranking.

Every formula is checked against an independent computation (numpy brute force, complex
numbers, constant weights); graphs are written by the tests themselves.
"""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data import kg as kgdata
from jaxdl.errors import JaxdlError
from jaxdl.eval import link_prediction as lp
from jaxdl.losses import kge as kloss
from jaxdl.models import kge


def _write(folder, train, valid, test):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        data = lines if isinstance(lines, bytes) else "".join(l + "\n" for l in lines).encode()
        (folder / f"{name}.txt").write_bytes(data)
    return folder


def _random_kg(seed=0, E=9, R=3, n=40):
    rng = np.random.default_rng(seed)
    triples = np.unique(np.stack([rng.integers(0, E, n), rng.integers(0, R, n), rng.integers(0, E, n)], 1), axis=0)
    rng.shuffle(triples)
    names = tuple(f"e{i}" for i in range(E)), tuple(f"r{i}" for i in range(R))
    a, b = int(0.6 * len(triples)), int(0.8 * len(triples))
    return kgdata.KG(*names, triples[:a].astype(np.int32), triples[a:b].astype(np.int32),
                     triples[b:].astype(np.int32))


# ---------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------
def test_reader_ids_from_train_and_drops_unseen(tmp_path):
    folder = _write(tmp_path / "g", ["b\tlikes\ta", "a\tknows\tc", "", "c\tlikes\tb"],
                    ["a\tlikes\tc", "a\tlikes\tz", "a\thates\tb"], ["c\tknows\ta", "y\tknows\ta"])
    g = kgdata.load_kg(folder)
    assert g.entities == ("a", "b", "c") and g.relations == ("knows", "likes")
    np.testing.assert_array_equal(g.train, [[1, 1, 0], [0, 0, 2], [2, 1, 1]])
    np.testing.assert_array_equal(g.valid, [[0, 1, 2]])
    np.testing.assert_array_equal(g.test, [[2, 0, 0]])
    assert g.train.dtype == np.int32 and g.dropped == {"valid": 2, "test": 1}
    assert g.counts() == {"num_entities": 3, "num_relations": 2, "num_train": 3, "num_valid": 1, "num_test": 1,
                          "dropped_valid": 2, "dropped_test": 1}


def test_write_then_load_roundtrip(tmp_path):
    g = kgdata.synthetic_kg(3)
    back = kgdata.load_kg(kgdata.write_kg(tmp_path / "syn", g))
    assert back.entities == g.entities and back.relations == g.relations
    for name in kgdata.SPLITS:
        np.testing.assert_array_equal(back.split(name), g.split(name))


@pytest.mark.parametrize("files,msg", [
    (None, "no such directory"),
    ({"test": None}, "test.txt: missing"),
    ({"train": ["a\tr"]}, "train.txt:1: expected 3 tab-separated fields (head, relation, tail), got 2"),
    ({"valid": ["a\tr\tb", "a\tr\tb\tc"]}, "valid.txt:2: expected 3 tab-separated fields"),
    ({"valid": ["a r b"]}, "valid.txt:1: expected 3"),
    ({"train": ["a\t\tb"]}, "train.txt:1: empty field"),
    ({"test": []}, "test.txt: no triples"),
    ({"test": ["", "  "]}, "test.txt: no triples"),
    ({"valid": b"a\tr\tb\nb\tr\t\xff\xfe\n"}, "valid.txt:2: not UTF-8 text"),
    ({"test": ["x\tr\ty"]}, "test.txt: all 1 triples use entities or relations that never occur in train.txt"),
])
def test_bad_graph_folders_one_clear_line(tmp_path, files, msg):
    folder = tmp_path / "g"
    if files is not None:
        splits = {"train": ["a\tr\tb", "b\tr\ta"], "valid": ["a\tr\tb"], "test": ["b\tr\ta"], **files}
        _write(folder, *(splits[s] if splits[s] is not None else [] for s in kgdata.SPLITS))
        for name, lines in files.items():
            if lines is None:
                (folder / f"{name}.txt").unlink()
    with pytest.raises(JaxdlError) as e:
        kgdata.load_kg(folder)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_synthetic_graph_is_translational_and_recoverable():
    g = kgdata.synthetic_kg(0)
    assert (g.num_entities, g.num_relations) == (100, 8) and g.dropped == {"valid": 0, "test": 0}
    assert len(g.train) + len(g.valid) + len(g.test) == 646
    # The planted embedding: entity = grid coordinates, relation = its offset.
    xy = np.array([[int(n[1:3]), int(n[4:6])] for n in g.entities], np.float32)
    offsets = np.array([[int(n[4:6]), int(n[6:8])] for n in g.relations], np.float32)  # 'move+1-1'
    for h, r, t in g.all_triples():
        np.testing.assert_array_equal(xy[h] + offsets[r], xy[t])
    # The planted embedding ranks every held-out triple first: filtered MRR = 1.
    params = {"entity": jnp.asarray(xy), "relation": jnp.asarray(offsets)}
    metrics = lp.make_evaluator(kge.KGEModel("transe", dim=2, gamma=1.0), g)(params)
    assert metrics["test_mrr"] == 1.0 and metrics["valid_hits@1"] == 1.0
    np.testing.assert_array_equal(kgdata.synthetic_kg(0).test, g.test)  # deterministic
    assert not np.array_equal(kgdata.synthetic_kg(1).test, g.test)


# ---------------------------------------------------------------------------------------
# Known triples, negatives, batches, filters
# ---------------------------------------------------------------------------------------
def test_triple_set_membership_matches_python_set():
    g = _random_kg(1, E=11, R=4, n=60)
    known = kgdata.triple_set(g.train, g.num_entities, g.num_relations, size=len(g.train) + 7)
    every = np.array(list(itertools.product(range(11), range(4), range(11))))
    got = np.asarray(jax.jit(kgdata.contains)(known, every[:, 0], every[:, 1], every[:, 2]))
    truth = {tuple(t) for t in g.train.tolist()}
    np.testing.assert_array_equal(got, [tuple(t) in truth for t in every.tolist()])


@pytest.mark.parametrize("mode", kgdata.CORRUPT_MODES)
def test_corrupt_changes_exactly_one_side_uniformly(mode):
    E, B, K = 5, 400, 50
    triples = jnp.asarray(np.stack([np.arange(B) % E, np.zeros(B), (np.arange(B) + 2) % E], 1), jnp.int32)
    neg = jax.jit(lambda k, t: kgdata.corrupt(k, t, num_entities=E, num_negatives=K, mode=mode))(
        jax.random.key(0), triples)
    chex.assert_shape((neg.heads_BxK, neg.tails_BxK), (B, K))
    assert neg.mask_BxK is None
    h, t = np.asarray(neg.heads_BxK), np.asarray(neg.tails_BxK)
    head_changed = h != np.asarray(triples[:, :1])
    tail_changed = t != np.asarray(triples[:, 2:])
    np.testing.assert_array_equal(head_changed ^ tail_changed, True)  # one side, never the original
    frac_head = head_changed.mean()
    assert {"head": frac_head == 1, "tail": frac_head == 0}.get(mode, abs(frac_head - 0.5) < 0.05)
    if mode == "both":  # one side per positive
        assert np.all(head_changed.all(1) | (~head_changed).all(1))
    if mode == "mixed":
        assert np.any(head_changed.any(1) & (~head_changed).any(1))
    # Replacements are uniform over the other E - 1 entities.
    replaced = np.where(head_changed, h, t)
    original = np.where(head_changed, np.asarray(triples[:, :1]), np.asarray(triples[:, 2:]))
    offsets = (replaced - original) % E  # in 1..E-1, uniform
    counts = np.bincount(offsets.ravel(), minlength=E)
    assert counts[0] == 0
    np.testing.assert_allclose(counts[1:] / counts[1:].sum(), 1 / (E - 1), atol=0.01)


@pytest.mark.parametrize("mode", kgdata.CORRUPT_MODES)
def test_corrupt_filters_known_triples(mode):
    """Every side: one per positive (both, head, tail: the narrowed search of its (h, r)'s
    tails or (t, r)'s heads) or one per negative (mixed: the full search)."""
    g = _random_kg(2, E=6, R=2, n=50)
    known = kgdata.triple_set(g.train, g.num_entities, g.num_relations)
    batch = jnp.asarray(g.train)
    neg = jax.jit(lambda k: kgdata.corrupt(k, batch, num_entities=6, num_negatives=20, mode=mode, known=known))(
        jax.random.key(3))
    truth = {tuple(t) for t in g.train.tolist()}
    r = np.broadcast_to(np.asarray(batch[:, 1:2]), neg.heads_BxK.shape)
    expect = [[(a, b, c) not in truth for a, b, c in zip(*row)] for row in zip(np.asarray(neg.heads_BxK), r,
                                                                              np.asarray(neg.tails_BxK))]
    np.testing.assert_array_equal(np.asarray(neg.mask_BxK), expect)
    assert not np.all(expect)  # the graph is dense enough that some negatives are true


def test_narrowed_membership_search_matches_python_set():
    """(B, 1) positives against (B, K) candidate tails take the narrowed search (each (h, r)
    finds its run of tails once); a padded set, a long run and absent pairs included."""
    g = _random_kg(5, E=13, R=2, n=150)
    train = np.concatenate([g.train, [[4, 1, e] for e in range(13)]])  # (4, 1) knows every tail
    known = kgdata.triple_set(train, 13, 2, size=len(train) + 5)
    h = np.array([4, 0, 3, 12, 7, 4])[:, None]
    r = np.array([1, 0, 1, 1, 0, 0])[:, None]
    t = np.random.default_rng(0).integers(0, 13, (6, 20))
    got = np.asarray(jax.jit(kgdata.contains)(known, h, r, t))
    truth = {tuple(x) for x in train.tolist()}
    np.testing.assert_array_equal(got, [[(h[i, 0], r[i, 0], c) in truth for c in t[i]] for i in range(6)])
    np.testing.assert_array_equal(got, kgdata.contains(known, np.broadcast_to(h, t.shape), r, t))
    assert got[0].all() and not got.all()


def test_narrowed_head_search_matches_python_set():
    """(B, 1) positives against (B, K) candidate heads: each (t, r) finds its run of heads
    once; the full search of the head side, and `contains` itself, agree."""
    g = _random_kg(6, E=13, R=2, n=150)
    train = np.concatenate([g.train, [[e, 0, 9] for e in range(13)]])  # (9, 0) is known with every head
    known = kgdata.triple_set(train, 13, 2, size=len(train) + 3)
    t = np.array([9, 0, 3, 12, 7, 9])[:, None]
    r = np.array([0, 0, 1, 1, 0, 1])[:, None]
    h = np.random.default_rng(1).integers(0, 13, (6, 20))
    got = np.asarray(jax.jit(kgdata.contains_heads)(known, h, r, t))
    truth = {tuple(x) for x in train.tolist()}
    np.testing.assert_array_equal(got, [[(c, r[i, 0], t[i, 0]) in truth for c in h[i]] for i in range(6)])
    np.testing.assert_array_equal(got, kgdata.contains_heads(known, h, r, np.broadcast_to(t, h.shape)))
    np.testing.assert_array_equal(got, kgdata.contains(known, h, r, t))
    assert got[0].all() and not got.all()


def test_shared_draw_is_one_uniform_set_with_the_original_and_known_triples_masked():
    E, B, K = 6, 300, 40
    g = _random_kg(2, E=E, R=2, n=50)
    known = kgdata.triple_set(g.train, E, 2)
    triples = jnp.asarray(np.resize(g.train, (B, 3)))
    draw = jax.jit(lambda k: kgdata.corrupt(k, triples, num_entities=E, num_negatives=K, known=known, shared=True))
    neg = draw(jax.random.key(3))
    rep, h, t = np.asarray(neg.replacement_BxK), np.asarray(neg.heads_BxK), np.asarray(neg.tails_BxK)
    head = np.broadcast_to(np.asarray(neg.corrupt_head), (B, K))
    np.testing.assert_array_equal(np.where(head, h, t), np.broadcast_to(rep, (B, K)))  # the same K for every row
    original = np.where(head, np.asarray(triples[:, :1]), np.asarray(triples[:, 2:]))
    truth = {tuple(x) for x in g.train.tolist()}
    r = np.broadcast_to(np.asarray(triples[:, 1:2]), (B, K))
    expect = [[(a, b, c) not in truth for a, b, c in zip(*row)] for row in zip(h, r, t)]
    np.testing.assert_array_equal(np.asarray(neg.mask_BxK), np.asarray(expect) & (rep != original))
    counts = np.bincount(np.concatenate([np.asarray(draw(k).replacement_BxK).ravel()
                                         for k in jax.random.split(jax.random.key(0), 200)]), minlength=E)
    np.testing.assert_allclose(counts / counts.sum(), 1 / E, atol=0.01)  # uniform over all E entities


def test_epoch_batches_use_every_triple_once():
    triples = jnp.asarray(np.arange(30).reshape(10, 3), jnp.int32)
    b = jax.jit(lambda k: kgdata.epoch_batches({"triples": triples}, k, 4))(jax.random.key(0))
    chex.assert_shape(b["triples"], (3, 4, 3))
    real = np.asarray(b["triples"])[np.asarray(b["mask"])]
    assert np.asarray(b["mask"]).sum() == 10
    np.testing.assert_array_equal(np.sort(real[:, 0]), np.arange(0, 30, 3))


def test_filter_masks_match_brute_force():
    g = _random_kg(4, E=7, R=2, n=45)
    known, queries = g.all_triples(), g.test
    tail_f, head_f = kgdata.filter_masks(known, queries, g.num_entities)
    truth = {tuple(t) for t in known.tolist()}
    for q, (h, r, t) in enumerate(queries.tolist()):
        for e in range(g.num_entities):
            assert tail_f[q, e] == ((h, r, e) in truth and e != t)
            assert head_f[q, e] == ((e, r, t) in truth and e != h)


# ---------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------
def _numpy_score(model, params, h, r, t):
    ent, rel = np.asarray(params["entity"], np.float64), np.asarray(params["relation"], np.float64)
    if model.name == "transe":
        return model.gamma - np.linalg.norm(ent[h] + rel[r] - ent[t], ord=model.p)
    if model.name == "distmult":
        return float(np.sum(ent[h] * rel[r] * ent[t]))
    D = model.dim
    c = lambda v: v[:D] + 1j * v[D:]  # noqa: E731
    if model.name == "complex":
        return float(np.real(np.sum(c(ent[h]) * c(rel[r]) * np.conj(c(ent[t])))))
    rotation = np.exp(1j * rel[r] * np.pi / model.embedding_range)
    return model.gamma - np.abs(c(ent[h]) * rotation - c(ent[t])).sum()


MODELS = [kge.KGEModel("transe", dim=6, gamma=3.0, p=1), kge.KGEModel("transe", dim=6, gamma=3.0, p=2),
          kge.KGEModel("rotate", dim=6, gamma=3.0), kge.KGEModel("distmult", dim=6), kge.KGEModel("complex", dim=6)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.name}-p{m.p}")
def test_scores_match_numpy_and_broadcast(model):
    E, R = 5, 3
    params = kge.init(jax.random.key(1), model, E, R)
    a = model.embedding_range
    assert params["entity"].shape == (E, model.entity_dim) and params["relation"].shape == (R, model.relation_dim)
    assert float(jnp.abs(params["entity"]).max()) <= a and float(jnp.abs(params["relation"]).max()) <= a
    h, r = jnp.array([0, 4, 2]), jnp.array([1, 2, 0])
    all_tails, all_heads = jax.jit(
        lambda p: (kge.score_all_tails(model, p, h, r), kge.score_all_heads(model, p, r, h)))(params)
    chex.assert_shape((all_tails, all_heads), (3, E))
    all_tails, all_heads = np.asarray(all_tails), np.asarray(all_heads)
    for b in range(3):
        for e in range(E):
            np.testing.assert_allclose(all_tails[b, e], _numpy_score(model, params, int(h[b]), int(r[b]), e),
                                       rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(all_heads[b, e], _numpy_score(model, params, e, int(r[b]), int(h[b])),
                                       rtol=1e-5, atol=1e-5)
    negs = jnp.array([[1, 2], [3, 3], [0, 4]])  # (B, K) tails against (B, 1) relations
    np.testing.assert_allclose(jax.jit(kge.score, static_argnums=0)(model, params, h[:, None], r[:, None], negs),
                               np.take_along_axis(all_tails, np.asarray(negs), 1),
                               rtol=1e-5, atol=1e-6)  # summed in another order


@pytest.mark.parametrize("model", [MODELS[0], *MODELS[2:]], ids=lambda m: m.name)
def test_score_corrupted_equals_scoring_spelled_out_negatives(model):
    params = kge.init(jax.random.key(3), model, 7, 3)
    triples = jnp.array([[0, 1, 2], [3, 2, 4], [6, 0, 5], [1, 1, 1]])

    @jax.jit
    def both(params, key):
        neg = kgdata.corrupt(key, triples, num_entities=7, num_negatives=5, mode="mixed")
        fast = kge.score_corrupted(model, params, triples, neg.replacement_BxK, neg.corrupt_head)
        slow = kge.score(model, params, neg.heads_BxK, triples[:, 1:2], neg.tails_BxK)
        grads = [jax.grad(lambda p, f=f: f(p).sum())(params) for f in (
            lambda p: kge.score_corrupted(model, p, triples, neg.replacement_BxK, neg.corrupt_head),
            lambda p: kge.score(model, p, neg.heads_BxK, triples[:, 1:2], neg.tails_BxK))]
        return fast, slow, grads

    fast, slow, (g_fast, g_slow) = both(params, jax.random.key(0))
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(g_fast, g_slow, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", [MODELS[0], MODELS[2]], ids=lambda m: m.name)
def test_blocked_negative_scores_and_their_gradient_equal_spelled_out_scoring(model):
    """K = 21 negatives scored 4 at a time (6 blocks, the last one padded): scores and
    gradients match scoring every negative triple spelled out. (The score functions
    themselves are checked model by model above, with K within one block.)"""
    params = kge.init(jax.random.key(4), model, 9, 3)
    triples = jnp.array([[0, 1, 2], [3, 2, 4], [6, 0, 5], [1, 1, 1], [8, 2, 7]])
    neg = kgdata.corrupt(jax.random.key(1), triples, num_entities=9, num_negatives=21, mode="mixed")
    _assert_scores_and_gradient_equal_spelled_out(model, params, triples, neg, chunk=4)


def _assert_scores_and_gradient_equal_spelled_out(model, params, triples, neg, **score_kw):
    """score_corrupted of `neg` (with `score_kw`) against every corrupted triple scored
    spelled out: values and gradients, under a cotangent that is not all ones."""
    weights = jax.random.normal(jax.random.key(2), neg.heads_BxK.shape)

    def fast(p):
        return (weights * kge.score_corrupted(model, p, triples, neg.replacement_BxK, neg.corrupt_head,
                                              **score_kw)).sum()

    def spelled_out(p):
        return (weights * kge.score(model, p, neg.heads_BxK, triples[:, 1:2], neg.tails_BxK)).sum()

    got, want = jax.jit(lambda p: (jax.value_and_grad(fast)(p), jax.value_and_grad(spelled_out)(p)))(params)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)
    assert np.count_nonzero(np.asarray(got[1]["entity"]).any(-1)) > 1


@pytest.mark.parametrize("mode", kgdata.CORRUPT_MODES)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.name}-p{m.p}")
def test_shared_negative_scores_and_their_gradient_equal_spelled_out_scoring(model, mode):
    """One draw of K replacements for the batch, (1, K): scored as a product or distance
    table, values and gradients equal scoring every corrupted triple spelled out."""
    params = kge.init(jax.random.key(4), model, 9, 3)
    triples = jnp.array([[0, 1, 2], [3, 2, 4], [6, 0, 5], [1, 1, 1], [8, 2, 7]])
    neg = kgdata.corrupt(jax.random.key(1), triples, num_entities=9, num_negatives=6, mode=mode, shared=True)
    chex.assert_shape(neg.replacement_BxK, (1, 6))
    chex.assert_shape((neg.heads_BxK, neg.tails_BxK), (5, 6))
    _assert_scores_and_gradient_equal_spelled_out(model, params, triples, neg)


@pytest.mark.parametrize("kind", kge.DISTANCES)
def test_pairwise_distances_and_their_hand_gradient_equal_autodiff_of_the_broadcast(kind):
    """Float64, B = 5 rows against K = 7, one pair at distance 0 (where |u| has
    autodiff's subgradient +1 and the modulus gradient 0)."""
    with jax.enable_x64(True):
        a = jax.random.normal(jax.random.key(0), (5, 8), jnp.float64)
        b = jax.random.normal(jax.random.key(1), (7, 8), jnp.float64).at[3].set(a[2])
        w = jax.random.normal(jax.random.key(2), (5, 7), jnp.float64)

        def broadcast(a, b):
            d = a[:, None] - b[None]
            if kind == "l1":
                return jnp.abs(d).sum(-1)
            if kind == "squared":
                return (d * d).sum(-1)
            re, im = jnp.split(d, 2, -1)
            return kge._safe_norm(re * re + im * im).sum(-1)

        got = jax.value_and_grad(lambda a, b: (w * kge.pairwise_distances(a, b, kind)).sum(), (0, 1))(a, b)
        want = jax.value_and_grad(lambda a, b: (w * broadcast(a, b)).sum(), (0, 1))(a, b)
        chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)
        assert float(kge.pairwise_distances(a, b, kind)[2, 3]) == 0.0
    with pytest.raises(ValueError, match="kind must be one of"):
        kge.pairwise_distances(a, b, "l3")


@pytest.mark.parametrize("model", MODELS[1:3], ids=lambda m: m.name)
def test_norm_gradient_is_finite_at_zero_distance(model):
    params = {"entity": jnp.zeros((2, model.entity_dim)), "relation": jnp.zeros((1, model.dim))}
    g = jax.grad(lambda p: kge.score(model, p, 0, 0, 1))(params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))


@pytest.mark.parametrize("constraint", kge.ENTITY_CONSTRAINTS)
def test_entity_constraint_projection(constraint):
    params = {"entity": jnp.array([[0.1, 0.0], [3.0, 4.0], [0.0, -0.2]]), "relation": jnp.ones((2, 2))}
    opt = kge.with_entity_constraint(optax.adam(0.1), constraint)
    plain = optax.adam(0.1)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    free, _ = plain.update(grads, plain.init(params), params)
    new, unconstrained = optax.apply_updates(params, updates), optax.apply_updates(params, free)
    np.testing.assert_allclose(updates["relation"], free["relation"])
    norms, free_norms = np.linalg.norm(new["entity"], axis=-1), np.linalg.norm(unconstrained["entity"], axis=-1)
    if constraint == "sphere":
        np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    elif constraint == "ball":  # short vectors untouched, long ones scaled back to norm 1
        np.testing.assert_allclose(norms, np.minimum(free_norms, 1.0), rtol=1e-6)
        np.testing.assert_allclose(new["entity"][0], unconstrained["entity"][0], rtol=1e-6)
    else:
        np.testing.assert_allclose(new["entity"], unconstrained["entity"])


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------
def _scores(seed=0, B=4, K=5):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return 3 * jax.random.normal(k1, (B,)), 3 * jax.random.normal(k2, (B, K))


def test_negative_sampling_loss_matches_numpy():
    pos, neg = _scores()
    w = jax.nn.softmax(neg, -1)
    got = jax.jit(kloss.negative_sampling_loss)(pos_scores_B=pos, neg_scores_BxK=neg, weights_BxK=w)
    p, n, w = (np.asarray(x, np.float64) for x in (pos, neg, w))
    expect = (np.log1p(np.exp(-p)) + (w * np.log1p(np.exp(n))).sum(-1)) / 2
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    big = kloss.negative_sampling_loss(pos_scores_B=jnp.array([-200.0]), neg_scores_BxK=jnp.array([[200.0]]),
                                       weights_BxK=jnp.ones((1, 1)))
    np.testing.assert_allclose(big, [200.0], rtol=1e-6)  # stable where exp would overflow


def test_margin_ranking_loss_matches_numpy():
    pos, neg = _scores(1)
    got = kloss.margin_ranking_loss(pos_scores_B=pos, neg_scores_BxK=neg, margin=2.0)
    expect = np.maximum(0, 2.0 - np.asarray(pos)[:, None] + np.asarray(neg)).mean(-1)
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_self_adversarial_weights_carry_no_gradient():
    pos, neg = _scores(2)
    alpha = 1.3
    w_const = np.asarray(jax.nn.softmax(alpha * neg, -1))

    def adversarial(p, n):
        return kloss.loss_from_scores(p, n, loss="nssa", temperature=alpha).sum()

    def constant_weights(p, n):
        return kloss.negative_sampling_loss(pos_scores_B=p, neg_scores_BxK=n, weights_BxK=w_const).sum()

    def through_weights(p, n):  # what the loss would be without stop_gradient
        w = jax.nn.softmax(alpha * n, -1)
        return kloss.negative_sampling_loss(pos_scores_B=p, neg_scores_BxK=n, weights_BxK=w).sum()

    g = jax.jit(jax.grad(adversarial, argnums=(0, 1)))(pos, neg)
    chex.assert_trees_all_close(g, jax.jit(jax.grad(constant_weights, argnums=(0, 1)))(pos, neg), rtol=1e-6)
    g_through = jax.jit(jax.grad(through_weights, argnums=1))(pos, neg)
    assert np.max(np.abs(np.asarray(g[1]) - np.asarray(g_through))) > 1e-3  # the test can fail
    weights_grad = jax.grad(lambda n: kloss.self_adversarial_weights(n, temperature=alpha).sum())(neg)
    assert float(jnp.abs(weights_grad).max()) == 0


def test_temperature_to_zero_recovers_uniform_weights():
    pos, neg = _scores(3)
    uniform = lambda p, n: kloss.loss_from_scores(p, n, loss="ns").mean()  # noqa: E731
    for alpha in (1e-3, 1e-5):
        adv = lambda p, n: kloss.loss_from_scores(p, n, loss="nssa", temperature=alpha).mean()  # noqa: E731
        tol = 10 * alpha
        np.testing.assert_allclose(adv(pos, neg), uniform(pos, neg), rtol=tol)
        chex.assert_trees_all_close(jax.grad(adv, (0, 1))(pos, neg), jax.grad(uniform, (0, 1))(pos, neg), rtol=tol,
                                    atol=tol)
    assert abs(float(kloss.loss_from_scores(pos, neg, loss="nssa", temperature=1.0).mean()
                     - uniform(pos, neg))) > 1e-3


@pytest.mark.parametrize("loss", kloss.LOSSES)
def test_masked_negatives_are_ignored(loss):
    pos, neg = _scores(4, B=3, K=4)
    mask = jnp.array([[True, False, True, True]] * 3)
    masked = kloss.loss_from_scores(pos, neg, loss=loss, mask_BxK=mask)
    dropped = kloss.loss_from_scores(pos, neg[:, jnp.array([0, 2, 3])], loss=loss)
    np.testing.assert_allclose(masked, dropped, rtol=1e-6)


def test_subsampling_weights_match_the_counting_spelled_out():
    kg = _random_kg(seed=3, E=6, R=2, n=60)
    count = {}
    for h, r, t in kg.train.tolist():  # the RotatE code's count, from 4 for a pair's first triple
        for key in ((h, r), (t, -r - 1)):
            count[key] = count[key] + 1 if key in count else 4
    expect = [1 / np.sqrt(count[(h, r)] + count[(t, -r - 1)]) for h, r, t in kg.train.tolist()]
    got = kgdata.subsampling_weights(kg.train, kg.num_relations)
    assert got.dtype == np.float32 and len(set(np.round(got, 6))) > 1
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_epoch_batches_carry_each_triples_weight():
    triples = jnp.asarray(np.arange(30).reshape(10, 3), jnp.int32)
    weight = jnp.arange(10, dtype=jnp.float32) / 10
    b = jax.jit(lambda k: kgdata.epoch_batches({"triples": triples, "weight": weight}, k, 4))(jax.random.key(1))
    mask = np.asarray(b["mask"])
    np.testing.assert_allclose(np.asarray(b["weight"])[mask], np.asarray(b["triples"])[mask][:, 0] / 30)


def test_weighted_loss_is_the_weighted_mean_of_the_rows():
    model = kge.KGEModel("transe", dim=4)
    params = kge.init(jax.random.key(0), model, 5, 2)
    triples = jnp.array([[0, 1, 2], [3, 0, 4], [1, 1, 1]])
    weight = jnp.array([0.5, 2.0, 7.0])

    @jax.jit
    def losses(params):
        one = lambda mask, w: kloss.kge_loss(model, params, triples, jax.random.key(5), num_entities=5,  # noqa: E731
                                             num_negatives=3, mask_B=mask, weight_B=w)[0]
        rows = jax.vmap(lambda m: one(m, None))(jnp.eye(3, dtype=bool))
        return one(jnp.array([True, True, False]), weight), one(None, jnp.ones(3)), one(None, None), rows

    weighted, uniform, plain, rows = losses(params)
    np.testing.assert_allclose(weighted, (0.5 * rows[0] + 2.0 * rows[1]) / 2.5, rtol=1e-6)  # padding left out
    np.testing.assert_allclose(uniform, plain, rtol=1e-6)


def test_padding_rows_are_left_out_of_the_batch_mean():
    model = kge.KGEModel("transe", dim=4)
    params = kge.init(jax.random.key(0), model, 5, 2)
    triples = jnp.array([[0, 1, 2], [3, 0, 4], [1, 1, 1]])

    @jax.jit
    def losses(params):
        one = lambda mask: kloss.kge_loss(model, params, triples, jax.random.key(5), num_entities=5,  # noqa: E731
                                          num_negatives=3, mask_B=mask)[0]
        return one(jnp.array([True, True, False])), jax.vmap(one)(jnp.eye(3, dtype=bool)), one(None)

    padded, rows, full = losses(params)
    np.testing.assert_allclose(padded, rows[:2].mean(), rtol=1e-6)  # padding row excluded from the mean
    np.testing.assert_allclose(full, rows.mean(), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------------------
def _brute_rank(scores, target, filt):
    s = np.asarray(scores, np.float64)
    others = [e for e in range(len(s)) if e != target and not filt[e]]
    greater = sum(s[e] > s[target] for e in others)
    equal = sum(s[e] == s[target] for e in others)
    return ((1 + greater) + (1 + greater + equal)) / 2  # mean of optimistic and pessimistic


def test_ranks_from_scores_ties_and_filters():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (30, 9)).astype(np.float32)  # many ties
    targets = rng.integers(0, 9, 30)
    filt = rng.random((30, 9)) < 0.3
    got = jax.jit(lp.ranks_from_scores)(jnp.asarray(scores), jnp.asarray(targets), jnp.asarray(filt))
    np.testing.assert_allclose(got, [_brute_rank(s, t, f) for s, t, f in zip(scores, targets, filt)])
    constant = lp.ranks_from_scores(jnp.zeros((1, 9)), jnp.array([4]))
    assert float(constant[0]) == 5.0  # all tied: the middle rank, not 1
    nan = lp.ranks_from_scores(jnp.array([[0.0, jnp.nan, 1.0]]), jnp.array([1]))
    assert float(nan[0]) == 3.0


@pytest.mark.parametrize("model", [MODELS[0], MODELS[2], MODELS[4]], ids=lambda m: m.name)
def test_evaluator_matches_brute_force(model):
    g = _random_kg(5, E=9, R=3, n=70)
    params = kge.init(jax.random.key(2), model, g.num_entities, g.num_relations)
    # chunks of 3 queries, blocks of at most 2 chunks: exercises padding and the block loop
    got = lp.make_evaluator(model, g, batch_size=3, block_bytes=2 * 2 * 3 * 9)(params)
    truth = {tuple(t) for t in g.all_triples().tolist()}
    for name in ("valid", "test"):
        ranks = []
        for h, r, t in g.split(name).tolist():
            tails = [_numpy_score(model, params, h, r, e) for e in range(g.num_entities)]
            heads = [_numpy_score(model, params, e, r, t) for e in range(g.num_entities)]
            ranks.append(_brute_rank(np.float32(tails), t, [(h, r, e) in truth for e in range(9)]))
            ranks.append(_brute_rank(np.float32(heads), h, [(e, r, t) in truth for e in range(9)]))
        ranks = np.array(ranks)
        np.testing.assert_allclose(got[f"{name}_mrr"], np.mean(1 / ranks), rtol=1e-5)
        np.testing.assert_allclose(got[f"{name}_mr"], np.mean(ranks), rtol=1e-5)
        for k in (1, 3, 10):
            np.testing.assert_allclose(got[f"{name}_hits@{k}"], np.mean(ranks <= k), rtol=1e-6)


def test_ranking_metrics_with_mask():
    m = lp.ranking_metrics(jnp.array([1.0, 2.0, 4.0, 100.0]), mask=jnp.array([1, 1, 1, 0]))
    np.testing.assert_allclose([m["mrr"], m["mr"], m["hits@1"], m["hits@3"], m["hits@10"]],
                               [(1 + 0.5 + 0.25) / 3, 7 / 3, 1 / 3, 2 / 3, 1.0], rtol=1e-6)
