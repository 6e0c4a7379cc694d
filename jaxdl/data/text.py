"""Text corpora for word2vec (D2L 15.3): reading, vocabulary, subsampling, noise, and the
epoch's training examples drawn on device.

Host side (NumPy, once per run):
  * `read_corpus(path)`: one sentence or document per line, whitespace tokens; a `.zip`
    is read from its member (default `ptb/ptb.train.txt`, the book's PTB archive).
    `ptb_zip()` finds the archive in the cache or downloads it (SHA-1 checked).
  * `build_vocab(sentences, min_count=)`: words seen at least `min_count` times, most
    frequent first; id 0 is `<unk>`, which stands for every rarer word (and PTB's literal
    `<unk>`). As in the book, `<unk>` tokens are dropped from training.
  * `encode`, `keep_probabilities` (subsampling: keep w with probability
    min(1, sqrt(t / f(w))), f the word's share of the in-vocabulary tokens -- the book's
    formula; word2vec.c's as an option), `noise_distribution` (count^0.75) and its Vose
    `alias_table`, packed one word per entry (`packed_alias_table`).
  * `planted_clusters`: the embedded synthetic corpus whose word clusters are known.

Device side (pure, jittable; `make_batches(data, key)` for `jaxdl.train.epoch`):
  * `skipgram_batches`: subsampling keep-mask, dynamic windows (each centre draws its
    radius from 1..window), windows cut at sentence ends, then every valid (centre,
    context) pair packed into static (S, B) batches with a mask. The static S has room for
    the most pairs an epoch can have; steps past the last pair are flagged inactive and
    skipped by the train step (`jaxdl.train.sparse.skip_inactive`), so the epoch is one
    `lax.scan` with no recompilation however many pairs the draw produced.
  * Order ("shuffle"): by default the B slots of a batch are B streams, each walking its
    own contiguous 1/B of the epoch's pairs (like B word2vec threads): a batch samples the
    whole corpus. `shuffle="random"` permutes the kept centres instead (`prefix_shuffle`, no
    sort): a little more work per epoch than the streams, for about the same word-similarity
    score (the README's word2vec section has the figures).
  * `cbow_batches`: the same draws, one example per centre with its 2*window contexts
    padded and masked.
  * `sample_alias`: negatives from the noise distribution in O(1) per draw, from
    `hash_bits` (a counter-based integer hash: cheap enough to draw every step's negatives).
"""
from __future__ import annotations

import collections
import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.download import default_cache_dir, download
from jaxdl.data.randomness import hash_bits, prefix_shuffle
from jaxdl.data.bounded import read_file, read_zip_member
from jaxdl.errors import JaxdlError

UNK = "<unk>"
PTB_URL = "http://d2l-data.s3-accelerate.amazonaws.com/ptb.zip"
PTB_SHA1 = "319d85e578af0cdc590547f26231e4e31cdf1e42"
PTB_MEMBER = "ptb/ptb.train.txt"


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
def _sentences_from_text(text: str) -> list[list[str]]:
    return [tokens for tokens in (line.split() for line in text.splitlines()) if tokens]


def read_corpus(path, *, member: str | None = None) -> list[list[str]]:
    """Sentences (lists of tokens) from a plain-text file or a zip archive's member.

    Args:
      path: a text file (one sentence or document per line, whitespace-separated tokens)
        or a `.zip` archive.
      member: the archive member to read (default `ptb/ptb.train.txt`); ignored for text.
    Returns:
      non-empty token lists, one per non-blank line.
    Raises:
      JaxdlError: missing or unreadable file, archive without the member, no tokens.
    """
    path = Path(path)
    if not path.is_file():
        raise JaxdlError(f"{path}: no such corpus file")
    if zipfile.is_zipfile(path):
        member = member or PTB_MEMBER
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if member not in names:
                shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                raise JaxdlError(f"{path}: archive has no member {member!r} (it has: {shown or 'nothing'})")
            where = f"{path}:{member}"
            raw = read_zip_member(archive, member, where)
    else:
        if path.suffix == ".zip":
            raise JaxdlError(f"{path}: not a valid zip archive")
        where = str(path)
        raw = read_file(path)
    if b"\x00" in raw:
        raise JaxdlError(f"{where}: holds NUL bytes: not a text corpus")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JaxdlError(f"{where}: not UTF-8 text (byte {e.start})") from None
    sentences = _sentences_from_text(text)
    if not sentences:
        raise JaxdlError(f"{where}: corpus is empty (no tokens)")
    return sentences


def ptb_zip(cache_dir=None) -> Path:
    """The book's PTB archive: `<cache>/ptb.zip`, downloaded (SHA-1 checked) only when missing."""
    dest = Path(cache_dir) if cache_dir else default_cache_dir()
    dest = dest / "ptb.zip"
    if dest.is_file():
        return dest
    return download(PTB_URL, dest, algorithm="sha1", digest=PTB_SHA1)


# ---------------------------------------------------------------------------------------
# Vocabulary and per-word statistics
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocab:
    """Words by id (id 0 is `<unk>`) and their corpus counts (counts[0]: tokens mapped to <unk>)."""

    words: tuple[str, ...]
    counts: np.ndarray  # (V,) int64

    def __post_init__(self):
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return self.id(word) is not None

    def id(self, word: str) -> int | None:
        """The word's id, or None for <unk> and out-of-vocabulary words."""
        i = self._index.get(word)  # type: ignore[attr-defined]
        return None if i in (None, 0) else i


def build_vocab(sentences: list[list[str]], *, min_count: int) -> Vocab:
    """Words occurring at least `min_count` times, most frequent first (ties alphabetical),
    after id 0 = `<unk>`. A literal `<unk>` in the text counts toward id 0."""
    counter = collections.Counter(w for s in sentences for w in s)
    kept = sorted(((w, c) for w, c in counter.items() if c >= min_count and w != UNK), key=lambda wc: (-wc[1], wc[0]))
    if not kept:
        top = counter.most_common(1)[0] if counter else (None, 0)
        raise JaxdlError(f"no word occurs at least --min-count {min_count} times "
                         f"(the most frequent, {top[0]!r}, occurs {top[1]} times); lower --min-count")
    total = sum(counter.values())
    unk = total - sum(c for _, c in kept)
    return Vocab((UNK, *(w for w, _ in kept)), np.array([unk, *(c for _, c in kept)], np.int64))


@dataclass(frozen=True)
class Corpus:
    """An encoded corpus: in-vocabulary token ids and the sentence each belongs to."""

    tokens: np.ndarray  # (N,) int32 ids >= 1 (<unk> dropped)
    sentence: np.ndarray  # (N,) int32 sentence index, nondecreasing
    raw_tokens: int  # tokens read, <unk> and rare words included


def encode(sentences: list[list[str]], vocab: Vocab) -> Corpus:
    """Map tokens to ids and drop those that map to <unk> (the book's preprocessing)."""
    index = vocab._index  # type: ignore[attr-defined]
    ids, sent = [], []
    for s, tokens in enumerate(sentences):
        row = [i for i in (index.get(w, 0) for w in tokens) if i]
        ids.extend(row)
        sent.extend([s] * len(row))
    if not ids:
        raise JaxdlError("corpus has no in-vocabulary tokens")
    return Corpus(np.asarray(ids, np.int32), np.asarray(sent, np.int32), sum(map(len, sentences)))


SUBSAMPLE_FORMULAS = ("book", "word2vec")


def keep_probabilities(counts: np.ndarray, t: float = 1e-4, *, formula: str = "book") -> np.ndarray:
    """Subsampling: the probability of keeping each word, f(w) = count(w) / in-vocabulary tokens.

    formula 'book' (D2L 15.3, the default): min(1, sqrt(t / f)). 'word2vec' (word2vec.c and
    gensim): min(1, sqrt(t / f) + t / f), which keeps more of every frequent word, so an
    epoch has more tokens (the README's word2vec section compares the two). Id 0 (<unk>)
    gets 0; t = 0 keeps everything. Returns (V,) float32.
    """
    if formula not in SUBSAMPLE_FORMULAS:
        raise ValueError(f"formula {formula!r} not in {SUBSAMPLE_FORMULAS}")
    counts = np.asarray(counts, np.float64)
    freq = counts / counts[1:].sum()
    ratio = t / np.maximum(freq, 1e-300)
    keep = np.sqrt(ratio) + (ratio if formula == "word2vec" else 0.0)
    keep = np.ones_like(freq) if t <= 0 else np.minimum(1.0, keep)
    keep[0] = 0.0
    return keep.astype(np.float32)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """P_noise(w) proportional to count(w)^power over the vocabulary; <unk> gets 0. (V,) float64."""
    weights = np.asarray(counts, np.float64) ** power
    weights[0] = 0.0
    return weights / weights.sum()


def alias_table(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method: (accept_V float64, alias_V int64) such that drawing i uniformly
    and keeping it with probability accept[i], else taking alias[i], samples `probs` exactly.
    An entry that always keeps itself has accept 1 and alias i."""
    probs = np.asarray(probs, np.float64)
    n = len(probs)
    scaled = probs * n / probs.sum()
    accept = np.ones(n)
    alias = np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        accept[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    for i in small + large:  # leftovers are 1 up to rounding
        accept[i], alias[i] = 1.0, i
    return accept, alias


def alias_id_bits(vocab_size: int) -> int:
    """Bits of a packed alias entry that hold the alias id (the rest hold the threshold)."""
    return max(1, (vocab_size - 1).bit_length())


def packed_alias_table(probs: np.ndarray) -> np.ndarray:
    """The alias table packed into one uint32 per word: (threshold << id_bits) | alias,
    threshold = accept quantised to the 32 - id_bits remaining bits (one gather per draw
    instead of two, which is cheaper on CPU). Quantisation moves each word's probability by
    at most 2^-(33 - id_bits) / V: 2e-10 absolute for V = 6,719 (PTB's vocabulary at the
    book's min_count 10)."""
    accept, alias = alias_table(probs)
    n = len(accept)
    id_bits = alias_id_bits(n)
    thr_bits = 32 - id_bits
    if thr_bits < 8:
        raise JaxdlError(f"vocabulary of {n:,} words is too large for the packed noise table (at most 2^24)")
    top = (1 << thr_bits) - 1
    thr = np.minimum(np.round(accept * (1 << thr_bits)), top).astype(np.uint64)
    alias = np.where(thr >= top, np.arange(n), alias).astype(np.uint64)  # accept ~1: aliasing to itself
    return ((thr << np.uint64(id_bits)) | alias).astype(np.uint32)


def sample_alias(key, packed_VxS: jax.Array, shape) -> jax.Array:
    """Draw word ids of the given shape from a `packed_alias_table` (one id and one coin
    per draw, one table look-up)."""
    V = packed_VxS.shape[0]
    id_bits = alias_id_bits(V)
    bits = hash_bits(key, (2, *shape))
    ids = (bits[0] % jnp.uint32(V)).astype(jnp.int32)  # modulo bias <= V / 2^32
    entry = packed_VxS[ids]
    coin = bits[1] >> id_bits  # uniform on [0, 2^(32 - id_bits))
    alias = (entry & jnp.uint32((1 << id_bits) - 1)).astype(jnp.int32)
    return jnp.where(coin < (entry >> id_bits), ids, alias)


# ---------------------------------------------------------------------------------------
# The embedded corpus with a known answer
# ---------------------------------------------------------------------------------------
def planted_clusters(*, seed: int = 0, num_clusters: int = 20, words_per_cluster: int = 20,
                     num_stop_words: int = 20, num_sentences: int = 6000, min_length: int = 6,
                     max_length: int = 16, stop_rate: float = 0.3, noise_rate: float = 0.1
                     ) -> tuple[list[list[str]], dict[str, int]]:
    """Sentences about one topic each, with the topics' words planted in clusters.

    Each sentence picks a cluster, then each token is a stop word (shared by all topics,
    Zipf-distributed, so subsampling matters) with probability `stop_rate`, else a word of
    another cluster with probability `noise_rate`, else a word of its own cluster. Words
    are named `c03w07` (cluster 3) and stop words `s05`.

    Returns (sentences, cluster_of) where cluster_of maps every clustered word to its cluster.
    """
    rng = np.random.default_rng(seed)
    clusters = [[f"c{c:02d}w{w:02d}" for w in range(words_per_cluster)] for c in range(num_clusters)]
    stops = [f"s{s:02d}" for s in range(num_stop_words)]
    stop_p = 1.0 / np.arange(1, num_stop_words + 1)
    stop_p /= stop_p.sum()
    lengths = rng.integers(min_length, max_length + 1, num_sentences)
    topics = rng.integers(0, num_clusters, num_sentences)
    sentences = []
    for topic, length in zip(topics, lengths):
        kind = rng.random(length)
        stop_ids = rng.choice(num_stop_words, length, p=stop_p)
        other = (topic + rng.integers(1, num_clusters, length)) % num_clusters
        words = rng.integers(0, words_per_cluster, length)
        sentence = []
        for j in range(length):
            if kind[j] < stop_rate:
                sentence.append(stops[stop_ids[j]])
            elif kind[j] < stop_rate + noise_rate:
                sentence.append(clusters[other[j]][words[j]])
            else:
                sentence.append(clusters[topic][words[j]])
        sentences.append(sentence)
    cluster_of = {w: c for c, words in enumerate(clusters) for w in words}
    return sentences, cluster_of


def sentences_to_text(sentences: list[list[str]]) -> str:
    """One sentence per line (the format `read_corpus` reads)."""
    buf = io.StringIO()
    for s in sentences:
        buf.write(" ".join(s) + "\n")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# The epoch's examples, drawn on device
# ---------------------------------------------------------------------------------------
SHUFFLES = ("streams", "random")


def sentence_bounds(sentence_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each token, the index of its sentence's first and last token: (first_N, last_N) int32."""
    sentence_N = np.asarray(sentence_N)
    N = len(sentence_N)
    starts = np.flatnonzero(np.r_[True, sentence_N[1:] != sentence_N[:-1]])
    ends = np.r_[starts[1:] - 1, N - 1]
    lengths = ends - starts + 1
    return np.repeat(starts, lengths).astype(np.int32), np.repeat(ends, lengths).astype(np.int32)


def device_corpus(corpus: Corpus, keep_prob: np.ndarray) -> dict[str, jax.Array]:
    """The arrays `skipgram_batches`/`cbow_batches` read: 'tokens', 'sentence_first' and
    'sentence_last' (each token's sentence bounds, see `sentence_bounds`), 'keep_prob'."""
    first, last = sentence_bounds(corpus.sentence)
    return {"tokens": jnp.asarray(corpus.tokens), "sentence_first": jnp.asarray(first),
            "sentence_last": jnp.asarray(last), "keep_prob": jnp.asarray(keep_prob)}


def kept_capacity(corpus: Corpus, keep_prob: np.ndarray, *, sigmas: float = 8.0) -> int:
    """Room for the tokens subsampling keeps in one epoch: mean + `sigmas` standard deviations
    of the kept count (a sum of independent Bernoullis), capped at the corpus size. With 8
    sigmas an epoch overflows with probability < 1e-15; overflowing tokens would be skipped
    and counted in the epoch's `dropped_tokens`."""
    p = np.asarray(keep_prob, np.float64)[corpus.tokens]
    mean, std = p.sum(), math.sqrt((p * (1 - p)).sum())
    return int(min(len(p), math.ceil(mean + sigmas * std + 16)))


def num_pair_steps(capacity: int, window: int, batch_size: int) -> int:
    """Static skip-gram steps per epoch: room for every kept token with 2*window contexts."""
    return math.ceil(capacity * 2 * window / batch_size)


def num_center_steps(capacity: int, batch_size: int) -> int:
    """Static CBOW steps per epoch: room for every kept token as a centre."""
    return math.ceil(capacity / batch_size)


def uniform_from_bits(bits: jax.Array) -> jax.Array:
    """Uniform [0, 1) float32 from the top 24 bits."""
    return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def _stream_layout(index, count, batch_size: int, num_steps: int):
    """Where example `index` (of `count`) goes in (num_steps, batch_size): B streams.

    With S = ceil(count / B) active steps, example e is slot e // S of step e % S: each of
    the B slots of a batch walks its own contiguous 1/B of the epoch's examples in order,
    like B word2vec threads, so a batch holds examples from all over the corpus and no
    sort is needed. Returns (flat destination, per-step active (S,), per-step progress (S,)).
    """
    S = jnp.maximum((count + batch_size - 1) // batch_size, 1)
    dest = (index % S) * batch_size + index // S
    step = jnp.arange(num_steps)
    return dest, step < S, (step / S).astype(jnp.float32)


def draw_windows(data: dict, key, *, window: int, capacity: int, shuffle: str = "streams"):
    """One epoch's random draws: subsampling keep-mask, a radius per centre, windows.

    Subsampled words are removed before windows are cut (as in the book and word2vec), a
    window never crosses a sentence end, and each kept centre draws its radius b from
    1..window. Returns a dict over `capacity` rows (row r = the r-th kept token, or with
    shuffle='random' a random kept token): 'center' (R,) ids, 'contexts' (R, 2*window) ids
    at offsets -window..-1, 1..window, 'valid' (R, 2*window), 'left'/'right' (R,) valid
    contexts on each side, 'kept' and 'dropped' (scalars: tokens kept, and kept tokens
    beyond `capacity` that were skipped).
    """
    tokens, keep_prob = data["tokens"], data["keep_prob"]
    N = tokens.shape[0]
    R = capacity
    k_bits, k_order = jax.random.split(key)
    bits = hash_bits(k_bits, (2, N))
    keep = uniform_from_bits(bits[0]) < keep_prob[tokens]
    # In token space: kept tokens before i (its row if kept), and how many kept tokens of its
    # sentence lie before and after it -- read off the one cumulative sum at the sentence's
    # first and last token, so no per-sentence scan is needed.
    kept_through = jnp.cumsum(keep, dtype=jnp.int32)
    kept_before = kept_through - keep
    before_in_sentence = kept_before - kept_before[data["sentence_first"]]
    last_row = kept_through[data["sentence_last"]] - 1  # row of the sentence's last kept token
    kept = kept_through[-1]
    n = jnp.minimum(kept, R)
    dest = jnp.where(keep, kept_before, R)

    def to_rows(x, fill):
        return jnp.full((R,), fill, x.dtype).at[dest].set(x, mode="drop", unique_indices=True)

    kept_tokens = to_rows(tokens, 0)
    row_before = to_rows(before_in_sentence, 0)
    row_last = jnp.minimum(to_rows(last_row, 0), n - 1)  # overflowing rows do not exist
    i = jnp.arange(R)
    if shuffle == "random":
        order = prefix_shuffle(k_order, n, R)  # the kept rows in random order, then the empty ones
    elif shuffle == "streams":
        order = i
    else:
        raise ValueError(f"shuffle {shuffle!r} not in {SHUFFLES}")
    radius = 1 + (bits[1, :R] % window).astype(jnp.int32)
    live = order < n
    left = jnp.where(live, jnp.minimum(radius, row_before[order]), 0)
    right = jnp.where(live, jnp.minimum(radius, row_last[order] - order), 0)
    offsets = jnp.concatenate([jnp.arange(-window, 0), jnp.arange(1, window + 1)])  # (C,)
    valid = ((offsets < 0) & (-offsets <= left[:, None])) | ((offsets > 0) & (offsets <= right[:, None]))
    contexts = kept_tokens[jnp.clip(order[:, None] + offsets, 0, R - 1)]
    return {"center": kept_tokens[order], "contexts": contexts, "valid": valid, "left": left, "right": right,
            "position": order, "live": live, "kept": kept, "dropped": kept - n}


def _epoch_stats(S: int, w: dict) -> dict[str, jax.Array]:
    """Per-step copies of the epoch's counts: the value at step 0, zeros after (they sum)."""
    first = jnp.arange(S) == 0
    return {"kept_tokens": jnp.where(first, w["kept"], 0), "dropped_tokens": jnp.where(first, w["dropped"], 0)}


def skipgram_batches(data: dict, key, *, batch_size: int, window: int, capacity: int | None = None,
                     shuffle: str = "streams") -> dict[str, jax.Array]:
    """Skip-gram examples for one epoch: every (centre, context) pair of the draw, once.

    Returns leaves with leading (S, B), S = num_pair_steps(capacity, window, B): 'center',
    'context' (int32 ids) and 'mask' (a real pair); per step 'active' (has pairs; later
    steps are skipped by the train step), 'progress' (fraction of the epoch done before it),
    'kept_tokens' and 'dropped_tokens' (at step 0). Pairs are laid out as B streams (see
    `_stream_layout`).
    """
    R = data["tokens"].shape[0] if capacity is None else capacity
    w = draw_windows(data, key, window=window, capacity=R, shuffle=shuffle)
    C = 2 * window
    S = num_pair_steps(R, window, batch_size)
    counts = w["left"] + w["right"]
    row_start = jnp.cumsum(counts) - counts
    num_pairs = row_start[-1] + counts[-1]
    offsets = jnp.concatenate([jnp.arange(-window, 0), jnp.arange(1, window + 1)])
    # pair index of (row, offset): left contexts -left..-1 first, then right 1..right
    within = jnp.where(offsets < 0, w["left"][:, None] + offsets, w["left"][:, None] + offsets - 1)
    pair = row_start[:, None] + within
    dest, active, progress = _stream_layout(pair, num_pairs, batch_size, S)
    dest = jnp.where(w["valid"], dest, S * batch_size).reshape(-1)
    center = jnp.zeros((S * batch_size,), jnp.int32).at[dest].set(
        jnp.broadcast_to(w["center"][:, None], (R, C)).reshape(-1), mode="drop", unique_indices=True)
    context = jnp.zeros((S * batch_size,), jnp.int32).at[dest].set(
        w["contexts"].reshape(-1), mode="drop", unique_indices=True)
    mask = jnp.zeros((S * batch_size,), bool).at[dest].set(True, mode="drop", unique_indices=True)
    return {"center": center.reshape(S, batch_size), "context": context.reshape(S, batch_size),
            "mask": mask.reshape(S, batch_size), "active": active, "progress": progress, **_epoch_stats(S, w)}


def cbow_batches(data: dict, key, *, batch_size: int, window: int, capacity: int | None = None,
                 shuffle: str = "streams") -> dict[str, jax.Array]:
    """CBOW examples for one epoch: each kept centre with at least one context, once.

    Returns leaves with leading (S, B), S = num_center_steps(capacity, B): 'center' (int32),
    'contexts' (S, B, 2*window) int32 padded with 'context_mask' (S, B, 2*window), 'mask'
    (a real example), and per step 'active', 'progress', 'kept_tokens', 'dropped_tokens'
    as in `skipgram_batches`.
    """
    R = data["tokens"].shape[0] if capacity is None else capacity
    w = draw_windows(data, key, window=window, capacity=R, shuffle=shuffle)
    S = num_center_steps(R, batch_size)
    has_context = (w["left"] + w["right"]) > 0
    rank = jnp.cumsum(has_context) - 1
    num_examples = rank[-1] + 1
    dest, active, progress = _stream_layout(rank, num_examples, batch_size, S)
    dest = jnp.where(has_context, dest, S * batch_size)

    def pack(x, fill):
        out = jnp.full((S * batch_size, *x.shape[1:]), fill, x.dtype)
        return out.at[dest].set(x, mode="drop", unique_indices=True).reshape(S, batch_size, *x.shape[1:])

    return {"center": pack(w["center"], 0), "contexts": pack(w["contexts"], 0),
            "context_mask": pack(w["valid"], False), "mask": pack(has_context, False),
            "active": active, "progress": progress, **_epoch_stats(S, w)}
