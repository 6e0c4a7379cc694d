"""Word-vector I/O and evaluation against brute force and scipy."""
import numpy as np
import pytest
from scipy import stats

from jaxdl.errors import JaxdlError
from jaxdl.eval import word_vectors as wv


def test_word2vec_text_format_round_trips_and_parses_by_hand(tmp_path):
    words = ["the", "cat", "naïve", "a.b"]
    vectors = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    vectors[0, 0] = 1e-30  # tiny and exact values survive
    path = tmp_path / "v.txt"
    wv.write_word2vec_text(path, words, vectors)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "4 3" and len(lines) == 5
    for line, word, row in zip(lines[1:], words, vectors):
        fields = line.split(" ")
        assert fields[0] == word and len(fields) == 4
        np.testing.assert_array_equal(np.asarray(fields[1:], np.float32), row)
    got_words, got = wv.read_word2vec_text(path)
    assert got_words == words and got.dtype == np.float32
    np.testing.assert_array_equal(got, vectors)


def test_word2vec_text_rejects_words_with_spaces(tmp_path):
    with pytest.raises(JaxdlError, match="whitespace"):
        wv.write_word2vec_text(tmp_path / "v.txt", ["new york"], np.zeros((1, 2)))


@pytest.mark.parametrize("content,msg", [("2 3\na 1 2 3\n", "header says 2 words"), ("x\n", "header 'V D'"),
                                         ("1 2\na 1 zz\n", "not a number"), ("1 2\na 1\n", "expected a word and 2")])
def test_read_word2vec_text_bad_files(tmp_path, content, msg):
    (tmp_path / "v.txt").write_text(content)
    with pytest.raises(JaxdlError, match=msg):
        wv.read_word2vec_text(tmp_path / "v.txt")


def test_nearest_neighbours_equal_brute_force_cosine():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 5))
    words = [f"w{i}" for i in range(30)]
    got, missing = wv.nearest_neighbours(words, X, ["w3", "W7", "nope"], k=4)
    assert missing == ["nope"] and set(got) == {"w3", "W7"}  # lookups fall back to lower case
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    for q, i in (("w3", 3), ("W7", 7)):
        cos = U @ U[i]
        cos[i] = -np.inf
        order = np.argsort(-cos)[:4]
        assert [w for w, _ in got[q]] == [words[j] for j in order]
        np.testing.assert_allclose([c for _, c in got[q]], cos[order], rtol=1e-5)


def test_read_similarity_pairs_wordsim_and_simlex_formats(tmp_path):
    ws = tmp_path / "ws.tsv"
    ws.write_text("# WordSim\n# Word 1\tWord 2\tHuman (mean)\nlove\tsex\t6.77\ntiger\tcat\t7.35\n\n")
    assert wv.read_similarity_pairs(ws) == [("love", "sex", 6.77), ("tiger", "cat", 7.35)]
    sl = tmp_path / "simlex.txt"
    sl.write_text("word1\tword2\tPOS\tSimLex999\tconc(w1)\nold\tnew\tA\t1.58\t2.72\nsmart\tintelligent\tA\t9.2\t1.75\n")
    assert wv.read_similarity_pairs(sl) == [("old", "new", 1.58), ("smart", "intelligent", 9.2)]


@pytest.mark.parametrize("content,msg", [("a\tb\t1\nc\td\n", r":2: expected"), ("a\tb\t1\nc\td\tx\n", r":2: expected"),
                                         ("# only comments\n", "no word pairs")])
def test_malformed_similarity_file_is_one_line_error(tmp_path, content, msg):
    p = tmp_path / "s.tsv"
    p.write_text(content)
    with pytest.raises(JaxdlError, match=msg) as e:
        wv.read_similarity_pairs(p)
    assert "\n" not in str(e.value)


def test_spearman_against_its_closed_form_and_tied_ranks():
    rng = np.random.default_rng(2)
    x, y = rng.permutation(30).astype(float), rng.permutation(30).astype(float)  # no ties
    d = x - y  # the values are their own ranks - 1
    assert wv.spearman(x, y) == pytest.approx(1 - 6 * (d * d).sum() / (30 * (30 ** 2 - 1)), abs=1e-12)
    # ties share their average rank: [3, 1, 3, 2] -> ranks [3.5, 1, 3.5, 2], Pearson of the ranks
    rx, ry = np.array([3.5, 1, 3.5, 2]), np.array([1.0, 2, 3, 4])
    assert wv.spearman([3, 1, 3, 2], [1, 2, 3, 4]) == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-12)
    assert np.isnan(wv.spearman([1, 1, 1], [1, 2, 3]))


def test_similarity_spearman_reports_coverage():
    words = ["a", "b", "c", "d"]
    X = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0.1]])
    pairs = [("a", "b", 9.0), ("a", "c", 5.0), ("a", "d", 1.0), ("a", "zzz", 3.0)]
    out = wv.similarity_spearman(words, X, pairs)
    assert out["covered"] == 3 and out["pairs"] == 4 and out["coverage"] == 0.75
    assert out["spearman"] == pytest.approx(1.0)  # cosine order a-b > a-c > a-d matches the scores


def test_analogy_3cosadd_on_planted_offsets(tmp_path):
    rng = np.random.default_rng(3)
    base = {w: rng.normal(size=8) for w in ("man", "king", "paris", "rome", "x1", "x2")}
    gender = rng.normal(size=8)
    vec = {**base, "woman": base["man"] + gender, "queen": base["king"] + gender,
           "france": base["paris"] + 2 * gender, "italy": base["rome"] + 2 * gender}
    words = list(vec)
    X = np.stack([vec[w] for w in words])
    p = tmp_path / "q.txt"
    p.write_text(": gender\nman woman king queen\nking queen man woman\n: capital\nparis france rome italy\n"
                 "man woman paris unknownword\n")
    questions = wv.read_analogies(p)
    assert questions[0] == ("gender", "man", "woman", "king", "queen") and len(questions) == 4
    out = wv.analogy_accuracy(words, X, questions)
    assert out["covered"] == 3 and out["questions"] == 4 and out["coverage"] == 0.75
    # 3CosAdd on unit vectors, brute force
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    idx = {w: i for i, w in enumerate(words)}
    right = 0
    for _, a, b, c, d in questions[:3]:
        s = U @ (U[idx[b]] - U[idx[a]] + U[idx[c]])
        s[[idx[a], idx[b], idx[c]]] = -np.inf
        right += words[int(np.argmax(s))] == d
    assert out["correct"] == right and out["accuracy"] == pytest.approx(right / 3)
    assert right >= 2 and set(out["sections"]) == {"gender", "capital"}


def test_malformed_analogies_file_is_one_line_error(tmp_path):
    p = tmp_path / "q.txt"
    p.write_text(": s\na b c d\na b c\n")
    with pytest.raises(JaxdlError, match=r"q.txt:3: expected 4 words"):
        wv.read_analogies(p)


def test_cluster_recovery_perfect_and_random():
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(4, 16)) * 5
    words = [f"c{c}w{w}" for c in range(4) for w in range(6)] + ["stop"]
    clusters = {w: int(w[1]) for w in words[:-1]}
    X = np.concatenate([centers[c] + 0.1 * rng.normal(size=(6, 16)) for c in range(4)] + [rng.normal(size=(1, 16))])
    good = wv.cluster_recovery(words, X, clusters, k=5)
    assert good == {"recovered": 1.0, "precision": 1.0, "words": 24, "k": 5}
    bad = wv.cluster_recovery(words, rng.normal(size=X.shape), clusters, k=5)
    assert bad["recovered"] < 0.2 and bad["precision"] < 0.5
