"""FedE: one federated round with every client in one compiled program (vmapped, or the
clients in turn), against the same clients trained one after another in a Python loop
(the reference's structure).

Both sides run the library's own pieces with the fede experiment's defaults (TransE dim
50, 16 negatives, self-adversarial loss, Adam lr 0.01, batch 256, 3 local epochs):

  vmap_round_ms  `jaxdl.train.federated.make_round(client_steps=...)` jitted, as the fede
                 experiment runs it on one accelerator: download, the packed vmapped local
                 training of all clients (phases vmap only clients with real steps left:
                 no padding step) and the aggregation, one call.
  sequential_round_ms  `make_round(sequential=True)` jitted, as the fede experiment runs
                 it on one CPU device: the clients' local training in turn (`lax.map`),
                 each its own steps, in the same one call.
  vmap_padded_round_ms  the same round on the padded schedule (every client runs the
                 largest client's steps, padding steps masked); bitwise the same result.
  loop_round_ms  the best a sequential loop can do: a Python loop over the clients, each
                 client's whole local training one jitted `local_train` call on its own
                 (unpadded) triples, then the jitted download/aggregation.
  loop_steps_round_ms  the reference's structure (PyTorch's training loop): Python loops over
                 clients, local epochs and batches, one jitted train step per batch.
  Compilation is excluded everywhere (warm-up); the five are timed interleaved, one call
  of each in turn, so a noisy neighbour slows them alike.
  speedup_vs_loop        loop_round_ms / vmap_round_ms (target: >= 2);
  speedup_vs_loop_steps  loop_steps_round_ms / vmap_round_ms;
  speedup_sequential_vs_packed  vmap_round_ms / sequential_round_ms.
  (In the harness table: jit = the round the experiment runs on this platform, loop =
  loop_steps_round_ms.)
  padding_waste  the share of the vmapped round's steps spent on padding (1 - mean/max
                 client size): the price of one static shape for all clients.

That the vmapped round computes exactly what training the clients one by one computes is
tested (tests/test_fede.py), and that all five rounds here give the same server table
(tests/test_bench.py; the step loop orders each epoch with `prefix_shuffle`, as
`local_train` does). The loops train each client on its own unpadded triples, so they do
no padded work at all, and neither does the packed round. Vmapping removes per-client
dispatch, not arithmetic: where a client's local training is long and compute-bound on a
CPU (UMLS, dim 50: ~0.6 ms per step) the packed round beats the per-client jitted loop
only ~1.4x and the loop of jitted steps ~2.4x; the padded round pays for its padding.
Measured in one run of `python -m benchmarks --only fede` (UMLS, 2 CPU cores, load ~1.9,
20 interleaved rounds): packed 28.9 ms, padded 41.5 ms, loop 41.1 ms, loop of steps
68.1 ms. Where clients are small (quick
mode) dispatch dominates and the vmapped round wins by ~6-10x (there the padded
schedule, one phase, is a little faster than the packed one: padding is nearly free).

Graph: UMLS split into 10 clients by relation when ../shared/data/kg/umls is there
(benchmarks only), else a synthetic grid with 12 relations; quick mode: a small synthetic
grid, dim 8 (seconds).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.registry import BenchContext, Workload
from benchmarks.timing import time_once
from jaxdl.data import federated as fd
from jaxdl.data.kg import load_kg, synthetic_kg
from jaxdl.data.randomness import prefix_shuffle
from jaxdl.losses.kge import make_loss_fn
from jaxdl.models.kge import KGEModel
from jaxdl.train import federated as fed
from jaxdl.train.step import make_train_step

NUM_CLIENTS = 10
FULL = {"dim": 50, "gamma": 9.0, "neg": 16, "lr": 0.01, "batch_size": 256, "local_epochs": 3}
QUICK = {"dim": 8, "gamma": 3.0, "neg": 4, "lr": 0.01, "batch_size": 64, "local_epochs": 1}  # one client shape
GRID12 = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (-1, 2), (2, 2), (3, 0), (0, 3), (3, 1))


def _graph(ctx: BenchContext):
    umls = ctx.shared_data / "kg" / "umls" if ctx.shared_data is not None else None
    if not ctx.quick and umls is not None and umls.is_dir():
        return load_kg(umls), "umls"
    side = 6 if ctx.quick else 20
    return synthetic_kg(seed=0, side=side, offsets=GRID12), f"synthetic grid {side}x{side}, 12 relations"


def build(kg, settings: dict, num_clients: int = NUM_CLIENTS, seed: int = 0):
    """(vmapped round, padded round, sequential round, looped round, step-looped round,
    server table, split): rounds map
    (server_entity, key) -> the server's table after one round from the initial clients."""
    split = fd.split_by_relation(kg, num_clients, seed=seed)
    stack = fd.stack_clients(split)
    model = KGEModel("transe", dim=settings["dim"], gamma=settings["gamma"])
    optimizer = optax.adam(settings["lr"])
    step = make_train_step(make_loss_fn(model, num_entities=kg.num_entities, num_negatives=settings["neg"]),
                           optimizer)
    B, L = settings["batch_size"], settings["local_epochs"]
    state = fed.init_fed_state(jax.random.key(seed), model, stack, optimizer)
    data = fed.client_arrays(stack, B)
    round_kw = dict(aggregate=True, local_epochs=L, batch_size=B, num_clients=num_clients, participants=num_clients,
                    entity_dim=model.entity_dim)
    vmapped = jax.jit(fed.make_round(step, **round_kw, client_steps=fed.client_steps(stack, B)))
    padded = jax.jit(fed.make_round(step, **round_kw))
    in_turn = jax.jit(fed.make_round(step, **round_kw, sequential=True))

    # The loop, as the reference writes it: every client keeps its own state and its own
    # triples (padded only to whole batches, like a DataLoader without drop_last); per round
    # the server's rows are sent down, each client trains in turn (one jitted local_train
    # per client shape), and the server averages the uploaded tables.
    exchange = _server_exchange(data, num_clients)
    own = _own_clients(split, data, state, B)
    looped = _looped_round(step, own, exchange, local_epochs=L, batch_size=B)
    looped_steps = _looped_steps_round(step, own, exchange, local_epochs=L, batch_size=B)

    def from_server(round_fn):
        """(server_entity, key) -> the server's table after one round of `round_fn`."""
        def one_round(server_entity, key):
            return round_fn(state._replace(server_entity=server_entity), data, key)[0].server_entity
        return one_round

    return (from_server(vmapped), from_server(padded), from_server(in_turn), looped, looped_steps, state.server_entity,
            split)


def _server_exchange(data, num_clients: int):
    """The loops' jitted exchanges with the server: (download (server rows into a client's
    table where it holds the entity), upload (the server's averaged table), client_keys
    (each client's key for the round))."""
    download = jax.jit(lambda server, ent, holds: jnp.where(holds[:, None], server, ent))
    upload = jax.jit(lambda ent_CxExD, server: fed.aggregate_entities(ent_CxExD, data.entity_mask_CxE,
                                                                      data.client_mask_C, server)[0])
    client_keys = jax.jit(lambda key: jax.vmap(lambda c: jax.random.fold_in(jax.random.split(key)[1], c))(
        jnp.arange(num_clients)))
    return download, upload, client_keys


def _own_clients(split, data, state, batch_size: int) -> list[tuple]:
    """Per client, for the loops: (its own train triples padded to whole batches, their mask,
    its entity mask, its initial state)."""
    B = batch_size
    own = []
    for i, c in enumerate(split.clients):
        n = -(-len(c.train) // B) * B
        triples = np.zeros((n, 3), np.int32)
        triples[: len(c.train)] = c.train
        own.append((jnp.asarray(triples), jnp.asarray(np.arange(n) < len(c.train)), data.entity_mask_CxE[i],
                    jax.tree.map(lambda a: a[i], state.clients)))
    return own


def _looped_round(step, own: list[tuple], exchange, *, local_epochs: int, batch_size: int):
    """One round as a Python loop over the clients, each client's local training one jitted
    `local_train` call."""
    L, B = local_epochs, batch_size
    download, upload, client_keys = exchange
    train_one = jax.jit(lambda s, t, m, k: fed.local_train(step, s, t, m, k, local_epochs=L, batch_size=B))

    def looped(server_entity, key):
        keys = client_keys(key)
        entity_tables = []
        for c, (triples, mask, holds, client) in enumerate(own):
            client = client._replace(params={**client.params,
                                             "entity": download(server_entity, client.params["entity"], holds)})
            trained, _ = train_one(client, triples, mask, keys[c])
            entity_tables.append(trained.params["entity"])
        return upload(jnp.stack(entity_tables), server_entity)

    return looped


def _looped_steps_round(step, own: list[tuple], exchange, *, local_epochs: int, batch_size: int):
    """The loop one level further down, as PyTorch code runs it: Python loops over the
    clients, their local epochs and their batches, each batch one jitted train step."""
    L, B = local_epochs, batch_size
    download, upload, client_keys = exchange
    jit_step = jax.jit(step)

    @jax.jit
    def epoch_batches(triples, mask, key):
        order = prefix_shuffle(key, mask.sum(), mask.shape[0])  # local_train's order
        return triples[order].reshape(-1, B, 3), mask[order].reshape(-1, B)

    def looped_steps(server_entity, key):
        keys = client_keys(key)
        entity_tables = []
        for c, (triples, mask, holds, client) in enumerate(own):
            client = client._replace(params={**client.params,
                                             "entity": download(server_entity, client.params["entity"], holds)})
            for e in range(L):
                k_order, k_steps = jax.random.split(jax.random.fold_in(keys[c], e))
                batches, masks = epoch_batches(triples, mask, k_order)
                for i in range(batches.shape[0]):
                    client, _ = jit_step(client, {"triples": batches[i], "mask": masks[i]},
                                         jax.random.fold_in(k_steps, i))
            entity_tables.append(client.params["entity"])
        return upload(jnp.stack(entity_tables), server_entity)

    return looped_steps


def _interleaved(fns, *args, repeats: int) -> list[dict]:
    """Time each of `fns(*args)` `repeats` times, one call of each in turn (after one
    warm-up each), so that a noisy neighbour slows all of them alike; median and p90 ms."""
    for fn in fns:
        time_once(fn, *args)
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples):
            out.append(time_once(fn, *args))
    return [{"median_ms": float(np.median(x)), "p90_ms": float(np.percentile(x, 90))} for x in samples]


def _round_workload(ctx: BenchContext) -> dict:
    kg, graph = _graph(ctx)
    settings = QUICK if ctx.quick else FULL
    vmapped, padded, sequential, looped, looped_steps, server_entity, split = build(kg, settings)
    key = jax.random.key(1)
    repeats = 3 if ctx.quick else 20
    t_vmap, t_padded, t_seq, t_loop, t_steps = _interleaved([vmapped, padded, sequential, looped, looped_steps],
                                                            server_entity, key, repeats=repeats)
    t_run = t_seq if jax.default_backend() == "cpu" else t_vmap  # what the fede experiment runs here
    # all five time one computation: the server's table after the round, against the per-client loop's
    tables = {name: np.asarray(fn(server_entity, key)) for name, fn in (
        ("vmap", vmapped), ("padded", padded), ("sequential", sequential), ("loop", looped),
        ("loop_steps", looped_steps))}
    agreement = {f"{name}_vs_loop_max_abs_diff": float(np.abs(table - tables["loop"]).max())
                 for name, table in tables.items() if name != "loop"}
    sizes = split.sizes("train")
    return {"name": "fede_round_10_clients", "graph": graph, "clients": NUM_CLIENTS, **settings,
            "client_train_sizes": sizes.tolist(), "padding_waste": float(1 - sizes.mean() / sizes.max()),
            "round_change_max_abs": float(np.abs(tables["loop"] - np.asarray(server_entity)).max()), **agreement,
            "vmap_round_ms": t_vmap["median_ms"], "vmap_round_p90_ms": t_vmap["p90_ms"],
            "vmap_padded_round_ms": t_padded["median_ms"], "vmap_padded_round_p90_ms": t_padded["p90_ms"],
            "speedup_packed_vs_padded": t_padded["median_ms"] / t_vmap["median_ms"],
            "sequential_round_ms": t_seq["median_ms"], "sequential_round_p90_ms": t_seq["p90_ms"],
            "speedup_sequential_vs_packed": t_vmap["median_ms"] / t_seq["median_ms"],
            "loop_round_ms": t_loop["median_ms"], "loop_round_p90_ms": t_loop["p90_ms"],
            "loop_steps_round_ms": t_steps["median_ms"], "loop_steps_round_p90_ms": t_steps["p90_ms"],
            "speedup_vs_loop": t_loop["median_ms"] / t_vmap["median_ms"],
            "speedup_vs_loop_steps": t_steps["median_ms"] / t_vmap["median_ms"],
            # the harness table's columns: jit = the experiment's round here, loop = Python loop of jitted steps
            "jit_ms": t_run["median_ms"], "loop_ms": t_steps["median_ms"]}


def workloads() -> list[Workload]:
    return [Workload("fede_round_10_clients", _round_workload, group="fede")]
