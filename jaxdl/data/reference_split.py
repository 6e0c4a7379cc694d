"""The split format of FedE's reference implementation (Chen et al., 2021; zjukg/FedE): read
one into a jaxdl graph and split, and write a jaxdl split in it, so that both codes can train
on exactly the same clients.

A reference split is a pickle of a list with one dict per client, keys 'train', 'valid' and
'test', each a dict of four integer numpy arrays:

    edge_index      (2, N)  heads and tails, LOCAL entity ids 0..n_c-1 (the client's own numbering)
    edge_type       (N,)    LOCAL relation ids 0..r_c-1
    edge_index_ori  (2, N)  heads and tails, GLOBAL entity ids
    edge_type_ori   (N,)    GLOBAL relation ids

Each global relation belongs to one client; whatever a client's valid/test triples name also
occurs in its train triples; and the global ids are 0..n-1, n the number of entities (and of
relations) in the clients' train triples together -- the reference sizes its tables by that
count and indexes them by the global ids.

    kg, split = load_reference_split("FB15k237-Fed3.pkl")   # KG entity i is global entity i
    save_reference_split("mine.pkl", split)                  # readable with numpy 1.x and 2.x

A pickle can call anything it names, so the file is read by an unpickler that builds lists,
dicts, numpy arrays and dtypes only and refuses every other name before anything is called.
"""
from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path

import numpy as np

from jaxdl.data.bounded import read_file
from jaxdl.data.federated import ClientData, FederatedSplit, check_split, graph_fingerprint
from jaxdl.data.kg import KG, SPLITS
from jaxdl.errors import JaxdlError
from jaxdl.runs.files import write_bytes_atomic

try:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

ARRAYS = ("edge_index", "edge_type", "edge_index_ori", "edge_type_ori")
_MAX_ID = np.iinfo(np.int32).max  # jaxdl holds triples as int32


def _latin1_bytes(text, encoding):
    """`_codecs.encode` as pickle protocols 0-2 use it to spell bytes: latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is read only to decode latin-1 bytes")
    return text.encode("latin-1")


def _empty_bytes():
    """`bytes()` as pickle protocols 0-2 spell b''."""
    return b""


# Every name the unpickler will look up: numpy's array and dtype reconstructors (under
# numpy 1.x and 2.x module names, and protocol 5's _frombuffer), plus the two spellings of
# bytes that protocols 0-2 use, each narrowed to that use.
_ADMITTED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
# What an exported file names (numpy 1.x spelling, which numpy 2.x also reads).
_EXPORTED = {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
_NUMPY1_MODULES = {"numpy._core.multiarray": "numpy.core.multiarray", "numpy._core.numeric": "numpy.core.numeric"}


class _Refused(Exception):
    """The pickle names a global outside _ADMITTED."""


class _ArrayUnpickler(pickle.Unpickler):
    """Builds lists, dicts, numpy arrays and dtypes; any other global is refused unimported."""

    def find_class(self, module, name):
        found = _ADMITTED.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unpickle(data: bytes, where: str):
    try:
        return _ArrayUnpickler(io.BytesIO(data)).load()
    except _Refused as e:
        raise JaxdlError(f"{where}: refuses to load: the pickle calls {_one_line(e)} "
                         "(only lists, dicts and numpy integer arrays are read)") from None
    except JaxdlError:
        raise
    except Exception as e:  # truncated or garbage bytes: UnpicklingError, EOFError, ValueError, ...
        raise JaxdlError(f"{where}: not a readable pickle ({type(e).__name__}: {_one_line(e)})") from None


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
def _array(x, what: str, ndim: int, where: str) -> np.ndarray:
    """x as int64 after checking it is a numpy integer array of `ndim` dims with ids in
    0..int32 max (an empty float array, as np.array([]) makes, passes too)."""
    if not isinstance(x, np.ndarray):
        raise JaxdlError(f"{where}: {what} is a {type(x).__name__}, expected a numpy integer array")
    if x.dtype.kind not in "iu" and not (x.size == 0 and x.dtype.kind == "f"):
        raise JaxdlError(f"{where}: {what} has dtype {x.dtype}, expected integers")
    if x.ndim != ndim or (ndim == 2 and x.shape[0] != 2):
        raise JaxdlError(f"{where}: {what} has shape {x.shape}, expected {'(2, N)' if ndim == 2 else '(N,)'}")
    if x.size:
        low, high = x.min(), x.max()
        if low < 0 or high > _MAX_ID:
            raise JaxdlError(f"{where}: {what} holds id {int(low if low < 0 else high)}, outside 0..{_MAX_ID}")
    return x.astype(np.int64)


def _client_triples(i: int, client, where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One client's dict -> {split: (local (N, 3), global (N, 3))} int64 (head, relation, tail)."""
    if not isinstance(client, dict):
        raise JaxdlError(f"{where}: client {i} is a {type(client).__name__}, expected a dict of train/valid/test")
    if set(client) != set(SPLITS):
        raise JaxdlError(f"{where}: client {i} has keys {sorted(map(str, client))}, expected train, valid, test")
    out = {}
    for name in SPLITS:
        part = client[name]
        if not isinstance(part, dict) or set(part) != set(ARRAYS):
            found = sorted(map(str, part)) if isinstance(part, dict) else type(part).__name__
            raise JaxdlError(f"{where}: client {i} {name} holds {found}, expected a dict of {', '.join(ARRAYS)}")
        a = {key: _array(part[key], f"client {i} {name} {key}", 2 if key.startswith("edge_index") else 1, where)
             for key in ARRAYS}
        lengths = {key: a[key].shape[-1] for key in ARRAYS}
        if len(set(lengths.values())) != 1:
            raise JaxdlError(f"{where}: client {i} {name}: arrays of different lengths "
                             f"({', '.join(f'{k} {n}' for k, n in lengths.items())})")
        local = np.stack([a["edge_index"][0], a["edge_type"], a["edge_index"][1]], axis=1)
        glob = np.stack([a["edge_index_ori"][0], a["edge_type_ori"], a["edge_index_ori"][1]], axis=1)
        out[name] = (local, glob)
    if len(out["train"][0]) == 0:
        raise JaxdlError(f"{where}: client {i} has no training triples")
    return out


def _check_ids(i: int, kind: str, local: dict, glob: dict, where: str) -> None:
    """One client's entity or relation ids (per split, aligned 1-D arrays): local ids 0..n-1
    over train, local <-> global one-to-one, valid/test ids seen in train."""
    n = len(np.unique(local["train"]))
    if local["train"].max() != n - 1:
        raise JaxdlError(f"{where}: client {i} train: local {kind} ids are not 0..{n - 1} "
                         f"({n} distinct, largest {int(local['train'].max())})")
    for name in ("valid", "test"):
        if len(local[name]) and local[name].max() >= n:
            raise JaxdlError(f"{where}: client {i} {name}: local {kind} id {int(local[name].max())} is outside "
                             f"0..{n - 1} (the ids of its train split)")
        unseen = np.setdiff1d(glob[name], glob["train"])
        if len(unseen):
            raise JaxdlError(f"{where}: client {i} {name}: {kind} {int(unseen[0])} (global id) does not occur "
                             f"in its train split ({len(unseen)} such)")
    pairs = np.unique(np.stack([np.concatenate([local[s] for s in SPLITS]),
                                np.concatenate([glob[s] for s in SPLITS])], axis=1), axis=0)
    for col, side, other in ((0, "local", "global"), (1, "global", "local")):
        ids = np.sort(pairs[:, col])
        twice = ids[1:][ids[1:] == ids[:-1]]
        if len(twice):
            raise JaxdlError(f"{where}: client {i}: {side} {kind} id {int(twice[0])} stands for two {other} ids "
                             "(the local and global numberings must match one to one)")


def _check_contiguous(kind: str, ids: np.ndarray, where: str) -> int:
    """ids: the distinct global ids in the train splits; returns their count after checking
    they are 0..count-1 (the reference's assumption)."""
    if ids[-1] != len(ids) - 1:
        missing = np.setdiff1d(np.arange(ids[-1] + 1), ids)
        raise JaxdlError(f"{where}: global {kind} ids are not 0..{len(ids) - 1}: {len(missing)} of 0..{int(ids[-1])} "
                         f"(first {int(missing[0])}) occur in no client's train split "
                         f"(the reference sizes its {kind} table by the count)")
    return len(ids)


def _id_names(n: int) -> tuple[str, ...]:
    """'0'..'n-1' zero-padded to one width, so that sorted names are in id order (as KG ids are)."""
    width = len(str(n - 1))
    return tuple(f"{i:0{width}d}" for i in range(n))


def load_reference_split(path: str | Path) -> tuple[KG, FederatedSplit]:
    """Read a reference split file (see the module docstring) into the graph it holds and its clients.

    The KG's entity and relation ids are the file's global ids (names: the ids as zero-padded
    decimal strings); its train/valid/test are the unions of the clients'. The split's clients
    keep the file's triples and row order, with relations renumbered to jaxdl's local ids (the
    position in the client's sorted global relation ids); seed is -1 and the fractions are the
    measured ones. Raises JaxdlError, one line, for a refused pickle global, bytes that are not
    a pickle, a wrong structure, or ids that break the format's rules.
    """
    path = Path(path)
    where = f"--split {path}"
    clients = _unpickle(read_file(path), where)
    if not isinstance(clients, list) or not clients:
        what = "an empty list" if isinstance(clients, list) else f"a {type(clients).__name__}"
        raise JaxdlError(f"{where}: holds {what}, expected a list of clients (dicts of train/valid/test)")
    triples = [_client_triples(i, c, where) for i, c in enumerate(clients)]
    owner: dict[int, int] = {}
    for i, parts in enumerate(triples):
        for kind, cols in (("entity", [0, 2]), ("relation", [1])):
            _check_ids(i, kind, {s: parts[s][0][:, cols].ravel() for s in SPLITS},
                       {s: parts[s][1][:, cols].ravel() for s in SPLITS}, where)
        for r in np.unique(parts["train"][1][:, 1]).tolist():
            if owner.setdefault(r, i) != i:
                raise JaxdlError(f"{where}: relation {r} (global id) belongs to clients {owner[r]} and {i}; "
                                 "each relation must belong to one client")
    train_glob = [parts["train"][1] for parts in triples]
    num_entities = _check_contiguous("entity", np.unique(np.concatenate([t[:, [0, 2]].ravel() for t in train_glob])),
                                     where)
    num_relations = _check_contiguous("relation", np.unique(np.concatenate([t[:, 1] for t in train_glob])), where)
    pooled = {s: np.concatenate([parts[s][1] for parts in triples]).astype(np.int32) for s in SPLITS}
    distinct, counts = np.unique(np.concatenate(list(pooled.values())), axis=0, return_counts=True)
    if (counts > 1).any():
        h, r, t = distinct[np.argmax(counts > 1)].tolist()
        raise JaxdlError(f"{where}: triple ({h}, {r}, {t}) (global ids) occurs {int(counts.max())} times; "
                         "each triple must occur once")

    kg = KG(_id_names(num_entities), _id_names(num_relations), pooled["train"], pooled["valid"], pooled["test"],
            {"valid": 0, "test": 0}, str(path))
    data = []
    for parts in triples:
        relations = np.unique(parts["train"][1][:, 1]).astype(np.int32)
        by_split = {}
        for s in SPLITS:
            t = parts[s][1].astype(np.int32)
            t[:, 1] = np.searchsorted(relations, t[:, 1])
            by_split[s] = t
        data.append(ClientData(relations, by_split["train"], by_split["valid"], by_split["test"]))
    sizes = {s: len(kg.split(s)) for s in SPLITS}
    total = sum(sizes.values())
    split = FederatedSplit(tuple(data), num_entities, num_relations, -1, sizes["valid"] / total,
                           sizes["test"] / total, (0,) * len(data), graph_fingerprint(kg))
    check_split(split, kg, where=where)
    return kg, split


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------
def _reference_client(i: int, c: ClientData, where: str) -> dict:
    """One jaxdl client as the reference's dict: local entity ids in first-appearance order over
    its train triples (head then tail, row by row), local relation ids jaxdl's."""
    flat = c.train[:, [0, 2]].ravel()
    ids, first = np.unique(flat, return_index=True)
    local_of = np.empty(len(ids), np.int64)  # local id of ids[k]
    local_of[np.argsort(first, kind="stable")] = np.arange(len(ids))
    if not np.array_equal(np.unique(c.train[:, 1]), np.arange(c.num_relations)):
        raise JaxdlError(f"{where}: client {i} has relations with no training triple; the reference numbers a "
                         "client's relations by its train triples")
    out = {}
    for name in SPLITS:
        t = np.asarray(c.split(name), np.int64).reshape(-1, 3)
        ents = t[:, [0, 2]]
        pos = np.minimum(np.searchsorted(ids, ents), len(ids) - 1)
        unseen = ids[pos] != ents
        if unseen.any():
            raise JaxdlError(f"{where}: client {i} {name}: entity {int(ents[unseen][0])} does not occur in its train "
                             "split; the reference numbers a client's entities by its train triples")
        local = local_of[pos]
        out[name] = {"edge_index": np.ascontiguousarray(local.T),
                     "edge_type": np.ascontiguousarray(t[:, 1]),
                     "edge_index_ori": np.ascontiguousarray(ents.T),
                     "edge_type_ori": np.asarray(c.relations, np.int64)[t[:, 1]]}
    return out


def _numpy1_globals(data: bytes) -> bytes:
    """A protocol-3 pickle with numpy 2's `numpy._core.*` GLOBAL names spelled `numpy.core.*`
    (numpy 1.x cannot import the former; numpy 2.x reads both)."""
    out, last = [], 0
    for op, arg, pos in pickletools.genops(data):
        if op.name != "GLOBAL":
            continue
        module, name = arg.split(" ", 1)
        end = pos + len(arg) + 2  # b"c" module b"\n" name b"\n"
        if data[pos:pos + 1] != b"c" or data[end - 1:end] != b"\n":
            raise AssertionError(f"unexpected GLOBAL encoding at byte {pos}")
        out += [data[last:pos], b"c" + f"{_NUMPY1_MODULES.get(module, module)}\n{name}\n".encode()]
        last = end
    return b"".join(out + [data[last:]])


def pickle_globals(data: bytes) -> list[str]:
    """The 'module name' of every global a pickle names (GLOBAL, INST; '?' for STACK_GLOBAL,
    whose name is computed)."""
    return [arg if op.name != "STACK_GLOBAL" else "?" for op, arg, _ in pickletools.genops(data)
            if op.name in ("GLOBAL", "INST", "STACK_GLOBAL")]


def reference_split_bytes(split: FederatedSplit) -> bytes:
    """`split` in the reference's format (pickle protocol 3, int64 arrays, numpy 1.x names);
    global entity and relation ids are jaxdl's ids.

    Raises JaxdlError, one line, when the reference could not hold the split: an entity or
    relation in no client's train split, or a valid/test entity or a relation missing from
    its client's train split.
    """
    where = "reference split"
    for i, c in enumerate(split.clients):
        for name in SPLITS:
            t = c.split(name)
            if len(t) and (t.min() < 0 or t[:, [0, 2]].max() >= split.num_entities
                           or t[:, 1].max() >= c.num_relations):
                raise JaxdlError(f"{where}: client {i} {name} triples have ids out of range")
        if len(c.relations) and (c.relations.min() < 0 or c.relations.max() >= split.num_relations):
            raise JaxdlError(f"{where}: client {i} has relation ids outside 0..{split.num_relations - 1}")
    for kind, n, seen in (
            ("entity", split.num_entities, [c.train[:, [0, 2]].ravel() for c in split.clients]),
            ("relation", split.num_relations, [np.asarray(c.relations)[c.train[:, 1]] for c in split.clients])):
        missing = np.setdiff1d(np.arange(n), np.concatenate(seen))
        if len(missing):
            raise JaxdlError(f"{where}: {kind} {int(missing[0])} ({len(missing)} such) occurs in no client's train "
                             f"split; the reference numbers {kind} ids by their count there")
    clients = [_reference_client(i, c, where) for i, c in enumerate(split.clients)]
    data = _numpy1_globals(pickle.dumps(clients, protocol=3))
    named = set(pickle_globals(data))
    if not named <= _EXPORTED:
        raise AssertionError(f"exported pickle names {sorted(named - _EXPORTED)}")
    return data


def save_reference_split(path: str | Path, split: FederatedSplit) -> Path:
    """Write `split` in the reference's format (see `reference_split_bytes`), whole or not at all; returns path."""
    path = Path(path)
    data = reference_split_bytes(split)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return path
