"""Knowledge graphs: the standard folder format, a synthetic graph with a known answer,
negative sampling on device, and the known-triple filters link prediction needs.

A knowledge graph is three splits of (head, relation, tail) triples. On disk it is a
folder with `train.txt`, `valid.txt`, `test.txt`, one triple a line, `head<TAB>relation<TAB>tail`
(FB15k-237, WN18RR, Nations, UMLS and Kinships ship so). In memory it is a `KG`: sorted
entity and relation names (ids are positions, assigned from the training split) and one
int32 array of shape (N, 3) with columns (h, r, t) per split.

    kg = load_kg("path/to/umls")                  # JaxdlError, one line, on bad input
    kg = synthetic_kg(seed=0)                     # offline default with a planted answer
    write_kg(folder, kg)                          # the inverse of load_kg (tests write graphs)

Negatives (`corrupt`) are drawn on device inside the training step from the step's key,
so an epoch is one compiled `lax.scan` and nothing is materialised per epoch; `TripleSet`
answers "is (h, r, t) a known true triple?" on device (to filter negatives), and
`filter_masks` gives, for each evaluation triple, the other true answers to leave out when
ranking (the "filtered" setting of Bordes et al., 2013).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.bounded import read_file
from jaxdl.data.randomness import index_shuffle
from jaxdl.errors import JaxdlError

SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KG:
    """A knowledge graph held on the host.

    entities, relations: names; the id of a name is its position (sorted order).
    train, valid, test: int32 arrays (N, 3) of (head id, relation id, tail id).
    dropped: per evaluation split, how many triples were dropped because they use an
        entity or relation that never occurs in the training split.
    """

    entities: tuple[str, ...]
    relations: tuple[str, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    dropped: dict = field(default_factory=lambda: {"valid": 0, "test": 0})
    source: str = ""

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def split(self, name: str) -> np.ndarray:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def all_triples(self) -> np.ndarray:
        """Every known true triple (train, valid and test stacked): the filter set."""
        return np.concatenate([self.train, self.valid, self.test], axis=0)

    def counts(self) -> dict:
        """Sizes for summary.json."""
        return {"num_entities": self.num_entities, "num_relations": self.num_relations,
                "num_train": int(len(self.train)), "num_valid": int(len(self.valid)),
                "num_test": int(len(self.test)), "dropped_valid": int(self.dropped.get("valid", 0)),
                "dropped_test": int(self.dropped.get("test", 0))}


def from_named_triples(splits: dict[str, list[tuple[str, str, str]]], *, source: str = "") -> KG:
    """Build a KG from string triples per split: ids from the training split (sorted names),
    valid/test triples with an entity or relation unseen in training dropped and counted."""
    train = splits["train"]
    entities = tuple(sorted({h for h, _, _ in train} | {t for _, _, t in train}))
    relations = tuple(sorted({r for _, r, _ in train}))
    ent_id = {e: i for i, e in enumerate(entities)}
    rel_id = {r: i for i, r in enumerate(relations)}
    arrays, dropped = {}, {}
    for name in SPLITS:
        kept = [(ent_id[h], rel_id[r], ent_id[t]) for h, r, t in splits[name]
                if h in ent_id and r in rel_id and t in ent_id]
        dropped[name] = len(splits[name]) - len(kept)
        arrays[name] = np.asarray(kept, np.int32).reshape(-1, 3)
    return KG(entities, relations, arrays["train"], arrays["valid"], arrays["test"],
              {"valid": dropped["valid"], "test": dropped["test"]}, source)


# ---------------------------------------------------------------------------------------
# Reading and writing the folder format
# ---------------------------------------------------------------------------------------
def read_triples(path: Path) -> list[tuple[str, str, str]]:
    """The triples of one split file; blank lines are skipped.

    Raises JaxdlError naming `file:line` for a missing file, bytes that are not UTF-8, a
    line without exactly three non-empty tab-separated fields, or a file with no triples.
    """
    path = Path(path)
    if not path.is_file():
        raise JaxdlError(f"{path}: missing (a graph folder holds train.txt, valid.txt and test.txt)")
    data = read_file(path)  # bounded (jaxdl.data.bounded)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise JaxdlError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x})") from None
    triples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise JaxdlError(f"{path}:{number}: expected 3 tab-separated fields (head, relation, tail), "
                             f"got {len(fields)}")
        h, r, t = (f.strip() for f in fields)
        if not (h and r and t):
            raise JaxdlError(f"{path}:{number}: empty field in a head<TAB>relation<TAB>tail line")
        triples.append((h, r, t))
    if not triples:
        raise JaxdlError(f"{path}: no triples (the split is empty)")
    return triples


def load_kg(folder: str | Path) -> KG:
    """Read `folder/{train,valid,test}.txt` (see `read_triples`) into a KG.

    Raises JaxdlError when the folder is missing, a split is bad (file:line), or every
    triple of valid/test uses an entity or relation unseen in training.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise JaxdlError(f"--data {folder}: no such directory")
    splits = {name: read_triples(folder / f"{name}.txt") for name in SPLITS}
    kg = from_named_triples(splits, source=str(folder))
    for name in ("valid", "test"):
        if len(kg.split(name)) == 0:
            raise JaxdlError(f"{folder / (name + '.txt')}: all {kg.dropped[name]} triples use entities or "
                             "relations that never occur in train.txt")
    return kg


def write_kg(folder: str | Path, kg: KG) -> Path:
    """Write `kg` as `folder/{train,valid,test}.txt` (names, tab-separated); returns folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        lines = [f"{kg.entities[h]}\t{kg.relations[r]}\t{kg.entities[t]}\n" for h, r, t in kg.split(name)]
        (folder / f"{name}.txt").write_text("".join(lines), encoding="utf-8")
    return folder


def id_maps(kg: KG) -> dict[str, str]:
    """`entities.tsv` and `relations.tsv`: `id<TAB>name` a line, the row order of the saved
    embedding matrices."""
    return {fname: "".join(f"{i}\t{n}\n" for i, n in enumerate(names))
            for fname, names in (("entities.tsv", kg.entities), ("relations.tsv", kg.relations))}


# ---------------------------------------------------------------------------------------
# A synthetic graph with a planted translational structure
# ---------------------------------------------------------------------------------------
# Grid offsets (dx, dy): each is one relation "move by (dx, dy)".
GRID_OFFSETS = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (-1, 2))


def synthetic_kg(seed: int = 0, *, side: int = 10, offsets=GRID_OFFSETS, valid_fraction: float = 0.1,
                 test_fraction: float = 0.1) -> KG:
    """Entities on a side x side grid; relation k holds (h, k, t) exactly when t = h + offset_k
    (staying on the grid). Translational by construction: embeddings e_(x,y) = (x, y) and
    r_k = offset_k give ||h + r - t|| = 0 on every true triple, so TransE can recover the
    graph and rank every held-out triple first (filtered MRR -> 1; a random scorer gets
    about H_E / E = 0.05 for E = 100). The default: 100 entities, 8 relations, 646 triples,
    split 80/10/10 at random (seeded); valid/test triples whose entities are missing from
    the training part are moved to it, so nothing is dropped.
    """
    if side < 2:
        raise JaxdlError(f"synthetic graph: side must be >= 2, got {side}")
    coords = [(x, y) for x in range(side) for y in range(side)]
    index = {c: i for i, c in enumerate(coords)}
    triples = []
    for k, (dx, dy) in enumerate(offsets):
        for (x, y), h in index.items():
            t = index.get((x + dx, y + dy))
            if t is not None:
                triples.append((h, k, t))
    triples = np.asarray(triples, np.int32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(triples))
    n_valid = int(round(valid_fraction * len(triples)))
    n_test = int(round(test_fraction * len(triples)))
    held, train_idx = order[: n_valid + n_test], order[n_valid + n_test:]
    in_train = np.zeros(side * side, bool)
    in_train[triples[train_idx][:, [0, 2]].ravel()] = True
    rel_in_train = np.zeros(len(offsets), bool)
    rel_in_train[triples[train_idx][:, 1]] = True
    # Move held-out triples that would be unseen to the training part (nothing dropped).
    keep = in_train[triples[held, 0]] & in_train[triples[held, 2]] & rel_in_train[triples[held, 1]]
    train_idx = np.concatenate([train_idx, held[~keep]])
    held = held[keep]
    cut = len(held) * n_valid // max(n_valid + n_test, 1)
    valid_idx, test_idx = held[:cut], held[cut:]
    entities = tuple(f"e{x:02d}_{y:02d}" for x, y in coords)
    relations = tuple(f"move{dx:+d}{dy:+d}" for dx, dy in offsets)
    # Ids must follow sorted names (as load_kg assigns them); these names sort in id order.
    assert list(entities) == sorted(entities)
    rel_order = np.argsort(relations)
    rel_new = np.empty(len(relations), np.int32)
    rel_new[rel_order] = np.arange(len(relations), dtype=np.int32)
    triples[:, 1] = rel_new[triples[:, 1]]
    relations = tuple(sorted(relations))
    return KG(entities, relations, triples[np.sort(train_idx)],
              triples[np.sort(valid_idx)], triples[np.sort(test_idx)], {"valid": 0, "test": 0},
              f"synthetic grid {side}x{side}, seed {seed}")


# ---------------------------------------------------------------------------------------
# Known triples on device, and negatives drawn on device
# ---------------------------------------------------------------------------------------
_PAD_KEY = np.iinfo(np.int32).max
CORRUPT_MODES = ("both", "mixed", "head", "tail")


class TripleSet(NamedTuple):
    """Known triples, indexed both ways for membership tests on device (`contains`): each
    (h, r, t) is kept as the pair (h * R + r, t), its tails by (h, r), and as the pair
    (-(t * R + r) - 1, h), its heads by (t, r); the pairs are sorted lexicographically, the
    head-side keys (negative) before the tail-side ones. Padding rows (key int32 max) never
    match a real triple, so sets of different sizes can be padded to one shape and stacked
    (e.g. one per client)."""

    pair_key_N: jax.Array  # int32, h * R + r (tail side) or -(t * R + r) - 1 (head side), sorted
    tail_N: jax.Array  # int32 answer: the tail (tail side) or the head (head side), sorted within equal keys
    num_relations: jax.Array  # int32 scalar


def _tail_side_key(h, r, num_relations):
    return h * num_relations + r


def _head_side_key(t, r, num_relations):
    return -(t * num_relations + r) - 1


def triple_set(triples_Nx3, num_entities: int, num_relations: int, *, size: int | None = None) -> TripleSet:
    """Build a TripleSet from host triples (duplicates kept, harmless); `size` pads to a
    fixed number of triples (>= N). Its arrays hold two entries per triple (2 * size)."""
    if num_entities * num_relations >= _PAD_KEY:
        raise JaxdlError(f"graph too large for int32 triple keys ({num_entities} entities x {num_relations} relations)")
    triples = np.asarray(triples_Nx3, np.int64).reshape(-1, 3)
    size = len(triples) if size is None else size
    if size < len(triples):
        raise ValueError(f"size {size} < {len(triples)} triples")
    h, r, t = triples.T
    key = np.concatenate([_tail_side_key(h, r, num_relations), _head_side_key(t, r, num_relations)])
    answer = np.concatenate([t, h])
    order = np.lexsort((answer, key))
    pair_key = np.full(2 * size, _PAD_KEY, np.int32)
    tail = np.full(2 * size, _PAD_KEY, np.int32)
    pair_key[: len(key)] = key[order]
    tail[: len(key)] = answer[order]
    return TripleSet(jnp.asarray(pair_key), jnp.asarray(tail), jnp.asarray(num_relations, jnp.int32))


def contains(known: TripleSet, h, r, t) -> jax.Array:
    """Whether each (h, r, t) (int arrays, broadcast together) is in `known`: a vectorised
    binary search, ceil(log2(2N + 1)) gathers per query. When h and r broadcast to fewer
    queries than t (e.g. (B, 1) positives against (B, K) candidate tails) the search is
    narrowed: each (h, r) finds its run of known tails once, and each candidate searches only
    that run (as many steps as the longest run in the batch needs). `contains_heads` is the
    same with the sides swapped."""
    q = _tail_side_key(jnp.asarray(h, jnp.int32), jnp.asarray(r, jnp.int32), known.num_relations)
    return _search(known, q, jnp.asarray(t, jnp.int32))


def contains_heads(known: TripleSet, h, r, t) -> jax.Array:
    """`contains`, searching the head side: narrowed when r and t broadcast to fewer queries
    than h (e.g. (B, 1) positives against (B, K) candidate heads)."""
    q = _head_side_key(jnp.asarray(t, jnp.int32), jnp.asarray(r, jnp.int32), known.num_relations)
    return _search(known, q, jnp.asarray(h, jnp.int32))


def _search(known: TripleSet, q, answer) -> jax.Array:
    """Whether each (key q, answer) pair is in `known`: narrowed when the keys broadcast to
    fewer queries than the answers, else a search over all the pairs."""
    shape = jnp.broadcast_shapes(q.shape, answer.shape)
    if math.prod(q.shape) < math.prod(shape):
        return _contains_narrowed(known, q, answer, shape)
    return _contains_full(known, q, answer)


def _contains_full(known: TripleSet, q, t) -> jax.Array:
    """Whether each (key q, answer t) pair is in `known`: a binary search over all its pairs."""
    q, t = jnp.broadcast_arrays(q, t)
    n = known.pair_key_N.shape[0]
    lo = jnp.zeros(q.shape, jnp.int32)
    hi = jnp.full(q.shape, n, jnp.int32)

    def body(_, bounds):  # invariant: entries before lo are < (q, t), from hi on are >= (q, t)
        lo, hi = bounds
        mid = (lo + hi) // 2
        m = jnp.minimum(mid, n - 1)
        k, tt = known.pair_key_N[m], known.tail_N[m]
        less = (k < q) | ((k == q) & (tt < t))
        active = lo < hi
        return jnp.where(active & less, mid + 1, lo), jnp.where(active & ~less, mid, hi)

    lo, _ = jax.lax.fori_loop(0, max(1, math.ceil(math.log2(n + 1))), body, (lo, hi))
    at = jnp.minimum(lo, n - 1)
    return (lo < n) & (known.pair_key_N[at] == q) & (known.tail_N[at] == t)


def _contains_narrowed(known: TripleSet, q, t, shape) -> jax.Array:
    """`_contains_full` where each key q (fewer than `shape`) finds its run of answers once."""
    n = known.pair_key_N.shape[0]
    start = jnp.searchsorted(known.pair_key_N, q, side="left").astype(jnp.int32)
    stop = jnp.searchsorted(known.pair_key_N, q, side="right").astype(jnp.int32)
    start, stop, t = (jnp.broadcast_to(a, shape) for a in (start, stop, t))

    def body(bounds):  # within [start, stop) the answers are sorted: find the first >= t
        lo, hi = bounds
        mid = (lo + hi) // 2
        less = known.tail_N[jnp.minimum(mid, n - 1)] < t
        active = lo < hi
        return jnp.where(active & less, mid + 1, lo), jnp.where(active & ~less, mid, hi)

    lo, _ = jax.lax.while_loop(lambda bounds: jnp.any(bounds[0] < bounds[1]), body, (start, stop))
    return (lo < stop) & (known.tail_N[jnp.minimum(lo, n - 1)] == t)


class Negatives(NamedTuple):
    """K corrupted triples per positive (h, r, t): the k-th replaces the head (where
    `corrupt_head`) or the tail by `replacement_BxK`; `heads_BxK`/`tails_BxK` spell the
    corrupted triples out (their relation is the positive's). `mask_BxK` is False where a
    negative is a known true triple (only when filtering, else None)."""

    heads_BxK: jax.Array
    tails_BxK: jax.Array
    replacement_BxK: jax.Array  # (1, K) when one draw is shared by the batch
    corrupt_head: jax.Array  # bool, (B, 1) when one side per positive, else (B, K)
    mask_BxK: jax.Array | None


def corrupt(key, triples_Bx3, *, num_entities, num_negatives: int, mode: str = "both",
            known: TripleSet | None = None, pool_P=None, pool_size=None, shared: bool = False) -> Negatives:
    """Draw `num_negatives` corruptions of each positive triple, on device.

    mode 'both': each positive replaces its head or its tail (a fair coin) in all its K
    negatives, as Sun et al.'s code (head-batch/tail-batch) and PyKEEN's basic sampler do;
    'mixed': a coin per negative; 'head' or 'tail': always that side. The replacement is
    uniform over the other num_entities - 1 entities (never the original, as PyKEEN's
    sampler). With `known`, negatives that are known true triples are masked out
    (`mask_BxK` False) rather than redrawn, so shapes stay static; the losses ignore masked
    negatives. `num_entities` may be a traced scalar (e.g. per federated client).

    pool_P, pool_size: draw replacements uniformly from the first `pool_size` ids of
    `pool_P` instead (e.g. the entities one federated client holds); the original entity
    may then be drawn, and is masked when `known` holds the positive.

    shared: draw one set of K replacements for the whole batch (`replacement_BxK` of shape
    (1, K); each positive still replaces its own head or tail with them), as PyTorch-BigGraph
    shares negatives within a batch: each positive's K negatives are still K independent
    uniform draws, only positives of one batch see the same ones, and the scoring becomes
    one (B, D) x (D, K) product or distance table (`jaxdl.models.kge.score_corrupted`). The
    draw is uniform over all entities, a replacement equal to the entity it replaces masked
    out (from a pool: as above).
    """
    if mode not in CORRUPT_MODES:
        raise ValueError(f"mode must be one of {CORRUPT_MODES}, got {mode!r}")
    B = triples_Bx3.shape[0]
    h, r, t = (triples_Bx3[:, i : i + 1] for i in range(3))
    k_side, k_ent = jax.random.split(key)
    if mode == "both":
        corrupt_head = jax.random.bernoulli(k_side, 0.5, (B, 1))
    elif mode == "mixed":
        corrupt_head = jax.random.bernoulli(k_side, 0.5, (B, num_negatives))
    else:
        corrupt_head = jnp.full((B, 1), mode == "head")
    original = jnp.where(corrupt_head, h, t)
    rows = 1 if shared else B
    if pool_P is None and not shared:
        draw = jax.random.randint(k_ent, (B, num_negatives), 0, num_entities - 1, dtype=jnp.int32)
        replacement = draw + (draw >= original)  # skip the original entity: uniform over the others
    elif pool_P is None:
        replacement = jax.random.randint(k_ent, (1, num_negatives), 0, num_entities, dtype=jnp.int32)
    else:
        replacement = pool_P[jax.random.randint(k_ent, (rows, num_negatives), 0, pool_size, dtype=jnp.int32)]
    heads = jnp.where(corrupt_head, replacement, h)
    tails = jnp.where(corrupt_head, t, replacement)
    if known is None:
        mask = None
    elif mode == "mixed":  # a side per negative: each searches all the known pairs
        mask = ~contains(known, heads, r, tails)
    else:  # one side per positive: its (h, r) or (t, r) against the candidates, a narrowed search
        R = known.num_relations
        q = jnp.where(corrupt_head, _head_side_key(t, r, R), _tail_side_key(h, r, R))
        mask = ~_search(known, q, jnp.broadcast_to(replacement, (B, num_negatives)))
    if shared and pool_P is None:
        mask = (replacement != original) if mask is None else mask & (replacement != original)
    return Negatives(heads, tails, replacement, corrupt_head, mask)


def epoch_batches(data: dict, key, batch_size: int) -> dict:
    """One epoch of every training triple in shuffled batches, the last one padded.

    data: {'triples': int32 (N, 3)}, optionally 'weight' float (N,). Returns {'triples':
    (S, B, 3), 'mask': bool (S, B)} (and 'weight' (S, B)) with S = ceil(N / B): every triple
    is used once per epoch (as PyKEEN does), the padding rows of the last batch are masked
    out of the loss, and shapes stay static for `jit`.
    """
    triples = data["triples"]
    n = triples.shape[0]
    S = -(-n // batch_size)
    order = index_shuffle(key, n)
    pad = S * batch_size - n
    order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])
    mask = jnp.arange(S * batch_size) < n
    batches = {"triples": triples[order].reshape(S, batch_size, 3), "mask": mask.reshape(S, batch_size)}
    if "weight" in data:
        batches["weight"] = data["weight"][order].reshape(S, batch_size)
    return batches


def subsampling_weights(triples_Nx3, num_relations: int, *, start: int = 4) -> np.ndarray:
    """Each training triple's weight 1 / sqrt(c(h, r) + c(t, r^-1)), as in the RotatE code
    (Sun et al., 2019): c counts the triples sharing the (head, relation) or (tail, inverse
    relation) pair, from `start` for the first. Triples about frequent pairs weigh less.
    Returns float32 (N,)."""
    t = np.asarray(triples_Nx3, np.int64)
    weight = np.zeros(len(t))
    for key in (t[:, 0] * num_relations + t[:, 1], t[:, 2] * num_relations + t[:, 1]):
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        weight += counts[inverse] + (start - 1)
    return (1.0 / np.sqrt(weight)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Filters for link prediction (host)
# ---------------------------------------------------------------------------------------
def _answers(known_Nx3: np.ndarray, query_keys: np.ndarray, known_keys: np.ndarray, answers: np.ndarray,
             targets: np.ndarray, num_entities: int) -> np.ndarray:
    order = np.argsort(known_keys, kind="stable")
    sorted_keys, sorted_answers = known_keys[order], answers[order]
    start = np.searchsorted(sorted_keys, query_keys, "left")
    stop = np.searchsorted(sorted_keys, query_keys, "right")
    lengths = stop - start
    rows = np.repeat(np.arange(len(query_keys)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    mask = np.zeros((len(query_keys), num_entities), bool)
    mask[rows, sorted_answers[np.repeat(start, lengths) + offsets]] = True
    mask[np.arange(len(query_keys)), targets] = False
    return mask


def filter_masks(known_Nx3, queries_Qx3, num_entities: int) -> tuple[np.ndarray, np.ndarray]:
    """For each query triple (h, r, t): `tail_filter_QxE[q, e]` is True when (h, r, e) is a
    known true triple other than the query itself, `head_filter_QxE[q, e]` when (e, r, t) is.
    Ranking leaves these candidates out (the filtered setting). Host numpy, vectorised."""
    known = np.asarray(known_Nx3, np.int64).reshape(-1, 3)
    q = np.asarray(queries_Qx3, np.int64).reshape(-1, 3)
    E = int(num_entities)
    R = int(max(known[:, 1].max(initial=0), q[:, 1].max(initial=0))) + 1
    tail_filter = _answers(known, q[:, 0] * R + q[:, 1], known[:, 0] * R + known[:, 1], known[:, 2], q[:, 2], E)
    head_filter = _answers(known, q[:, 2] * R + q[:, 1], known[:, 2] * R + known[:, 1], known[:, 0], q[:, 0], E)
    return tail_filter, head_filter
