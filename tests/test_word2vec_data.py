"""word2vec data: reading, vocabulary, subsampling, noise sampling, on-device windows.

Every formula is checked against an independent computation: brute-force windows in
Python, the alias table's exact output distribution, chi-square tests of the draws.
"""
import collections
import zipfile
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdl.data import randomness, text
from jaxdl.errors import JaxdlError


# ---- reading ------------------------------------------------------------------------------
def test_read_plain_text_skips_blank_lines(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("the cat  sat\n\n  \non the\tmat\n")
    assert text.read_corpus(p) == [["the", "cat", "sat"], ["on", "the", "mat"]]


def test_read_zip_member_default_and_named(tmp_path):
    p = tmp_path / "ptb.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("ptb/ptb.train.txt", "a b c\nd e\n")
        z.writestr("ptb/ptb.valid.txt", "x y\n")
    assert text.read_corpus(p) == [["a", "b", "c"], ["d", "e"]]
    assert text.read_corpus(p, member="ptb/ptb.valid.txt") == [["x", "y"]]


@pytest.mark.parametrize("make,msg", [
    (lambda d: d / "missing.txt", "no such corpus file"),
    (lambda d: (d / "e.txt").write_text("\n  \n\n") and d / "e.txt", "corpus is empty"),
    (lambda d: (d / "b.txt").write_bytes(b"ok \xff\xfe bad\n") and d / "b.txt", "not UTF-8"),
    (lambda d: (d / "fake.zip").write_text("not a zip") and d / "fake.zip", "not a valid zip"),
])
def test_read_bad_corpus_one_line(tmp_path, make, msg):
    with pytest.raises(JaxdlError, match=msg) as e:
        text.read_corpus(make(tmp_path))
    assert "\n" not in str(e.value)


def test_zip_without_member_names_it_and_lists_members(tmp_path):
    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("data/train.txt", "a b\n")
    with pytest.raises(JaxdlError, match=r"no member 'ptb/ptb.train.txt' \(it has: data/train.txt\)"):
        text.read_corpus(p)


def test_ptb_zip_uses_cache_and_downloads_only_when_missing(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dest, *, algorithm, digest):
        calls.append((url, algorithm, digest))
        dest.write_bytes(b"zip bytes")
        return dest

    monkeypatch.setattr(text, "download", fake_download)
    got = text.ptb_zip(tmp_path)
    assert got == tmp_path / "ptb.zip" and calls == [(text.PTB_URL, "sha1", text.PTB_SHA1)]
    assert text.PTB_SHA1 == "319d85e578af0cdc590547f26231e4e31cdf1e42"
    text.ptb_zip(tmp_path)  # present now: no second download
    assert len(calls) == 1


# ---- vocabulary and statistics ------------------------------------------------------------------
SENTS = [["b", "a", "c", "a"], ["a", "b", "<unk>", "d"], ["c", "b", "a"], ["e"]]


def test_vocab_orders_by_count_then_word_and_counts_unk():
    v = text.build_vocab(SENTS, min_count=2)
    assert v.words == ("<unk>", "a", "b", "c")  # a:4, b:3, c:2; d, e and the literal <unk> -> <unk>
    np.testing.assert_array_equal(v.counts, [3, 4, 3, 2])
    assert v.id("a") == 1 and v.id("d") is None and v.id("<unk>") is None and "c" in v and "e" not in v


def test_vocab_all_below_min_count_is_one_line_error():
    with pytest.raises(JaxdlError, match=r"no word occurs at least --min-count 5 times \(the most frequent, 'a', "
                                         r"occurs 4 times\)"):
        text.build_vocab(SENTS, min_count=5)


def test_encode_drops_unk_and_keeps_sentence_ids():
    v = text.build_vocab(SENTS, min_count=2)
    c = text.encode(SENTS, v)
    np.testing.assert_array_equal(c.tokens, [2, 1, 3, 1, 1, 2, 3, 2, 1])
    np.testing.assert_array_equal(c.sentence, [0, 0, 0, 0, 1, 1, 2, 2, 2])
    assert c.raw_tokens == 12


def test_keep_probabilities_is_the_books_formula():
    counts = np.array([7, 5000, 100, 3])
    f = counts[1:] / counts[1:].sum()
    np.testing.assert_allclose(text.keep_probabilities(counts, 1e-2)[1:], np.minimum(1, np.sqrt(1e-2 / f)), rtol=1e-6)
    assert text.keep_probabilities(counts, 1e-2)[0] == 0
    np.testing.assert_array_equal(text.keep_probabilities(counts, 0)[1:], 1)
    r = 1e-2 / f  # word2vec.c / gensim keep more: sqrt(t/f) + t/f
    np.testing.assert_allclose(text.keep_probabilities(counts, 1e-2, formula="word2vec")[1:],
                               np.minimum(1, np.sqrt(r) + r), rtol=1e-6)


def test_noise_distribution_is_count_to_the_three_quarters():
    counts = np.array([50, 16, 81, 1])
    p = text.noise_distribution(counts)
    np.testing.assert_allclose(p, np.array([0, 8, 27, 1]) / 36)


def _alias_output_distribution(accept, alias):
    """P(w) exactly: pick i uniformly, keep it with prob accept[i], else alias[i]."""
    n = len(accept)
    p = np.asarray(accept, np.float64) / n
    np.add.at(p, alias, (1 - np.asarray(accept, np.float64)) / n)
    return p


@pytest.mark.parametrize("n", [1, 2, 7, 300])
def test_alias_table_reproduces_the_distribution_exactly(n):
    probs = np.random.default_rng(n).random(n) ** 3
    probs[0] = 0  # <unk>
    if n == 1:
        probs[0] = 1
    probs /= probs.sum()
    np.testing.assert_allclose(_alias_output_distribution(*text.alias_table(probs)), probs, atol=1e-12)


def test_packed_alias_table_decodes_to_the_distribution_within_its_quantisation():
    probs = text.noise_distribution(np.random.default_rng(0).integers(1, 10_000, 6719))
    packed = text.packed_alias_table(probs).astype(np.uint64)
    bits = text.alias_id_bits(len(probs))
    accept = (packed >> np.uint64(bits)).astype(np.float64) / 2 ** (32 - bits)
    alias = (packed & np.uint64((1 << bits) - 1)).astype(np.int64)
    got = _alias_output_distribution(accept, alias)
    assert np.abs(got - probs).max() <= 2.0 ** -(32 - bits) / len(probs) * 4
    assert got[0] == 0


def _chi2_pvalue(samples, probs):
    counts = np.bincount(samples, minlength=len(probs))
    support = probs > 0
    assert counts[~support].sum() == 0, "drew a word of probability 0"
    return stats.chisquare(counts[support], probs[support] * len(samples)).pvalue


def test_sample_alias_matches_the_noise_distribution_chi_square():
    probs = text.noise_distribution(np.concatenate([[99], np.random.default_rng(1).integers(1, 500, 40)]))
    table = jnp.asarray(text.packed_alias_table(probs))
    draws = np.asarray(jax.jit(text.sample_alias, static_argnums=2)(jax.random.key(0), table, (400, 500))).ravel()
    assert _chi2_pvalue(draws, probs) > 1e-3
    uniform = np.r_[0, np.full(40, 1 / 40)]
    assert _chi2_pvalue(draws, uniform) < 1e-12  # the test has power: another distribution is rejected


def test_hash_bits_are_uniform_and_keyed():
    bits = np.asarray(randomness.hash_bits(jax.random.key(3), (200_000,)))
    for shift in (0, 8, 16, 28):  # low, middle and high nibbles are uniform
        nibble = (bits >> shift) & 15
        assert stats.chisquare(np.bincount(nibble, minlength=16)).pvalue > 1e-3
    again = np.asarray(randomness.hash_bits(jax.random.key(3), (200_000,)))
    other = np.asarray(randomness.hash_bits(jax.random.key(4), (200_000,)))
    np.testing.assert_array_equal(bits, again)
    assert (bits == other).mean() < 1e-3
    assert abs(np.corrcoef(bits[:-1].astype(float), bits[1:].astype(float))[0, 1]) < 0.01


# ---- the epoch's examples ---------------------------------------------------------------------------
# Jitted once per shape and reused (tests share the toy corpus, so mostly compiled once).
STATIC = ("batch_size", "window", "capacity", "shuffle")
skipgram_batches = jax.jit(text.skipgram_batches, static_argnames=STATIC)
cbow_batches = jax.jit(text.cbow_batches, static_argnames=STATIC)
draw_windows = jax.jit(text.draw_windows, static_argnames=STATIC[1:])
hash_bits = jax.jit(randomness.hash_bits, static_argnums=1)

def _toy(seed=0, vocab=30, sentences=150):
    rng = np.random.default_rng(seed)
    sents = [[f"w{rng.integers(0, vocab)}" for _ in range(rng.integers(1, 12))] for _ in range(sentences)]
    v = text.build_vocab(sents, min_count=1)
    c = text.encode(sents, v)
    keep = rng.uniform(0.3, 1.0, len(v)).astype(np.float32)
    keep[0] = 0
    return c, keep, text.device_corpus(c, keep)


def _brute_force_pairs(corpus, keep_prob, key, window, capacity):
    """The pairs skipgram_batches should produce, recomputed in Python from the same draws."""
    N = len(corpus.tokens)
    k_bits, _ = jax.random.split(key)
    bits = np.asarray(hash_bits(k_bits, (2, N)))
    keep = np.asarray(text.uniform_from_bits(jnp.asarray(bits[0]))) < keep_prob[corpus.tokens]
    tokens, sentence = corpus.tokens[keep][:capacity], corpus.sentence[keep][:capacity]
    radius = 1 + bits[1, :capacity] % window
    pairs = collections.Counter()
    for i in range(len(tokens)):
        for d in range(1, radius[i] + 1):
            for j in (i - d, i + d):
                if 0 <= j < len(tokens) and sentence[j] == sentence[i]:
                    pairs[(tokens[i], tokens[j])] += 1
    return pairs, int(keep.sum())


def _pairs_of(batches):
    m = np.asarray(batches["mask"])
    center, context = np.asarray(batches["center"])[m], np.asarray(batches["context"])[m]
    return collections.Counter(zip(center.tolist(), context.tolist()))


@pytest.mark.parametrize("window,capacity", [(3, None), (2, 150)])
def test_skipgram_pairs_equal_brute_force_windows(window, capacity):
    corpus, keep, data = _toy()
    key = jax.random.key(5)
    cap = capacity or len(corpus.tokens)
    b = skipgram_batches(data, key, batch_size=16, window=window, capacity=cap, shuffle="streams")
    expected, kept = _brute_force_pairs(corpus, keep, key, window, cap)
    assert _pairs_of(b) == expected
    assert int(b["kept_tokens"].sum()) == kept and int(b["dropped_tokens"].sum()) == max(0, kept - cap)
    assert b["center"].shape == (text.num_pair_steps(cap, window, 16), 16)


def test_stream_layout_fills_steps_evenly_and_skips_the_tail():
    corpus, _, data = _toy()
    b = skipgram_batches(data, jax.random.key(1), batch_size=16, window=3, capacity=len(corpus.tokens),
                         shuffle="streams")
    counts = np.asarray(b["mask"]).sum(1)
    active = np.asarray(b["active"])
    P = counts.sum()
    S = -(-P // 16)
    assert active[:S].all() and not active[S:].any() and counts[S:].sum() == 0
    assert counts[:S].max() - counts[:S].min() <= 1
    progress = np.asarray(b["progress"])[:S]
    np.testing.assert_allclose(progress, np.arange(S) / S, atol=1e-6)
    # slot b of consecutive steps walks consecutive pairs: a batch spans the whole epoch
    centers = np.asarray(b["center"])
    assert len(set(centers[0][np.asarray(b["mask"])[0]])) > 8


def test_random_shuffle_is_the_same_draw_in_a_random_order():
    corpus, keep, data = _toy()
    key = jax.random.key(9)
    N = len(corpus.tokens)
    shuffled = draw_windows(data, key, window=3, capacity=N, shuffle="random")
    # Brute force: row r is kept token position[r] with radius 1 + bits[1, r] % window.
    k_bits, _ = jax.random.split(key)
    bits = np.asarray(hash_bits(k_bits, (2, N)))
    kept_mask = np.asarray(text.uniform_from_bits(jnp.asarray(bits[0]))) < keep[corpus.tokens]
    tokens, sentence = corpus.tokens[kept_mask], corpus.sentence[kept_mask]
    n = len(tokens)
    live = np.asarray(shuffled["live"])
    position = np.asarray(shuffled["position"])
    assert live.sum() == n and int(shuffled["kept"]) == n and sorted(position[live]) == list(range(n))
    assert not np.array_equal(position[live], np.arange(n))  # another order ...
    np.testing.assert_array_equal(np.asarray(shuffled["center"])[live], tokens[position[live]])  # ... same tokens
    expected = collections.Counter()
    for r in np.flatnonzero(live):
        i, radius = position[r], 1 + bits[1, r] % 3
        for d in range(1, radius + 1):
            for j in (i - d, i + d):
                if 0 <= j < n and sentence[j] == sentence[i]:
                    expected[(tokens[i], tokens[j])] += 1
    b = skipgram_batches(data, key, batch_size=16, window=3, capacity=N, shuffle="random")
    assert _pairs_of(b) == expected


def test_cbow_examples_hold_the_same_pairs_as_skipgram():
    corpus, _, data = _toy()
    key = jax.random.key(2)
    for shuffle in ("random",):
        sg = skipgram_batches(data, key, batch_size=16, window=3, capacity=len(corpus.tokens), shuffle=shuffle)
        cb = cbow_batches(data, key, batch_size=16, window=3, capacity=len(corpus.tokens), shuffle=shuffle)
        m, cm = np.asarray(cb["mask"]), np.asarray(cb["context_mask"])
        pairs = collections.Counter()
        for c, ctx, ok in zip(np.asarray(cb["center"])[m], np.asarray(cb["contexts"])[m], cm[m]):
            assert ok.any()
            pairs.update((int(c), int(t)) for t in ctx[ok])
        assert pairs == _pairs_of(sg)
        assert not cm[~m].any()


def test_subsampling_keeps_each_word_at_its_rate():
    corpus, keep, data = _toy(seed=4, vocab=8, sentences=400)
    draws = jax.jit(jax.vmap(lambda k: text.draw_windows(data, k, window=1, capacity=len(corpus.tokens))["center"]))(
        jax.random.split(jax.random.key(0), 100))
    draws = np.asarray(draws).ravel()
    counts = np.bincount(draws[draws > 0], minlength=len(keep))
    occurrences = np.bincount(corpus.tokens, minlength=len(keep)) * 100
    rate = counts[1:] / occurrences[1:]
    std = np.sqrt(keep[1:] * (1 - keep[1:]) / occurrences[1:])
    assert np.all(np.abs(rate - keep[1:]) < 5 * std + 1e-9)


def test_kept_capacity_bounds_the_kept_count():
    corpus, keep, _ = _toy(seed=6, sentences=400)
    p = keep[corpus.tokens].astype(np.float64)
    cap = text.kept_capacity(corpus, keep)
    assert p.sum() < cap <= len(corpus.tokens)
    assert cap >= p.sum() + 8 * np.sqrt((p * (1 - p)).sum())


def test_planted_clusters_are_deterministic_and_labelled():
    s1, clusters = text.planted_clusters(seed=0, num_sentences=300)
    s2, _ = text.planted_clusters(seed=0, num_sentences=300)
    assert s1 == s2 and len(s1) == 300 and len(clusters) == 400
    words = collections.Counter(w for s in s1 for w in s)
    stop = sum(c for w, c in words.items() if w.startswith("s"))
    assert 0.25 < stop / sum(words.values()) < 0.35  # stop_rate 0.3
    # most clustered tokens of a sentence share its topic
    topical = [collections.Counter(clusters[w] for w in s if w in clusters).most_common(1)[0][1] /
               sum(w in clusters for w in s) for s in s1 if any(w in clusters for w in s)]
    assert np.mean(topical) > 0.8
