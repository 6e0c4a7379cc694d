"""Federated knowledge-graph embedding (FedE, Chen et al., 2021): every client trained in
one compiled step, and the server's aggregation as a pure function.

Clients are stacked on a leading axis C (`jaxdl.data.federated.stack_clients`): each has
a full-size entity table (global ids; it trains and shares only the rows it holds), its
own relation table (local ids, padded to the largest client's, never shared) and its own
optimizer state. A round is

    1. pick K = max(1, round(fraction * C)) clients (uniformly, without replacement);
    2. download: each picked client receives the server's value of every entity it holds;
    3. local training: `local_epochs` passes over each picked client's own triples, all
       clients at once -- the per-client `local_train` is `jax.vmap`ped over the client
       axis inside one jitted program (a `lax.scan` over steps), not a Python loop;
    4. upload + aggregate: for each entity, the server's value becomes the mean of the
       picked clients' values among those that hold it (`aggregate_entities`); an entity
       no picked client holds keeps its previous server value. Relation embeddings and the
       rows of entities a client does not hold never leave the client.

Settings share this machinery: `fede` is the above; `isolation` is the same vmapped local
training with no download/aggregation (every client alone); `collection` is one client
holding every training triple with global relation ids (the centralised upper bound).

Clients have different numbers of triples. A local epoch is exactly one pass over the
client's own data, reshuffled each epoch, as if it trained alone: ceil(N_c / B) steps,
rows past the client's count masked out of the loss. Three schedules compute it, the same
up to float rounding (tests/test_fede.py):
  * padded (`local_train` vmapped): every client runs the largest client's step count and
    a step with no real rows leaves that client's parameters, optimizer state and step
    counter untouched. Simple and shardable, but with clients of unequal size much of the
    work is padding.
  * packed (`packed_local_train`, `make_round(client_steps=...)`, when every client trains
    on one device): the steps are cut into phases between the clients' distinct step
    counts and each phase vmaps only the clients that still have real steps -- no padding
    step is computed, but each phase is one more copy of the step to compile. With tiny
    clients the padded schedule's single phase can be as fast: there padding is nearly free.
  * sequential (`sequential_local_train`, `make_round(sequential=True)`): a `lax.map`
    over the clients, each taking its own number of steps; the step is compiled once.
    What a CPU runs (a client's step already keeps its cores busy, so vmapping clients
    together gains little there); on several devices each device takes its own clients
    in turn (`client_map`, from jaxdl.devices.clients).
`make bench` (the fede workloads) times them against a Python loop of per-client programs.

The reference implementation (zjukg/FedE) trains a round differently; each difference is
selectable here (`make_round`, `negative_extras`; the fede experiment's --semantics
reference selects them all):
  * it builds a fresh Adam for every client every round (here by default each client's
    optimizer state carries over: `reset_optimizer`);
  * it sends every client the server's whole entity table and takes it back (here: only
    the rows a participant holds, counted in `communication`; `download='all'`);
  * its server averages an entity over every client holding it, a client that sat the
    round out adding the value it was sent (here: over the participants holding it;
    `average='holders'`; the same when every client takes part);
  * it corrupts tails only, drawing from all entities (FedE, collection) or the client's
    own (isolation), and leaves out draws that are known training tails of (h, r) (here
    by default heads or tails, from all entities, unfiltered: the corrupt mode and
    `negative_extras`).
An entity no client holds would be zeroed by the reference; here it keeps its value.
Both initialise entities uniformly on +-(gamma + 2) / dim, run Adam locally, weight the
loss's positive and negative parts equally, and stop early on the test-size-weighted
validation MRR checked every few rounds (the reference: every 5 rounds, patience 15).

Nothing here knows about devices: jaxdl/devices/clients.py divides the client axis among
them.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.federated import ClientStack
from jaxdl.data.kg import triple_set
from jaxdl.data.randomness import prefix_shuffle
from jaxdl.errors import JaxdlError
from jaxdl.models import kge as kge_models
from jaxdl.train.step import TrainState

SETTINGS = ("isolation", "collection", "fede")


class ClientArrays(NamedTuple):
    """What a round needs of the clients' data, on device (see ClientStack)."""

    train_CxNx3: jax.Array  # int32, local relation ids; padded rows masked
    train_mask_CxN: jax.Array
    entity_mask_CxE: jax.Array  # True where the client holds the entity
    client_mask_C: jax.Array  # True for real clients
    batch_extras: dict  # per-client arrays (C, ...) every batch of that client carries (`negative_extras`)


class FedState(NamedTuple):
    """clients: the stacked TrainState (params {'entity': (C, E, De), 'relation': (C, R, Dr)},
    per-client optimizer state, step (C,)); server_entity: (E, De) the server's table (its
    last aggregate; only FedE updates it); round: rounds done."""

    clients: TrainState
    server_entity: jax.Array
    round: jax.Array


def client_arrays(stack: ClientStack, batch_size: int, *, batch_extras: dict | None = None) -> ClientArrays:
    """The training part of a ClientStack, with the triple axis padded to a whole number of
    batches (steps_per_epoch * batch_size); `batch_extras` as `negative_extras` gives them."""
    S = steps_per_epoch(stack, batch_size)
    N = S * batch_size
    pad = N - stack.train_CxNx3.shape[1]
    triples = np.pad(stack.train_CxNx3, ((0, 0), (0, pad), (0, 0)))
    mask = np.pad(stack.train_mask_CxN, ((0, 0), (0, pad)))
    return ClientArrays(jnp.asarray(triples), jnp.asarray(mask), jnp.asarray(stack.entity_mask_CxE),
                        jnp.asarray(stack.client_mask_C),
                        {k: jnp.asarray(v) for k, v in (batch_extras or {}).items()})


NEGATIVE_POOLS = ("all", "held")


def negative_extras(stack: ClientStack, *, filtered: bool, pool: str) -> dict:
    """What each client's loss needs to draw its negatives as asked, each stacked on a leading client axis
    (see `jaxdl.losses.kge.make_loss_fn`):

    filtered: negatives that are one of the client's training triples are left out of
        the loss ('known_key_N', 'known_tail_N', 'known_relations': a TripleSet each);
    pool 'held': replacements drawn from the entities the client holds ('pool_E',
        'pool_size'), 'all': from every entity.
    """
    if pool not in NEGATIVE_POOLS:
        raise ValueError(f"pool must be one of {NEGATIVE_POOLS}, got {pool!r}")
    C, R = stack.relation_mask_CxR.shape
    E = stack.entity_mask_CxE.shape[1]
    extras = {}
    if filtered:
        size = stack.train_CxNx3.shape[1]
        sets = [triple_set(stack.train_CxNx3[c][stack.train_mask_CxN[c]], E, R, size=size) for c in range(C)]
        extras["known_key_N"] = np.stack([np.asarray(t.pair_key_N) for t in sets])
        extras["known_tail_N"] = np.stack([np.asarray(t.tail_N) for t in sets])
        extras["known_relations"] = np.full(C, R, np.int32)
    if pool == "held":
        held = [np.flatnonzero(m).astype(np.int32) for m in stack.entity_mask_CxE]
        extras["pool_E"] = np.stack([np.pad(h, (0, E - len(h))) for h in held])
        extras["pool_size"] = np.asarray([max(1, len(h)) for h in held], np.int32)
    return extras


def steps_per_epoch(stack: ClientStack, batch_size: int) -> int:
    """Steps of one local epoch for every client: the largest client's ceil(N / B)."""
    return max(1, math.ceil(int(stack.num_train_C.max()) / batch_size))


def num_participants(num_clients: int, fraction: float) -> int:
    """K = max(1, round(fraction * C)) clients per round, as the reference; fraction in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise JaxdlError(f"--fraction {fraction}: must be in (0, 1]")
    return max(1, min(num_clients, int(round(fraction * num_clients))))


# ---------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------
def init_fed_state(key, model: kge_models.KGEModel, stack: ClientStack, optimizer) -> FedState:
    """The server's entity table is drawn once (reference init, uniform +-(gamma+eps)/dim)
    and every client starts from a copy of it; each client draws its own relation table
    from fold_in(key, client). One compiled program."""
    C, R = stack.relation_mask_CxR.shape
    E = stack.entity_mask_CxE.shape[1]

    @jax.jit
    def build(key, relation_mask_CxR):
        k_server, k_rel = jax.random.split(key)
        server_entity = kge_models.init(k_server, model, E, 1)["entity"]
        relations = jax.vmap(lambda c: kge_models.init(jax.random.fold_in(k_rel, c), model, 1, R)["relation"])(
            jnp.arange(C))
        relations = jnp.where(relation_mask_CxR[..., None], relations, 0.0)
        params = {"entity": jnp.broadcast_to(server_entity, (C, *server_entity.shape)), "relation": relations}
        clients = TrainState(params, jax.vmap(optimizer.init)(params), jnp.zeros((C,), jnp.int32))
        return FedState(clients, server_entity, jnp.zeros((), jnp.int32))

    return build(key, jnp.asarray(stack.relation_mask_CxR))


# ---------------------------------------------------------------------------------------
# The server: pure functions of stacked client tables
# ---------------------------------------------------------------------------------------
def aggregate_entities(client_entity_CxExD, holds_CxE, participating_C, server_entity_ExD):
    """FedE's server step. For each entity, the mean of its embedding over the participating
    clients that hold it; entities no participant holds keep the server's value.

    Returns (server_entity_ExD, holders_E) where holders_E counts the contributing clients.
    """
    weight_CxE = (holds_CxE & participating_C[:, None]).astype(client_entity_CxExD.dtype)
    holders_E = weight_CxE.sum(0)
    total_ExD = (weight_CxE[..., None] * client_entity_CxExD).sum(0)  # elementwise: exact, no matmul
    mean_ExD = total_ExD / jnp.maximum(holders_E, 1.0)[:, None]
    return jnp.where((holders_E > 0)[:, None], mean_ExD, server_entity_ExD), holders_E


def broadcast_entities(server_entity_ExD, client_entity_CxExD, holds_CxE, receiving_C):
    """The download: each receiving client's rows of the entities it holds become the
    server's; every other row (other clients, entities it does not hold) is unchanged."""
    take_CxE = holds_CxE & receiving_C[:, None]
    return jnp.where(take_CxE[..., None], server_entity_ExD[None], client_entity_CxExD)


def communication(holds_CxE, participating_C, entity_dim: int) -> dict:
    """Floats sent in one FedE round: up = down = sum over participants of (held entities x
    entity_dim). (The reference sends the full E x D table both ways to every client.)"""
    rows = (holds_CxE & participating_C[:, None]).sum()
    floats = rows.astype(jnp.float32) * entity_dim  # float: no int32 overflow on large federations
    return {"floats_up": floats, "floats_down": floats}


def evaluation_params(state: FedState, holds_CxE, *, aggregate: bool, download: str = "held") -> dict:
    """Each client's model as the federation has it, i.e. after the next download: FedE
    clients see the server's value of every entity they hold and their own rows elsewhere
    (download 'held'), or the server's whole table (download 'all', as the reference)."""
    params = state.clients.params
    if not aggregate:
        return params
    everyone = jnp.ones(holds_CxE.shape[0], bool)
    rows = holds_CxE if download == "held" else jnp.ones_like(holds_CxE)
    return {**params, "entity": broadcast_entities(state.server_entity, params["entity"], rows, everyone)}


# ---------------------------------------------------------------------------------------
# A client: local training
# ---------------------------------------------------------------------------------------
def _select(flag, new_tree, old_tree):
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new_tree, old_tree)


def local_train(train_step, state: TrainState, triples_Nx3, mask_N, key, extras=None, *, local_epochs: int,
                batch_size: int):
    """`local_epochs` passes over one client's triples (N padded to S * batch_size rows,
    `mask_N` marking the real ones, which come first), reshuffled every epoch, as one `lax.scan`
    over the steps. `extras` (the client's `batch_extras`) rides along in every batch.

    Returns (state, {'loss': mean loss over its real steps, 'steps': real steps taken,
    'finite': all real steps finite}).
    """
    N = triples_Nx3.shape[0]
    S = N // batch_size

    def epoch(carry, k_epoch):
        state, loss_sum = carry
        k_order, k_steps = jax.random.split(k_epoch)
        # Real rows (a prefix, as `pad_stack` lays them out) in random order, padding rows
        # after them in place: each real row once per epoch.
        order = prefix_shuffle(k_order, mask_N.sum(), N)
        batches = {"triples": triples_Nx3[order].reshape(S, batch_size, 3),
                   "mask": mask_N[order].reshape(S, batch_size)}

        def step(carry, batch_and_key):
            state, loss_sum = carry
            batch, k = batch_and_key
            active = batch["mask"].any()
            stepped, metrics = train_step(state, {**batch, **(extras or {})}, k)
            state = _select(active, stepped, state)
            return (state, loss_sum + jnp.where(active, metrics["loss"], 0.0)), \
                (active, jnp.where(active, metrics["finite"], True))

        keys = jax.vmap(lambda i: jax.random.fold_in(k_steps, i))(jnp.arange(S))
        (state, loss_sum), (active_S, finite_S) = jax.lax.scan(step, (state, loss_sum), (batches, keys))
        return (state, loss_sum), (active_S.sum(), finite_S.all())

    epoch_keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(jnp.arange(local_epochs))
    (state, loss_sum), (steps_L, finite_L) = jax.lax.scan(epoch, (state, jnp.zeros((), jnp.float32)), epoch_keys)
    steps = steps_L.sum()
    return state, {"loss": loss_sum / jnp.maximum(steps, 1), "steps": steps, "finite": finite_L.all()}


def client_steps(stack: ClientStack, batch_size: int) -> tuple[int, ...]:
    """Real steps per local epoch of each stacked client, ceil(N_c / B) (0 for a client with
    no triples): the static schedule `make_round(client_steps=...)` trains without padding."""
    return tuple(int(-(-int(n) // batch_size)) for n in stack.num_train_C)


def _phases(total_steps_C) -> list[tuple[int, int, np.ndarray]]:
    """(first step, end step, clients) runs of the packed schedule: client c takes steps
    [0, T_c); phase p covers steps [a, b) between consecutive distinct T values and holds
    exactly the clients with T_c >= b, so no client computes a step it does not own."""
    total = np.asarray(total_steps_C)
    ends = sorted({int(t) for t in total if t > 0})
    phases, a = [], 0
    for b in ends:
        phases.append((a, b, np.flatnonzero(total >= b)))
        a = b
    return phases


def _epoch_plan(key, count, num_rows: int, local_epochs: int):
    """`local_train`'s shuffle (the `count` real rows of `num_rows`) and step key of every
    local epoch: (order_LxN, ksteps_L)."""
    def one(e):
        k_order, k_steps = jax.random.split(jax.random.fold_in(key, e))
        return prefix_shuffle(k_order, count, num_rows), k_steps

    return jax.vmap(one)(jnp.arange(local_epochs))


def _planned_step(train_step, triples_Nx3, mask_N, order_LxN, ksteps_L, extras, steps, batch_size: int):
    """Step j of one client's local training as `local_train` takes it (epoch j // steps,
    batch j % steps): `step(j, (state, loss_sum, finite)) -> (state, loss_sum, finite)`."""
    def step(j, carry):
        state, loss_sum, finite = carry
        e, i = j // steps, j % steps
        rows = jax.lax.dynamic_slice_in_dim(order_LxN[e], i * batch_size, batch_size)
        batch = {"triples": triples_Nx3[rows], "mask": mask_N[rows], **extras}
        state, metrics = train_step(state, batch, jax.random.fold_in(ksteps_L[e], i))
        return state, loss_sum + metrics["loss"], finite & metrics["finite"]

    return step


def packed_local_train(train_step, state: TrainState, triples_CxNx3, mask_CxN, keys_C, steps_C, extras_C=None, *,
                       local_epochs: int, batch_size: int):
    """`local_train` of every stacked client, computing only real steps.

    Same result as `jax.vmap(local_train)` (same shuffles, batches and step keys), but the
    padded schedule runs every client for the largest client's step count with padding
    steps masked out, whereas here the step loop is cut into phases (`_phases`) and each
    phase vmaps only the clients that still have real steps. `steps_C` (static) are the
    clients' steps per epoch (`client_steps`). Returns (state, metrics_C) as the vmap does.
    """
    C, N = mask_CxN.shape
    L, B = local_epochs, batch_size
    steps_C = np.asarray(steps_C, np.int32)
    total_C = L * steps_C

    order_CxLxN, ksteps_CxL = jax.vmap(lambda key, mask_N: _epoch_plan(key, mask_N.sum(), N, L))(keys_C, mask_CxN)
    loss_sum_C = jnp.zeros((C,), jnp.float32)
    finite_C = jnp.ones((C,), bool)

    def client_phase(first: int, end: int):
        def run(state, loss_sum, finite, triples_Nx3, mask_N, order_LxN, ksteps_L, extras, steps):
            step = _planned_step(train_step, triples_Nx3, mask_N, order_LxN, ksteps_L, extras, steps, B)
            carry, _ = jax.lax.scan(lambda carry, j: (step(j, carry), None), (state, loss_sum, finite),
                                    jnp.arange(first, end))
            return carry
        return jax.vmap(run)

    for first, end, index in _phases(total_C):
        take = lambda a: a[index]  # noqa: E731
        sub = jax.tree.map(take, (state, loss_sum_C, finite_C, triples_CxNx3, mask_CxN, order_CxLxN, ksteps_CxL,
                                  extras_C or {}))
        sub_state, sub_loss, sub_finite = client_phase(first, end)(*sub, jnp.asarray(steps_C[index]))
        put = lambda a, b: a.at[index].set(b)  # noqa: E731
        state = jax.tree.map(put, state, sub_state)
        loss_sum_C, finite_C = put(loss_sum_C, sub_loss), put(finite_C, sub_finite)
    steps = jnp.asarray(total_C)
    return state, {"loss": loss_sum_C / jnp.maximum(steps, 1), "steps": steps, "finite": finite_C}


def sequential_local_train(train_step, state: TrainState, triples_CxNx3, mask_CxN, keys_C, extras_C=None,
                           active_C=None, *, local_epochs: int, batch_size: int):
    """`local_train` of every stacked client, one client after the other, computing only real steps.

    The same shuffles, batches and step keys as `jax.vmap(local_train)` and the packed
    schedule, but a `lax.map` over the clients, each running its own ceil(N_c / B) steps a
    local epoch in a loop whose trip count is data: the train step appears once in the
    program, whatever the number of clients or their sizes (the packed schedule compiles
    one copy per distinct size). Nothing is computed for a client's padding, nor for a
    client whose `active_C` is False (it takes no step: loss and steps 0). Returns
    (state, metrics_C) as the vmap does.
    """
    C, N = mask_CxN.shape
    L, B = local_epochs, batch_size
    active_C = jnp.ones((C,), bool) if active_C is None else active_C

    def one_client(client):
        state, triples_Nx3, mask_N, key, extras, active = client
        count = mask_N.sum()
        steps = (count + B - 1) // B
        order_LxN, ksteps_L = _epoch_plan(key, count, N, L)
        step = _planned_step(train_step, triples_Nx3, mask_N, order_LxN, ksteps_L, extras, steps, B)
        total = jnp.where(active, L * steps, 0)
        state, loss_sum, finite = jax.lax.fori_loop(0, total, step, (state, jnp.zeros((), jnp.float32),
                                                                     jnp.ones((), bool)))
        return state, {"loss": loss_sum / jnp.maximum(total, 1), "steps": total, "finite": finite}

    return jax.lax.map(one_client, (state, triples_CxNx3, mask_CxN, keys_C, extras_C or {}, active_C))


# ---------------------------------------------------------------------------------------
# A round
# ---------------------------------------------------------------------------------------
def pick_clients(key, client_mask_C, k: int):
    """(participating_C bool, index_K sorted): K of the real clients, uniformly without
    replacement. Real clients come first in the stack (padding clients after them)."""
    C = client_mask_C.shape[0]
    scores = jnp.where(client_mask_C, jax.random.uniform(key, (C,)), 2.0)
    index_K = jnp.sort(jnp.argsort(scores)[:k])
    participating = jnp.zeros(C, bool).at[index_K].set(True) & client_mask_C
    return participating, index_K


def _train_picked(train_clients, clients: TrainState, data: ClientArrays, keys_C, index_K):
    """Only the K picked clients are computed, then written back; the others' metrics are 0."""
    C = data.client_mask_C.shape[0]
    take = lambda a: a[index_K]  # noqa: E731
    trained, local = train_clients(jax.tree.map(take, clients), data.train_CxNx3[index_K], data.train_mask_CxN[index_K],
                                   keys_C[index_K], jax.tree.map(take, data.batch_extras))
    clients = jax.tree.map(lambda a, b: a.at[index_K].set(b), clients, trained)
    return clients, jax.tree.map(lambda m: jnp.zeros((C, *m.shape[1:]), m.dtype).at[index_K].set(m), local)


DOWNLOADS = ("held", "all")
AVERAGES = ("participants", "holders")


def make_round(train_step, *, aggregate: bool, local_epochs: int, batch_size: int, num_clients: int,
               participants: int, entity_dim: int, client_steps: tuple[int, ...] | None = None,
               reset_optimizer=None, download: str = "held", average: str = "participants",
               sequential: bool = False, client_map=None):
    """The pure round `round_fn(state, data, key) -> (state, metrics)` (jit it).

    aggregate: True for FedE (download, local training, upload + mean), False for
        isolation/collection (local training only, every client every round).
    num_clients: real clients C (the device room may pad the stack with empty clients).
    participants: K clients per round (FedE); all when K == C.
    reset_optimizer: an optimizer whose fresh state every training client starts each
        round with (the FedE reference builds a new Adam per client and round); None keeps
        each client's optimizer state across rounds.
    download: 'held' sends each participant the server's rows of the entities it holds;
        'all' sends every client the server's whole table (the reference).
    average: the server's mean of an entity over the 'participants' holding it, or over
        all 'holders' (the reference: a holder that sat the round out adds the server's
        value it was sent; the same when every client takes part).

    Metrics: 'loss' (mean over participants of their local loss), 'floats_up',
    'floats_down' (FedE communication; 0 otherwise), 'finite'.
    Client c's randomness is fold_in(round key, c): independent of who else takes part.
    client_steps: each stacked client's real steps per epoch (`client_steps(stack, B)`,
        static). Given, a round where every client trains runs the packed schedule
        (`packed_local_train`: no padding steps, same result); else every client runs the
        largest client's step count with padding steps masked.
    sequential: the training clients one after the other (`sequential_local_train`: no
        padding steps, and one copy of the step in the program, whatever the clients'
        sizes). Ignores `client_steps`.
    client_map: for the sequential round on several devices, a transform of a function of
        per-client arrays (clients on the leading axis of every argument and result) that
        runs it with the client axis split among the devices, each device taking its own
        clients one after the other (`jaxdl.devices.clients`). None: one device.
    """
    if download not in DOWNLOADS or average not in AVERAGES:
        raise ValueError(f"download must be one of {DOWNLOADS} and average one of {AVERAGES}")

    def one_client(state, triples, mask, key, extras):
        return local_train(train_step, state, triples, mask, key, extras, local_epochs=local_epochs,
                           batch_size=batch_size)

    train_clients = jax.vmap(one_client)  # every client at once: one program, not a loop

    def train_in_turn(state, triples, mask, keys, extras, active):
        return sequential_local_train(train_step, state, triples, mask, keys, extras, active,
                                      local_epochs=local_epochs, batch_size=batch_size)

    train_in_turn = train_in_turn if client_map is None else client_map(train_in_turn)

    def round_fn(state: FedState, data: ClientArrays, key):
        k_pick, k_train = jax.random.split(key)
        C_stack = data.client_mask_C.shape[0]
        everyone = participants >= num_clients or not aggregate
        if everyone:
            participating = data.client_mask_C
            index = None
        else:
            participating, index = pick_clients(k_pick, data.client_mask_C, participants)
        clients = state.clients
        if aggregate:
            receiving, rows = (participating, data.entity_mask_CxE) if download == "held" else \
                (data.client_mask_C, jnp.ones_like(data.entity_mask_CxE))
            entity = broadcast_entities(state.server_entity, clients.params["entity"], rows, receiving)
            clients = clients._replace(params={**clients.params, "entity": entity})
        if reset_optimizer is not None:
            fresh = jax.vmap(reset_optimizer.init)(clients.params)
            by_client = lambda a, b: jnp.where(participating.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
            clients = clients._replace(opt_state=jax.tree.map(by_client, fresh, clients.opt_state))
        keys_C = jax.vmap(lambda c: jax.random.fold_in(k_train, c))(jnp.arange(C_stack))
        if sequential:  # a client that sits the round out takes no step
            clients, local = train_in_turn(clients, data.train_CxNx3, data.train_mask_CxN, keys_C, data.batch_extras,
                                           participating)
        elif index is None and client_steps is not None:  # every client, only its real steps
            clients, local = packed_local_train(train_step, clients, data.train_CxNx3, data.train_mask_CxN, keys_C,
                                                client_steps, data.batch_extras, local_epochs=local_epochs,
                                                batch_size=batch_size)
        elif index is None:  # every client trains (padding clients have no real steps: unchanged)
            clients, local = train_clients(clients, data.train_CxNx3, data.train_mask_CxN, keys_C, data.batch_extras)
        else:
            clients, local = _train_picked(train_clients, clients, data, keys_C, index)
        server_entity = state.server_entity
        comm = {"floats_up": jnp.zeros((), jnp.float32), "floats_down": jnp.zeros((), jnp.float32)}
        if aggregate:
            contributing = participating if average == "participants" else data.client_mask_C
            server_entity, _ = aggregate_entities(clients.params["entity"], data.entity_mask_CxE, contributing,
                                                  server_entity)
            comm = communication(data.entity_mask_CxE, participating, entity_dim)
            if download == "all":  # the whole table, both ways, to and from every client
                full = jnp.sum(data.client_mask_C).astype(jnp.float32) * data.entity_mask_CxE.shape[1] * entity_dim
                comm = {"floats_up": full, "floats_down": full}
        weight = participating.astype(jnp.float32)
        metrics = {"loss": (weight * local["loss"]).sum() / jnp.maximum(weight.sum(), 1.0),
                   "finite": jnp.where(participating, local["finite"], True).all(), **comm}
        return FedState(clients, server_entity, state.round + 1), metrics

    return round_fn
