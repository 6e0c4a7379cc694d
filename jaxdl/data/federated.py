"""A knowledge graph split into federated clients by relation, and clients stacked for vmap.

The split follows FedE (Chen et al., 2021, the FB15k-237-Fed{3,5,10} data sets): every
triple of the graph (train, valid and test pooled) belongs to the client that owns its
relation; relations are dealt to clients at random (seeded), as evenly as their count
allows. Each client's triples are then split at random into train/valid/test, and a
valid/test triple whose head, tail or relation is missing from that client's training part
is moved into it, so a client can embed everything it is asked about. Entities keep their
global ids; relations get local ids 0..R_c-1 per client (sorted by global id), because a
client's relations are its own and never leave it.

    split = split_by_relation(kg, num_clients=3, seed=0)
    save_split("split.npz", split, kg); split = load_split("split.npz", kg)
    stack = stack_clients(split)          # padded (C, ...) arrays + masks, for jax.vmap

`stack_clients` pads every client to a common size so that the clients can be stacked
along a leading axis and trained by one compiled, vmapped step: triples padded with a
mask, relation tables padded to the largest client's with a mask, and the entity table
shared in shape (global ids) with a mask of the entities each client holds.
"""

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxdl.data.kg import KG, SPLITS
from jaxdl.errors import JaxdlError

SPLIT_FORMAT = "jaxdl-federated-split-v1"


@dataclass(frozen=True)
class ClientData:
    """One client's part of the graph.

    relations: the global ids of its relations; local relation id i is relations[i].
    train, valid, test: int32 (N, 3) triples (head, LOCAL relation id, tail); entity ids global.
    """

    relations: np.ndarray
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def split(self, name: str) -> np.ndarray:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def known(self) -> np.ndarray:
        """Every triple this client knows (train, valid, test; local relation ids): its filter set."""
        return np.concatenate([self.train, self.valid, self.test])

    def entities(self) -> np.ndarray:
        """Sorted global ids of the entities in its training triples (the rows it trains and shares)."""
        return np.unique(self.train[:, [0, 2]])

    def to_global(self, triples_Nx3: np.ndarray) -> np.ndarray:
        """Triples with local relation ids -> the same triples with global relation ids."""
        out = np.array(triples_Nx3, np.int32, copy=True)
        out[:, 1] = self.relations[out[:, 1]]
        return out


@dataclass(frozen=True)
class FederatedSplit:
    """A graph dealt out to clients (see the module docstring)."""

    clients: tuple[ClientData, ...]
    num_entities: int
    num_relations: int
    seed: int
    valid_fraction: float
    test_fraction: float
    moved_to_train: tuple[int, ...]  # per client: held-out triples moved to train (unseen entity/relation)
    fingerprint: str  # of the graph the split was made from

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def sizes(self, name: str) -> np.ndarray:
        """(C,) triples per client in split `name`."""
        return np.array([len(c.split(name)) for c in self.clients], np.int64)

    def summary(self) -> dict:
        """Per-client counts, for summary.json and the console."""
        return {"num_clients": self.num_clients, "seed": self.seed,
                "clients": [{"relations": c.num_relations, "entities": int(len(c.entities())),
                             "train": int(len(c.train)), "valid": int(len(c.valid)), "test": int(len(c.test)),
                             "moved_to_train": int(m)}
                            for c, m in zip(self.clients, self.moved_to_train)]}


# ---------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------
def graph_triples(kg: KG) -> np.ndarray:
    """Every distinct triple of `kg` (train, valid and test pooled), sorted: what is dealt out."""
    return np.unique(kg.all_triples().astype(np.int32), axis=0).reshape(-1, 3)


def graph_fingerprint(kg: KG) -> str:
    """sha256 of the entity names, relation names and pooled triples: identifies the graph."""
    h = hashlib.sha256()
    h.update("\n".join(kg.entities).encode())
    h.update(b"\0")
    h.update("\n".join(kg.relations).encode())
    h.update(b"\0")
    h.update(np.ascontiguousarray(graph_triples(kg), np.int32).tobytes())
    return h.hexdigest()


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    for name, f in (("valid", valid_fraction), ("test", test_fraction)):
        if not 0.0 < f < 1.0:
            raise JaxdlError(f"{name} fraction must be in (0, 1), got {f}")
    if valid_fraction + test_fraction >= 1.0:
        raise JaxdlError(f"valid + test fractions must leave a training part, got "
                         f"{valid_fraction} + {test_fraction}")


def _split_client(triples_Nx3: np.ndarray, rng: np.random.Generator, valid_fraction: float,
                  test_fraction: float, num_entities: int, num_relations: int):
    """Random train/valid/test split of one client's triples; held-out triples with an
    entity or relation missing from its training part are moved to it. Returns
    (train, valid, test, moved) with rows in sorted order."""
    n = len(triples_Nx3)
    order = rng.permutation(n)
    n_valid = int(round(valid_fraction * n))
    n_test = int(round(test_fraction * n))
    valid_idx, test_idx = order[:n_valid], order[n_valid:n_valid + n_test]
    train_idx = order[n_valid + n_test:]
    seen_ent = np.zeros(num_entities, bool)
    seen_rel = np.zeros(num_relations, bool)
    seen_ent[triples_Nx3[train_idx][:, [0, 2]].ravel()] = True
    seen_rel[triples_Nx3[train_idx][:, 1]] = True
    moved = 0
    kept = []
    for idx in (valid_idx, test_idx):
        t = triples_Nx3[idx]
        ok = seen_ent[t[:, 0]] & seen_ent[t[:, 2]] & seen_rel[t[:, 1]]
        # Moving a triple into train makes its entities seen; one pass suffices because a
        # moved triple only ever adds entities to the training part.
        moved += int((~ok).sum())
        train_idx = np.concatenate([train_idx, idx[~ok]])
        seen_ent[t[~ok][:, [0, 2]].ravel()] = True
        seen_rel[t[~ok][:, 1]] = True
        kept.append(idx[ok])
    # Triples kept in valid before test moved more entities in are still fine (seen only grows).
    return (triples_Nx3[np.sort(train_idx)], triples_Nx3[np.sort(kept[0])], triples_Nx3[np.sort(kept[1])], moved)


def split_by_relation(kg: KG, num_clients: int, *, seed: int = 0, valid_fraction: float = 0.1,
                      test_fraction: float = 0.1) -> FederatedSplit:
    """Deal the relations of `kg` to `num_clients` clients at random and split each client's
    triples into train/valid/test (see the module docstring).

    Raises JaxdlError for num_clients < 1 or larger than the number of relations, and for
    fractions outside (0, 1).
    """
    if num_clients < 1:
        raise JaxdlError(f"--clients {num_clients}: need at least one client")
    if num_clients > kg.num_relations:
        raise JaxdlError(f"--clients {num_clients}: more clients than the graph's {kg.num_relations} relations "
                         "(clients are formed by relation)")
    _check_fractions(valid_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    triples = graph_triples(kg)
    groups = np.array_split(rng.permutation(kg.num_relations), num_clients)
    clients, moved = [], []
    for group in groups:
        relations = np.sort(group).astype(np.int32)
        local_of = np.full(kg.num_relations, -1, np.int32)
        local_of[relations] = np.arange(len(relations), dtype=np.int32)
        mine = triples[local_of[triples[:, 1]] >= 0].copy()
        mine[:, 1] = local_of[mine[:, 1]]
        train, valid, test, m = _split_client(mine, rng, valid_fraction, test_fraction, kg.num_entities,
                                              len(relations))
        clients.append(ClientData(relations, train, valid, test))
        moved.append(m)
    for i, c in enumerate(clients):
        if len(c.train) == 0:
            raise JaxdlError(f"client {i} has no training triples (its relations have none); use fewer clients")
    return FederatedSplit(tuple(clients), kg.num_entities, kg.num_relations, seed, valid_fraction, test_fraction,
                          tuple(moved), graph_fingerprint(kg))


# ---------------------------------------------------------------------------------------
# Saving and loading (one .npz; a saved split is reusable and checked against the graph)
# ---------------------------------------------------------------------------------------
def save_split(path: str | Path, split: FederatedSplit) -> Path:
    """Write `split` as an .npz: a JSON header and, per client, its relation ids and triples."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(split_bytes(split))
    tmp.replace(path)
    return path


def split_bytes(split: FederatedSplit) -> bytes:
    """The .npz `save_split` writes, as bytes."""
    header = {"format": SPLIT_FORMAT, "num_clients": split.num_clients, "num_entities": split.num_entities,
              "num_relations": split.num_relations, "seed": split.seed, "valid_fraction": split.valid_fraction,
              "test_fraction": split.test_fraction, "moved_to_train": list(split.moved_to_train),
              "fingerprint": split.fingerprint}
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    for i, c in enumerate(split.clients):
        arrays[f"client{i}_relations"] = c.relations
        for name in SPLITS:
            arrays[f"client{i}_{name}"] = c.split(name)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def load_split(path: str | Path, kg: KG) -> FederatedSplit:
    """Read a split saved by `save_split` and check that it was made from `kg` and is whole:
    same graph fingerprint, every relation owned by exactly one client, ids in range, and
    the clients' triples together exactly the graph's. Raises JaxdlError (one line) otherwise."""
    path = Path(path)
    where = f"--split {path}"
    if not path.is_file():
        raise JaxdlError(f"{where}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
    except Exception as e:  # zip, npz and JSON errors alike: the file is not a split
        raise JaxdlError(f"{where}: not a saved split ({type(e).__name__}: {e})") from None
    found = header.get("format") if isinstance(header, dict) else None
    if found != SPLIT_FORMAT:
        raise JaxdlError(f"{where}: not a saved split (format {found!r}, expected {SPLIT_FORMAT!r})")
    try:
        sizes = (int(header["num_entities"]), int(header["num_relations"]))
        if sizes != (kg.num_entities, kg.num_relations):
            raise JaxdlError(f"{where}: made for a graph of {sizes[0]} entities and {sizes[1]} relations, "
                             f"this one has {kg.num_entities} and {kg.num_relations}")
        if header["fingerprint"] != graph_fingerprint(kg):
            raise JaxdlError(f"{where}: made for a different graph (fingerprint mismatch); split this graph afresh")
        clients = []
        for i in range(int(header["num_clients"])):
            relations = arrays[f"client{i}_relations"].astype(np.int32).reshape(-1)
            parts = {name: arrays[f"client{i}_{name}"].astype(np.int32).reshape(-1, 3) for name in SPLITS}
            clients.append(ClientData(relations, parts["train"], parts["valid"], parts["test"]))
        split = FederatedSplit(tuple(clients), kg.num_entities, kg.num_relations, int(header["seed"]),
                               float(header["valid_fraction"]), float(header["test_fraction"]),
                               tuple(int(m) for m in header["moved_to_train"]), str(header["fingerprint"]))
    except (KeyError, TypeError, ValueError) as e:
        raise JaxdlError(f"{where}: incomplete or damaged split ({type(e).__name__}: {e})") from None
    check_split(split, kg, where=where)
    return split


def check_split(split: FederatedSplit, kg: KG, *, where: str = "split") -> None:
    """Raise JaxdlError unless `split` partitions exactly the triples of `kg` by relation."""
    owner = np.full(kg.num_relations, -1)
    for i, c in enumerate(split.clients):
        if len(c.relations) == 0 or c.relations.min() < 0 or c.relations.max() >= kg.num_relations:
            raise JaxdlError(f"{where}: client {i} has relation ids outside 0..{kg.num_relations - 1}")
        if (owner[c.relations] >= 0).any():
            raise JaxdlError(f"{where}: a relation belongs to two clients (client {i})")
        owner[c.relations] = i
        for name in SPLITS:
            t = c.split(name)
            if len(t) and (t[:, 1].min() < 0 or t[:, 1].max() >= c.num_relations
                           or t[:, [0, 2]].min() < 0 or t[:, [0, 2]].max() >= kg.num_entities):
                raise JaxdlError(f"{where}: client {i} {name} triples have ids out of range")
    if (owner < 0).any():
        raise JaxdlError(f"{where}: relation {int(np.argmax(owner < 0))} belongs to no client")
    dealt = np.concatenate([c.to_global(c.split(name)) for c in split.clients for name in SPLITS])
    expected = graph_triples(kg)
    if len(dealt) != len(expected) or not np.array_equal(np.unique(dealt, axis=0), expected):
        raise JaxdlError(f"{where}: the clients' triples are not exactly the graph's "
                         f"({len(dealt)} dealt, {len(expected)} in the graph)")


# ---------------------------------------------------------------------------------------
# The pooled graph (the "collection" setting)
# ---------------------------------------------------------------------------------------
def collection_client(split: FederatedSplit) -> ClientData:
    """All clients' triples as one client with global relation ids: train, valid and test are
    the unions of the clients' (so the collection model trains on every client's training
    triples and nothing else)."""
    parts = {name: np.concatenate([c.to_global(c.split(name)) for c in split.clients]) for name in SPLITS}
    return ClientData(np.arange(split.num_relations, dtype=np.int32), parts["train"], parts["valid"], parts["test"])


# ---------------------------------------------------------------------------------------
# Stacking clients for vmap
# ---------------------------------------------------------------------------------------
class ClientStack(NamedTuple):
    """Clients padded to common sizes and stacked on a leading client axis C.

    train_CxNx3, train_mask_CxN: training triples (local relation ids), padding rows are
        (0, 0, 0) with mask False; likewise valid/test.
    num_train_C: real training triples per client.
    relation_mask_CxR: True for a client's real relation rows (R = the largest client's count).
    entity_mask_CxE: True where the client holds the entity (it occurs in its training triples).
    client_mask_C: True for real clients (False for padding clients added to fill devices).
    """

    train_CxNx3: np.ndarray
    train_mask_CxN: np.ndarray
    num_train_C: np.ndarray
    valid_CxNx3: np.ndarray
    valid_mask_CxN: np.ndarray
    test_CxNx3: np.ndarray
    test_mask_CxN: np.ndarray
    relation_mask_CxR: np.ndarray
    entity_mask_CxE: np.ndarray
    client_mask_C: np.ndarray

    @property
    def num_clients(self) -> int:
        return int(self.client_mask_C.sum())


def pad_stack(arrays: list[np.ndarray], size: int | None = None, *, count: int | None = None):
    """Stack arrays of shape (N_i, ...) into (count, size, ...) zero-padded, with a (count, size) mask."""
    count = len(arrays) if count is None else count
    size = max([len(a) for a in arrays] + [1]) if size is None else size
    tail = arrays[0].shape[1:]
    out = np.zeros((count, size, *tail), arrays[0].dtype)
    mask = np.zeros((count, size), bool)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
        mask[i, : len(a)] = True
    return out, mask


def stack_clients(clients: FederatedSplit | list[ClientData], num_entities: int | None = None) -> ClientStack:
    """Pad every client to a common size and stack them (see ClientStack)."""
    if isinstance(clients, FederatedSplit):
        num_entities = clients.num_entities if num_entities is None else num_entities
        clients = list(clients.clients)
    if num_entities is None:
        raise ValueError("num_entities is required when stacking a list of clients")
    C = len(clients)
    train, train_mask = pad_stack([c.train for c in clients], count=C)
    valid, valid_mask = pad_stack([c.valid for c in clients], count=C)
    test, test_mask = pad_stack([c.test for c in clients], count=C)
    R = max(c.num_relations for c in clients)
    relation_mask = np.zeros((C, R), bool)
    entity_mask = np.zeros((C, num_entities), bool)
    for i, c in enumerate(clients):
        relation_mask[i, : c.num_relations] = True
        entity_mask[i, c.entities()] = True
    num_train = np.asarray([len(c.train) for c in clients], np.int32)
    client_mask = np.ones(C, bool)  # False marks the empty clients the device room pads with
    return ClientStack(train, train_mask, num_train, valid, valid_mask, test, test_mask, relation_mask,
                       entity_mask, client_mask)
