"""The FedE reference code's behaviours, each selectable, against independent computations:
negatives drawn from a pool and filtered against training triples, a fresh optimizer per
round, the whole table downloaded, the mean over every holder, the reference's evaluation
protocol (tails only, among the client's entities) against a numpy ranking, and model
fusion (its loss, its fit, its fused ranking)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data import federated as fd
from jaxdl.data.kg import contains, corrupt, triple_set
from jaxdl.eval.federated import make_client_evaluator
from jaxdl.losses.kge import make_loss_fn
from jaxdl.models.kge import KGEModel
from jaxdl.train import federated as fed
from jaxdl.train import fusion
from jaxdl.train.step import make_train_step
from tests.test_fede import tiny_kg

MODEL = KGEModel("transe", dim=4, gamma=3.0)
BATCH = 16


@pytest.fixture(scope="module")
def kg():
    return tiny_kg(seed=2, num_entities=20, num_relations=6, num_triples=200)


@pytest.fixture(scope="module")
def split(kg):
    return fd.split_by_relation(kg, 3, seed=0)


def test_corrupt_from_a_pool_draws_only_pool_members():
    pool = jnp.asarray([3, 7, 11, 0, 0], jnp.int32)  # the first 3 are the pool
    triples = jnp.asarray([[1, 0, 2], [4, 1, 5]], jnp.int32)
    neg = corrupt(jax.random.key(0), triples, num_entities=20, num_negatives=500, mode="tail", pool_P=pool,
                  pool_size=3)
    assert set(np.unique(neg.replacement_BxK).tolist()) == {3, 7, 11}
    np.testing.assert_array_equal(neg.heads_BxK, np.repeat(np.asarray(triples[:, :1]), 500, 1))


def test_negative_extras_filter_training_triples_and_pool_held_entities(kg, split):
    stack = fd.stack_clients(split)
    extras = fed.negative_extras(stack, filtered=True, pool="held")
    for c, client in enumerate(split.clients):
        held = client.entities()
        n = int(extras["pool_size"][c])
        np.testing.assert_array_equal(extras["pool_E"][c][:n], held)
        known = type(triple_set(client.train, 1, 1))(jnp.asarray(extras["known_key_N"][c]),
                                                      jnp.asarray(extras["known_tail_N"][c]),
                                                      jnp.asarray(extras["known_relations"][c]))
        t = client.train
        assert bool(contains(known, t[:, 0], t[:, 1], t[:, 2]).all())
        outsiders = [(h, r, e) for h, r, _ in t[:5] for e in range(kg.num_entities)
                     if not ((t[:, 0] == h) & (t[:, 1] == r) & (t[:, 2] == e)).any()]
        o = np.asarray(outsiders)
        assert not bool(contains(known, o[:, 0], o[:, 1], o[:, 2]).any())


def test_loss_with_extras_masks_known_and_draws_from_the_pool(kg, split):
    """The loss reads the per-client extras from its batch: a filtered negative never
    counts, and pooled replacements are the client's entities."""
    stack = fd.stack_clients(split)
    extras = fed.negative_extras(stack, filtered=True, pool="held")
    c = 0
    client = split.clients[c]
    batch = {"triples": jnp.asarray(client.train[:8]), **{k: jnp.asarray(v[c]) for k, v in extras.items()}}
    loss_fn = make_loss_fn(MODEL, num_entities=kg.num_entities, num_negatives=64, corrupt_mode="tail")
    params = {"entity": jnp.zeros((kg.num_entities, 4)), "relation": jnp.zeros((client.num_relations, 4))}
    loss, metrics = loss_fn(params, batch, jax.random.key(1))
    assert np.isfinite(float(loss))
    # the same draw, by hand
    from jaxdl.losses.kge import batch_negatives
    neg = batch_negatives(batch, jax.random.key(1), num_entities=kg.num_entities, num_negatives=64,
                          corrupt_mode="tail")
    assert set(np.unique(neg.replacement_BxK).tolist()) <= set(client.entities().tolist())
    train = {tuple(t) for t in client.train.tolist()}
    for b in range(8):
        for k in range(64):
            triple = (int(neg.heads_BxK[b, k]), int(batch["triples"][b, 1]), int(neg.tails_BxK[b, k]))
            assert bool(neg.mask_BxK[b, k]) == (triple not in train)


def _setup(kg, split, lr=0.05):
    stack = fd.stack_clients(split)
    optimizer = optax.adam(lr)
    step = make_train_step(make_loss_fn(MODEL, num_entities=kg.num_entities, num_negatives=3), optimizer)
    state = fed.init_fed_state(jax.random.key(0), MODEL, stack, optimizer)
    return stack, optimizer, step, state, fed.client_arrays(stack, BATCH)


def test_reset_optimizer_equals_a_round_from_fresh_state(kg, split):
    stack, optimizer, step, state, data = _setup(kg, split)
    kw = dict(aggregate=True, local_epochs=1, batch_size=BATCH, num_clients=3, participants=3,
              entity_dim=MODEL.entity_dim)
    keep = jax.jit(fed.make_round(step, **kw))
    reset = jax.jit(fed.make_round(step, **kw, reset_optimizer=optimizer))
    s1, _ = keep(state, data, jax.random.key(1))  # moments now non-zero
    a, _ = reset(s1, data, jax.random.key(2))
    fresh = s1._replace(clients=s1.clients._replace(opt_state=jax.vmap(optimizer.init)(s1.clients.params)))
    b, _ = keep(fresh, data, jax.random.key(2))  # another program: equal up to float rounding
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7), a, b)
    c, _ = keep(s1, data, jax.random.key(2))
    assert not np.allclose(c.server_entity, a.server_entity)  # carrying the moments over differs


def test_download_all_sends_every_row_held_download_only_held_rows(kg, split):
    stack, optimizer, step0, state, data = _setup(kg, split)
    frozen = make_train_step(make_loss_fn(MODEL, num_entities=kg.num_entities, num_negatives=3), optax.sgd(0.0))
    state = state._replace(clients=state.clients._replace(
        params={**state.clients.params, "entity": state.clients.params["entity"] + jnp.arange(3.0)[:, None, None]}))
    kw = dict(aggregate=True, local_epochs=1, batch_size=BATCH, num_clients=3, participants=3,
              entity_dim=MODEL.entity_dim)
    server = np.asarray(state.server_entity)
    held = stack.entity_mask_CxE
    everything, m_all = jax.jit(fed.make_round(frozen, **kw, download="all"))(state, data, jax.random.key(0))
    for c in range(3):  # lr 0: the client tables are what was downloaded
        np.testing.assert_array_equal(everything.clients.params["entity"][c], server)
    assert float(m_all["floats_down"]) == 3 * kg.num_entities * MODEL.entity_dim
    view = fed.evaluation_params(everything, held, aggregate=True, download="all")["entity"]
    np.testing.assert_array_equal(view, np.broadcast_to(np.asarray(everything.server_entity), view.shape))
    rows, _ = jax.jit(fed.make_round(frozen, **kw, download="held"))(state, data, jax.random.key(0))
    before = np.asarray(state.clients.params["entity"])
    for c in range(3):
        np.testing.assert_array_equal(rows.clients.params["entity"][c][held[c]], server[held[c]])
        np.testing.assert_array_equal(rows.clients.params["entity"][c][~held[c]], before[c][~held[c]])


def test_average_over_holders_counts_clients_that_sat_out(kg, split):
    """With one participant of three and the whole table downloaded, the reference's mean
    over every holder equals a numpy mean in which the idle holders add the server's value."""
    stack, optimizer, step, state, data = _setup(kg, split)
    kw = dict(aggregate=True, local_epochs=1, batch_size=BATCH, num_clients=3, participants=1,
              entity_dim=MODEL.entity_dim, download="all", average="holders")
    new, _ = jax.jit(fed.make_round(step, **kw))(state, data, jax.random.key(5))
    trained = np.asarray(new.clients.params["entity"])
    changed = [not np.allclose(new.clients.params["relation"][c], state.clients.params["relation"][c])
               for c in range(3)]
    (p,) = np.flatnonzero(changed)
    server = np.asarray(state.server_entity)
    held = stack.entity_mask_CxE
    values = np.stack([trained[c] if c == p else server for c in range(3)])
    count = held.sum(0)
    expected = np.where(count[:, None] > 0, (held[..., None] * values).sum(0) / np.maximum(count, 1)[:, None], server)
    np.testing.assert_allclose(new.server_entity, expected, rtol=1e-6, atol=1e-7)


def _numpy_tail_ranks(ent, rel, triples, known, candidates, gamma):
    known = {tuple(t) for t in known}
    ranks = []
    for h, r, t in triples:
        s = gamma - np.abs(ent[h] + rel[r] - ent).sum(-1)
        keep = np.array([e in candidates and ((h, r, e) not in known) and e != t for e in range(len(ent))])
        ranks.append(1 + (keep & (s > s[t])).sum() + 0.5 * (keep & (s == s[t])).sum())
    return np.array(ranks)


def test_reference_protocol_ranks_tails_among_the_clients_entities(kg, split):
    stack, optimizer, step, state, data = _setup(kg, split)
    params = jax.device_get(state.clients.params)
    params = {**params, "entity": params["entity"] + np.random.default_rng(0).normal(size=params["entity"].shape)}
    results = make_client_evaluator(MODEL, list(split.clients), kg.num_entities, batch_size=4,
                                    protocol="reference")(params)
    standard = make_client_evaluator(MODEL, list(split.clients), kg.num_entities, batch_size=4)(params)
    for i, c in enumerate(split.clients):
        ranks = _numpy_tail_ranks(params["entity"][i], params["relation"][i], c.test, c.known(),
                                  set(c.entities().tolist()), MODEL.gamma)
        np.testing.assert_allclose(results["test"]["mrr"][i], np.mean(1 / ranks), rtol=1e-5)
        np.testing.assert_allclose(results["test"]["mr"][i], np.mean(ranks), rtol=1e-5)
    assert not np.allclose(results["test"]["mrr"], standard["test"]["mrr"])


# ---------------------------------------------------------------------------------------
# Model fusion
# ---------------------------------------------------------------------------------------
def test_fusion_loss_matches_numpy():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(size=(5, 2)) * 5, rng.normal(size=(5, 4, 2)) * 5
    neg_mask, mask = rng.random((5, 4)) < 0.8, np.array([1, 1, 1, 0, 1], bool)
    p = {"w": jnp.asarray([0.3, 1.2]), "b": jnp.asarray(0.5)}
    s_pos, s_neg = pos @ np.array([0.3, 1.2]) + 0.5, neg @ np.array([0.3, 1.2]) + 0.5
    hinge = np.maximum(0, 10 - s_pos[:, None] + s_neg)
    w = neg_mask & mask[:, None]
    expected = (hinge * w).sum() / w.sum()
    np.testing.assert_allclose(fusion.fusion_loss(p, pos, neg, neg_mask, mask), expected, rtol=1e-5)


def test_fusion_learns_to_trust_the_model_that_ranks(kg, split):
    """One model scores the truth, the other noise: the fit moves weight to the first, its
    loss falls, and its fused ranking equals a numpy ranking of w . scores + b."""
    rng = np.random.default_rng(0)
    E = kg.num_entities
    good = {"entity": rng.normal(size=(3, E, 4)).astype(np.float32), "relation": np.zeros((3, 2, 4), np.float32)}
    noise = {"entity": rng.normal(size=(3, E, 4)).astype(np.float32), "relation": np.zeros((3, 2, 4), np.float32)}
    # make each client's validation triples true under `good`: t's vector = h's + r's (r = 0)
    clients = list(split.clients)
    for i, c in enumerate(clients):
        for h, _, t in c.valid:
            good["entity"][i, t] = good["entity"][i, h]
    data = fusion.fusion_data(MODEL, noise, MODEL, good, clients, E, jax.random.key(0), num_negatives=16)
    params, losses = fusion.train_fusion(data, epochs=60, batch_size=8)
    assert (np.asarray(params["w"])[:, 1] > np.asarray(params["w"])[:, 0]).all()
    assert (np.asarray(losses[-1]) < np.asarray(losses[0])).all()
    scorer = fusion.FusionScores(MODEL, MODEL)
    both = {"isolation": noise, "fede": good, "fusion": jax.device_get(params)}
    results = make_client_evaluator(scorer, clients, E, batch_size=4, protocol="reference")(both)
    for i, c in enumerate(clients):
        w, b = np.asarray(params["w"][i]), float(params["b"][i])
        known = {tuple(t) for t in c.known().tolist()}
        held = set(c.entities().tolist())
        ranks = []
        for h, r, t in c.test:
            s = np.stack([MODEL.gamma - np.abs(m["entity"][i][h] + m["relation"][i][r] - m["entity"][i]).sum(-1)
                          for m in (noise, good)], -1) @ w + b
            keep = np.array([e in held and (h, r, e) not in known and e != t for e in range(E)])
            ranks.append(1 + (keep & (s > s[t])).sum() + 0.5 * (keep & (s == s[t])).sum())
        np.testing.assert_allclose(results["test"]["mrr"][i], np.mean(1 / np.array(ranks)), rtol=1e-4)
