"""FedE pieces on tiny graphs the tests write: the relation split, stacking, the server's
aggregation (mean over holders only, clients without an entity untouched, relation
embeddings never shared), the vmapped round against clients trained one by one and a
brute-force mean, the per-client evaluator against a numpy ranking, and bad input."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data import federated as fd
from jaxdl.data.kg import from_named_triples, load_kg, write_kg
from jaxdl.errors import JaxdlError
from jaxdl.eval.federated import flat_metrics, make_client_evaluator, weighted_overall
from jaxdl.losses.kge import make_loss_fn
from jaxdl.models.kge import KGEModel
from jaxdl.train import federated as fed
from jaxdl.train.step import make_train_step


def tiny_kg(seed=0, num_entities=14, num_relations=6, num_triples=120):
    """A random graph of named triples (every entity and relation used), as load_kg reads it."""
    rng = np.random.default_rng(seed)
    triples = {(f"e{rng.integers(num_entities):02d}", f"r{r}", f"e{rng.integers(num_entities):02d}")
               for r in rng.integers(num_relations, size=num_triples)}
    triples |= {(f"e{i:02d}", f"r{i % num_relations}", f"e{(i + 1) % num_entities:02d}") for i in range(num_entities)}
    triples = sorted(triples)
    order = rng.permutation(len(triples))
    cut = [int(0.8 * len(triples)), int(0.9 * len(triples))]
    pick = lambda idx: [triples[i] for i in idx]  # noqa: E731
    return from_named_triples({"train": pick(order[:cut[0]]), "valid": pick(order[cut[0]:cut[1]]),
                               "test": pick(order[cut[1]:])}, source="tiny")


@pytest.fixture(scope="module")
def kg(tmp_path_factory):
    folder = write_kg(tmp_path_factory.mktemp("g"), tiny_kg())
    return load_kg(folder)


# ---------------------------------------------------------------------------------------
# The split
# ---------------------------------------------------------------------------------------
def test_split_by_relation_properties(kg):
    split = fd.split_by_relation(kg, 3, seed=1)
    assert split.num_clients == 3
    owners = np.concatenate([c.relations for c in split.clients])
    assert sorted(owners.tolist()) == list(range(kg.num_relations))  # each relation: exactly one client
    assert sorted(c.num_relations for c in split.clients) == [2, 2, 2]  # dealt evenly
    pooled = [c.to_global(c.split(n)) for c in split.clients for n in ("train", "valid", "test")]
    np.testing.assert_array_equal(np.unique(np.concatenate(pooled), axis=0), fd.graph_triples(kg))
    assert sum(map(len, pooled)) == len(fd.graph_triples(kg))  # no triple twice
    for c in split.clients:
        for name in ("train", "valid", "test"):
            t = c.split(name)
            assert t.dtype == np.int32 and ((0 <= t[:, 1]) & (t[:, 1] < c.num_relations)).all()
            # triples follow their relation
            assert set(c.to_global(t)[:, 1]) <= set(c.relations.tolist())
        held = set(c.entities().tolist())
        for name in ("valid", "test"):  # everything asked about was seen in training
            t = c.split(name)
            assert set(t[:, 0]) | set(t[:, 2]) <= held and set(t[:, 1]) <= set(c.train[:, 1])
    n = split.sizes("train") + split.sizes("valid") + split.sizes("test")
    assert (split.sizes("test") <= np.round(0.1 * n) + 0).all() and split.sizes("test").sum() > 0
    # deterministic in the seed, different across seeds
    again = fd.split_by_relation(kg, 3, seed=1)
    assert all(np.array_equal(a.train, b.train) for a, b in zip(split.clients, again.clients))
    other = fd.split_by_relation(kg, 3, seed=2)
    assert any(not np.array_equal(a.relations, b.relations) for a, b in zip(split.clients, other.clients))


def test_split_moves_unseen_heldout_triples_to_train():
    # Relation 'b' has one triple: wherever the random split puts it, it must end in train.
    kg = from_named_triples({"train": [("x", "a", "y"), ("y", "a", "z"), ("z", "a", "x"), ("x", "b", "z")] * 1,
                             "valid": [], "test": []})
    for seed in range(5):
        split = fd.split_by_relation(kg, 1, seed=seed, valid_fraction=0.3, test_fraction=0.3)
        (c,) = split.clients
        assert len(c.train) + len(c.valid) + len(c.test) == 4
        assert set(c.to_global(c.train)[:, 1]) == {0, 1}


def test_split_save_load_roundtrip_and_mismatch(kg, tmp_path):
    split = fd.split_by_relation(kg, 2, seed=0)
    path = fd.save_split(tmp_path / "s.npz", split)
    back = fd.load_split(path, kg)
    assert back.fingerprint == split.fingerprint and back.num_clients == 2
    for a, b in zip(split.clients, back.clients):
        for name in ("train", "valid", "test"):
            np.testing.assert_array_equal(a.split(name), b.split(name))
        np.testing.assert_array_equal(a.relations, b.relations)
    other = tiny_kg(seed=5)
    with pytest.raises(JaxdlError, match="different graph|made for a graph"):
        fd.load_split(path, other)
    with np.load(path) as z:  # a split with one array missing
        arrays = {k: z[k] for k in z.files if k != "client1_train"}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(JaxdlError, match="incomplete or damaged split"):
        fd.load_split(tmp_path / "partial.npz", kg)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(JaxdlError, match="not a saved split"):
        fd.load_split(tmp_path / "bad.npz", kg)
    with pytest.raises(JaxdlError, match="no such file"):
        fd.load_split(tmp_path / "missing.npz", kg)


def test_check_split_rejects_a_tampered_split(kg):
    split = fd.split_by_relation(kg, 2, seed=0)
    c0 = split.clients[0]
    dropped = fd.ClientData(c0.relations, c0.train[1:], c0.valid, c0.test)
    with pytest.raises(JaxdlError, match="not exactly the graph"):
        fd.check_split(dataclasses.replace(split, clients=(dropped, *split.clients[1:])), kg)
    stolen = fd.ClientData(split.clients[1].relations[:1], c0.train[:0], c0.valid[:0], c0.test[:0])
    with pytest.raises(JaxdlError, match="two clients"):
        fd.check_split(dataclasses.replace(split, clients=(*split.clients, stolen)), kg)


@pytest.mark.parametrize("clients,kwargs,msg", [
    (7, {}, "more clients than the graph's 6 relations"),
    (0, {}, "at least one client"),
    (2, {"valid_fraction": 0.0}, "valid fraction must be in"),
    (2, {"test_fraction": 1.5}, "test fraction must be in"),
    (2, {"valid_fraction": 0.5, "test_fraction": 0.5}, "leave a training part"),
])
def test_split_bad_input(kg, clients, kwargs, msg):
    with pytest.raises(JaxdlError, match=msg):
        fd.split_by_relation(kg, clients, **kwargs)


def test_stack_clients_pads_with_masks(kg):
    split = fd.split_by_relation(kg, 3, seed=0)
    stack = fd.stack_clients(split)
    N = max(len(c.train) for c in split.clients)
    assert stack.train_CxNx3.shape == (3, N, 3) and stack.client_mask_C.tolist() == [True, True, True]
    for i, c in enumerate(split.clients):
        np.testing.assert_array_equal(stack.train_CxNx3[i][stack.train_mask_CxN[i]], c.train)
        assert stack.relation_mask_CxR[i].sum() == c.num_relations
        assert set(np.flatnonzero(stack.entity_mask_CxE[i])) == set(c.entities().tolist())
    assert stack.num_train_C.tolist() == [len(c.train) for c in split.clients]


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------
HOLDS = np.array([[1, 1, 0, 0, 1],
                  [1, 0, 1, 0, 1],
                  [0, 1, 1, 0, 0]], bool)  # entity 3: nobody holds it


def _brute_aggregate(client_ExD, holds, participating, server):
    out = np.array(server, copy=True)
    for e in range(server.shape[0]):
        rows = [client_ExD[c, e] for c in range(len(holds)) if holds[c, e] and participating[c]]
        if rows:
            out[e] = np.mean(rows, axis=0)
    return out


@pytest.mark.parametrize("participating", [[1, 1, 1], [1, 0, 1], [0, 1, 0]])
def test_aggregate_is_mean_over_participating_holders(participating):
    rng = np.random.default_rng(0)
    client = rng.normal(size=(3, 5, 4)).astype(np.float32)
    server = rng.normal(size=(5, 4)).astype(np.float32)
    part = np.array(participating, bool)
    got, holders = jax.jit(fed.aggregate_entities)(client, HOLDS, part, server)
    np.testing.assert_allclose(got, _brute_aggregate(client, HOLDS, part, server), rtol=1e-6)
    np.testing.assert_array_equal(holders, (HOLDS & part[:, None]).sum(0))
    np.testing.assert_array_equal(got[3], server[3])  # held by nobody: the server keeps it
    # rows a client does not hold (or of a client not taking part) never reach the server
    poisoned = client.copy()
    poisoned[~(HOLDS & part[:, None])] = 1e6
    np.testing.assert_array_equal(fed.aggregate_entities(poisoned, HOLDS, part, server)[0], got)


def test_broadcast_touches_only_held_rows_of_receivers():
    rng = np.random.default_rng(1)
    client = rng.normal(size=(3, 5, 2)).astype(np.float32)
    server = rng.normal(size=(5, 2)).astype(np.float32)
    receiving = np.array([True, False, True])
    got = np.asarray(fed.broadcast_entities(server, client, HOLDS, receiving))
    for c in range(3):
        for e in range(5):
            expected = server[e] if HOLDS[c, e] and receiving[c] else client[c, e]
            np.testing.assert_array_equal(got[c, e], expected)


def test_communication_counts_held_rows_of_participants():
    comm = fed.communication(jnp.asarray(HOLDS), jnp.array([True, False, True]), 8)
    assert int(comm["floats_up"]) == int(comm["floats_down"]) == (3 + 2) * 8


# ---------------------------------------------------------------------------------------
# A round
# ---------------------------------------------------------------------------------------
MODEL = KGEModel("transe", dim=4, gamma=3.0)
BATCH = 16


@pytest.fixture(scope="module")
def setup(kg):
    split = fd.split_by_relation(kg, 3, seed=0)
    stack = fd.stack_clients(split)
    optimizer = optax.adam(0.05)
    step = make_train_step(make_loss_fn(MODEL, num_entities=kg.num_entities, num_negatives=3), optimizer)
    state = fed.init_fed_state(jax.random.key(0), MODEL, stack, optimizer)
    return split, stack, step, state, fed.client_arrays(stack, BATCH)


_ROUNDS: dict = {}


def _round(step, aggregate, participants=3):
    """One local epoch per round; jitted rounds are cached (each compile costs seconds)."""
    key = (id(step), aggregate, participants)
    if key not in _ROUNDS:
        _ROUNDS[key] = jax.jit(fed.make_round(step, aggregate=aggregate, local_epochs=1, batch_size=BATCH,
                                              num_clients=3, participants=participants,
                                              entity_dim=MODEL.entity_dim))
    return _ROUNDS[key]


def test_fede_round_is_local_training_per_client_plus_mean_over_holders(setup):
    """The vmapped FedE round against each client trained alone by a jitted `local_train`
    in a Python loop, and the server's table against a brute-force mean."""
    split, stack, step, state, data = setup
    key = jax.random.key(3)
    fede_state, m = _round(step, True)(state, data, key)
    train_one = jax.jit(lambda s, t, mask, k: fed.local_train(step, s, t, mask, k, local_epochs=1, batch_size=BATCH))
    k_train = jax.random.split(key)[1]
    alone = [train_one(jax.tree.map(lambda a: a[c], state.clients), data.train_CxNx3[c], data.train_mask_CxN[c],
                       jax.random.fold_in(k_train, c)) for c in range(3)]
    # Round 1 starts from the server's copy (the download changes nothing), so each client
    # of the round is exactly that client trained alone.
    alone_clients = jax.tree.map(lambda *xs: np.stack(xs), *[s for s, _ in alone])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), fede_state.clients,
                 alone_clients)
    np.testing.assert_allclose(m["loss"], np.mean([float(mm["loss"]) for _, mm in alone]), rtol=1e-5)
    # Relation tables stay with their client: not averaged, not overwritten, all distinct.
    rel = np.asarray(fede_state.clients.params["relation"])
    assert not np.allclose(rel[0], rel[1]) and not np.allclose(rel[1], rel[2])
    # The server's table is the mean over holders of the clients' trained tables.
    expected = _brute_aggregate(alone_clients.params["entity"], stack.entity_mask_CxE, np.ones(3, bool),
                                np.asarray(state.server_entity))
    np.testing.assert_allclose(fede_state.server_entity, expected, rtol=1e-5, atol=1e-6)
    assert int(m["floats_up"]) == int(m["floats_down"]) == stack.entity_mask_CxE.sum() * MODEL.entity_dim
    assert bool(m["finite"]) and int(fede_state.round) == 1
    # Every real step happened, no padding step: each client took ceil(N_c / B) steps.
    np.testing.assert_array_equal(fede_state.clients.step, np.ceil(stack.num_train_C / BATCH))


def test_phases_cover_each_client_exactly_its_own_steps():
    total = np.array([12, 0, 6, 12, 3, 6])
    seen = np.zeros_like(total)
    last_end = 0
    for first, end, clients in fed._phases(total):
        assert first == last_end and end > first
        last_end = end
        seen[clients] += end - first
        assert np.all(total[clients] >= end)  # no client computes a step past its own count
    np.testing.assert_array_equal(seen, total)


@pytest.mark.parametrize("aggregate", [True, False])
@pytest.mark.parametrize("schedule", ["packed", "sequential"])
def test_unpadded_rounds_equal_padded_round(setup, aggregate, schedule):
    """The packed schedule (client_steps given: no padding steps) and the sequential one
    (one client after the other, each its own step count) compute what the padded vmapped
    round computes, over two rounds of two local epochs."""
    split, stack, step, state, data = setup
    steps = fed.client_steps(stack, BATCH)
    assert len(set(steps)) > 1  # the clients really differ in size: phases are exercised
    kw = dict(aggregate=aggregate, local_epochs=2, batch_size=BATCH, num_clients=3, participants=3,
              entity_dim=MODEL.entity_dim)
    padded = jax.jit(fed.make_round(step, **kw))
    other = jax.jit(fed.make_round(step, **kw, client_steps=steps) if schedule == "packed" else
                    fed.make_round(step, **kw, sequential=True))
    a, b = state, state
    for r in range(2):
        a, ma = padded(a, data, jax.random.key(r))
        b, mb = other(b, data, jax.random.key(r))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), (a, ma), (b, mb))
    np.testing.assert_array_equal(b.clients.step, 4 * np.ceil(stack.num_train_C / BATCH))


def test_sequential_round_trains_only_the_picked_clients_as_the_vmap(setup):
    """With a fraction of the clients, the sequential round trains the same picked clients
    to the same values as the vmapped one, and leaves the others as they were."""
    split, stack, step, state, data = setup
    kw = dict(aggregate=True, local_epochs=1, batch_size=BATCH, num_clients=3, participants=1,
              entity_dim=MODEL.entity_dim)
    a, ma = jax.jit(fed.make_round(step, **kw))(state, data, jax.random.key(5))
    b, mb = jax.jit(fed.make_round(step, **kw, sequential=True))(state, data, jax.random.key(5))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), (a, ma), (b, mb))
    trained = np.asarray(b.clients.step) > 0
    assert trained.sum() == 1
    np.testing.assert_array_equal(np.asarray(b.clients.params["relation"])[~trained],
                                  np.asarray(state.clients.params["relation"])[~trained])


def test_round_two_downloads_only_held_rows(setup):
    split, stack, step, state, data = setup
    round_fn = _round(step, True)
    s1, _ = round_fn(state, data, jax.random.key(1))
    view = np.asarray(fed.evaluation_params(s1, data.entity_mask_CxE, aggregate=True)["entity"])
    local = np.asarray(s1.clients.params["entity"])
    for c in range(3):
        held = stack.entity_mask_CxE[c]
        np.testing.assert_array_equal(view[c][held], np.asarray(s1.server_entity)[held])
        np.testing.assert_array_equal(view[c][~held], local[c][~held])


def test_fraction_trains_only_the_picked_clients(setup):
    split, stack, step, state, data = setup
    new, m = _round(step, True, participants=1)(state, data, jax.random.key(7))
    changed = [not np.allclose(new.clients.params["relation"][c], state.clients.params["relation"][c])
               for c in range(3)]
    assert sum(changed) == 1
    (c,) = np.flatnonzero(changed)
    assert int(m["floats_up"]) == stack.entity_mask_CxE[c].sum() * MODEL.entity_dim
    untouched = ~stack.entity_mask_CxE[c]
    np.testing.assert_array_equal(np.asarray(new.server_entity)[untouched], np.asarray(state.server_entity)[untouched])
    assert int(new.clients.step[c]) > 0 and int(new.clients.step.sum()) == int(new.clients.step[c])
    # the pick changes with the key, and over rounds every client is picked
    picked = {int(np.flatnonzero(fed.pick_clients(jax.random.key(k), jnp.ones(3, bool), 1)[0])[0])
              for k in range(20)}
    assert picked == {0, 1, 2}


def test_num_participants_and_fraction_bounds():
    assert fed.num_participants(10, 0.1) == 1 and fed.num_participants(10, 0.25) == 2
    assert fed.num_participants(3, 0.01) == 1 and fed.num_participants(3, 1.0) == 3
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(JaxdlError, match="--fraction"):
            fed.num_participants(3, bad)


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------
def _numpy_ranks(ent, rel, triples, known, gamma):
    """Brute-force filtered tie-averaged ranks of TransE (L1), tails then heads."""
    known = {tuple(t) for t in known}
    ranks = []
    for h, r, t in triples:
        for side in ("tail", "head"):
            cands = [(h, r, e) if side == "tail" else (e, r, t) for e in range(len(ent))]
            s = np.array([gamma - np.abs(ent[a] + rel[b] - ent[c]).sum() for a, b, c in cands])
            target = t if side == "tail" else h
            keep = np.array([(cand not in known) or e == target for e, cand in enumerate(cands)])
            others = keep & (np.arange(len(ent)) != target)
            ranks.append(1 + (others & (s > s[target])).sum() + 0.5 * (others & (s == s[target])).sum())
    return np.array(ranks)


def test_client_evaluator_matches_numpy_ranking(setup, kg):
    split, stack, step, state, data = setup
    params = jax.device_get(state.clients.params)
    results = make_client_evaluator(MODEL, list(split.clients), kg.num_entities, batch_size=4)(params)
    for i, c in enumerate(split.clients):
        ranks = _numpy_ranks(params["entity"][i], params["relation"][i], c.test, c.known(), MODEL.gamma)
        np.testing.assert_allclose(results["test"]["mrr"][i], np.mean(1 / ranks), rtol=1e-5)
        np.testing.assert_allclose(results["test"]["hits@3"][i], np.mean(ranks <= 3), rtol=1e-6)
    # overall = test-size-weighted mean of clients = mean over every client's ranks pooled
    flat = flat_metrics(results)
    sizes = results["test"]["sizes"]
    np.testing.assert_allclose(flat["test_mrr"], (sizes * results["test"]["mrr"]).sum() / sizes.sum())
    assert weighted_overall({"m": np.array([1.0, 0.0])}, np.array([3, 1]))["m"] == 0.75


def test_collection_evaluator_uses_global_relations(setup, kg):
    split, stack, step, state, data = setup
    one = {"entity": np.asarray(state.server_entity),
           "relation": np.random.default_rng(0).normal(size=(kg.num_relations, MODEL.dim)).astype(np.float32)}
    results = make_client_evaluator(MODEL, list(split.clients), kg.num_entities, global_relations=True)(
        one, shared=True)
    for i, c in enumerate(split.clients):
        ranks = _numpy_ranks(one["entity"], one["relation"], c.to_global(c.test), c.to_global(c.known()),
                             MODEL.gamma)
        np.testing.assert_allclose(results["test"]["mrr"][i], np.mean(1 / ranks), rtol=1e-5)
