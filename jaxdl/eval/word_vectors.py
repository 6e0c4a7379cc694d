"""Word vectors: the word2vec text format, and how good the vectors are.

  * `write_word2vec_text` / `read_word2vec_text`: the format gensim's
    `KeyedVectors.load_word2vec_format(path)` loads -- a header "V D", then one line per
    word, "word x_1 ... x_D".
  * `nearest_neighbours`: the k words of highest cosine similarity to each query.
  * `read_similarity_pairs` + `similarity_spearman`: Spearman's rho between human
    judgements (WordSim-353, SimLex-999) and cosine similarity, over the pairs whose words
    are both in the vocabulary; the coverage says how many that is.
  * `read_analogies` + `analogy_accuracy`: 3CosAdd -- answer "a : b :: c : ?" with the
    word closest to b - a + c (unit vectors; a, b, c excluded), over covered questions.
  * `cluster_recovery`: for a corpus with planted clusters, the fraction of words whose
    nearest neighbours all lie in their own cluster.

Words are looked up as written, then lower-cased (the vocabularies here are lower case,
the evaluation files partly not). Every function takes `words` (row i of `vectors_VxD`
is words[i]), so it works the same on trained tables and on vectors read from a file.
"""
from __future__ import annotations

import math
import warnings
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxdl.errors import JaxdlError


# ---------------------------------------------------------------------------------------
# The word2vec text format
# ---------------------------------------------------------------------------------------
def write_word2vec_text(path, words, vectors_VxD) -> None:
    """Write `word2vec_text(words, vectors_VxD)` to `path` (through a temporary file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(word2vec_text(words, vectors_VxD), encoding="utf-8")
    tmp.replace(path)


def word2vec_text(words, vectors_VxD) -> str:
    """"V D" then "word x_1 ... x_D" per word (float32 printed to round-trip exactly)."""
    vectors = np.asarray(vectors_VxD, np.float32)
    if vectors.ndim != 2 or len(words) != len(vectors):
        raise ValueError(f"{len(words)} words for vectors of shape {vectors.shape}")
    bad = [w for w in words if not w or any(c.isspace() for c in w)]
    if bad:
        raise JaxdlError(f"cannot write word {bad[0]!r} in the word2vec text format (empty or contains whitespace)")
    lines = [f"{len(words)} {vectors.shape[1]}\n"]
    lines += [word + " " + " ".join(map(repr, row.tolist())) + "\n" for word, row in zip(words, vectors)]
    return "".join(lines)


def read_word2vec_text(path) -> tuple[list[str], np.ndarray]:
    """Read the word2vec text format: (words, vectors (V, D) float32)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise JaxdlError(f"{path}: cannot read word vectors ({e})") from None
    try:
        V, D = (int(x) for x in lines[0].split())
    except (IndexError, ValueError):
        raise JaxdlError(f"{path}:1: expected a header 'V D'") from None
    if len(lines) - 1 != V:
        raise JaxdlError(f"{path}: header says {V} words, file has {len(lines) - 1}")
    words, rows = [], np.empty((V, D), np.float32)
    for i, line in enumerate(lines[1:]):
        parts = line.rstrip().split(" ")
        if len(parts) != D + 1:
            raise JaxdlError(f"{path}:{i + 2}: expected a word and {D} numbers, got {len(parts) - 1} fields")
        words.append(parts[0])
        try:
            rows[i] = np.asarray(parts[1:], np.float32)
        except ValueError:
            raise JaxdlError(f"{path}:{i + 2}: not a number in {line[:60]!r}") from None
    return words, rows


# ---------------------------------------------------------------------------------------
# Look-ups and cosine similarity
# ---------------------------------------------------------------------------------------
def _index(words) -> dict[str, int]:
    return {w: i for i, w in enumerate(words)}


def _lookup(index: dict[str, int], word: str) -> int | None:
    i = index.get(word)
    return index.get(word.lower()) if i is None else i


def unit_rows(vectors_VxD) -> jax.Array:
    """Rows scaled to unit length (zero rows stay zero)."""
    X = jnp.asarray(vectors_VxD, jnp.float32)
    return X / jnp.maximum(jnp.linalg.norm(X, axis=1, keepdims=True), 1e-12)


@partial(jax.jit, static_argnames="k")
def _top_k_cosine(U_VxD, queries_QxD, exclude_QxE, *, k: int):
    scores = queries_QxD @ U_VxD.T
    rows = jnp.arange(scores.shape[0])[:, None]
    scores = scores.at[rows, exclude_QxE].set(-jnp.inf, mode="drop")
    return jax.lax.top_k(scores, k)


def nearest_neighbours(words, vectors_VxD, queries, *, k: int = 5) -> tuple[dict[str, list], list[str]]:
    """The k nearest words by cosine for each query word.

    Returns ({query: [(word, cosine), ...]}, queries not in the vocabulary).
    """
    index = _index(words)
    found = [(q, _lookup(index, q)) for q in queries]
    missing = [q for q, i in found if i is None]
    found = [(q, i) for q, i in found if i is not None]
    if not found:
        return {}, missing
    U = unit_rows(vectors_VxD)
    ids = jnp.asarray([i for _, i in found])
    k = min(k, len(words) - 1)
    values, idx = _top_k_cosine(U, U[ids], ids[:, None], k=k)
    out = {q: [(words[int(j)], float(v)) for v, j in zip(vs, js)]
           for (q, _), vs, js in zip(found, np.asarray(values), np.asarray(idx))}
    return out, missing


# ---------------------------------------------------------------------------------------
# Word similarity
# ---------------------------------------------------------------------------------------
def read_similarity_pairs(path) -> list[tuple[str, str, float]]:
    """Word pairs with a human score: WordSim-353 / SimLex-999 style files.

    Lines "word1 word2 score" separated by tabs (else whitespace); '#' lines are comments;
    a first line whose third field is not a number is a header (a column named like
    'SimLex999' is then used as the score). Raises JaxdlError naming a malformed line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise JaxdlError(f"{path}: cannot read similarity pairs ({e})") from None
    pairs, column, seen_data = [], 2, False
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if not seen_data and len(fields) >= 3 and not _is_number(fields[2]):
            named = [j for j, f in enumerate(fields) if "simlex" in f.lower() or f.lower() in ("score", "similarity")]
            column, seen_data = (named[0] if named else 2), True
            continue
        seen_data = True
        if len(fields) <= column or not fields[0] or not fields[1] or not _is_number(fields[column]):
            raise JaxdlError(f"{path}:{n}: expected 'word1<TAB>word2<TAB>score', got {line[:80]!r}")
        pairs.append((fields[0], fields[1], float(fields[column])))
    if not pairs:
        raise JaxdlError(f"{path}: no word pairs found")
    return pairs


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def spearman(x, y) -> float:
    """Spearman's rho (scipy.stats.spearmanr: tied values share their average rank); NaN if
    either side is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(np.asarray(x, np.float64), np.asarray(y, np.float64)).statistic)


def similarity_spearman(words, vectors_VxD, pairs) -> dict:
    """Spearman's rho between the pairs' scores and cosine similarity, over covered pairs.

    Returns {'spearman', 'pairs' (in the file), 'covered' (both words in the vocabulary),
    'coverage' (covered / pairs)}.
    """
    index = _index(words)
    ids = [(_lookup(index, a), _lookup(index, b), s) for a, b, s in pairs]
    ids = [(i, j, s) for i, j, s in ids if i is not None and j is not None]
    out = {"pairs": len(pairs), "covered": len(ids), "coverage": len(ids) / len(pairs)}
    if len(ids) < 2:
        return {**out, "spearman": float("nan")}
    U = np.asarray(unit_rows(vectors_VxD))
    a, b, human = (np.asarray(c) for c in zip(*ids))
    cosine = (U[a] * U[b]).sum(1)
    return {**out, "spearman": spearman(human, cosine)}


# ---------------------------------------------------------------------------------------
# Analogies
# ---------------------------------------------------------------------------------------
def read_analogies(path) -> list[tuple[str, str, str, str, str]]:
    """Analogy questions "a b c d" (a : b :: c : d) under ': section' headers (Google's
    questions-words.txt). Returns [(section, a, b, c, d)]; JaxdlError on a malformed line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise JaxdlError(f"{path}: cannot read analogies ({e})") from None
    section, questions = "", []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        fields = line.split()
        if len(fields) != 4:
            raise JaxdlError(f"{path}:{n}: expected 4 words 'a b c d', got {line[:80]!r}")
        questions.append((section, *fields))
    if not questions:
        raise JaxdlError(f"{path}: no analogy questions found")
    return questions


@jax.jit
def _cos_add_answers(U_VxD, abc_Qx3):
    target = U_VxD[abc_Qx3[:, 1]] - U_VxD[abc_Qx3[:, 0]] + U_VxD[abc_Qx3[:, 2]]
    scores = target @ U_VxD.T
    rows = jnp.arange(scores.shape[0])[:, None]
    scores = scores.at[rows, abc_Qx3].set(-jnp.inf)
    return jnp.argmax(scores, axis=1)


def analogy_accuracy(words, vectors_VxD, questions, *, chunk: int = 2048) -> dict:
    """3CosAdd accuracy over the questions whose four words are in the vocabulary.

    Returns {'accuracy', 'questions', 'covered', 'coverage', 'correct', 'sections':
    {section: accuracy over its covered questions}}.
    """
    index = _index(words)
    rows, sections = [], []
    for section, *abcd in questions:
        ids = [_lookup(index, w) for w in abcd]
        if None not in ids:
            rows.append(ids)
            sections.append(section)
    out = {"questions": len(questions), "covered": len(rows), "coverage": len(rows) / len(questions)}
    if not rows:
        return {**out, "accuracy": float("nan"), "correct": 0, "sections": {}}
    U = unit_rows(vectors_VxD)
    q = np.asarray(rows, np.int32)
    answers = np.concatenate([np.asarray(_cos_add_answers(U, jnp.asarray(_pad_rows(q[i:i + chunk, :3], chunk))))
                              [:len(q[i:i + chunk])] for i in range(0, len(q), chunk)])
    right = answers == q[:, 3]
    by_section: dict[str, list[bool]] = {}
    for s, r in zip(sections, right):
        by_section.setdefault(s, []).append(bool(r))
    return {**out, "accuracy": float(right.mean()), "correct": int(right.sum()),
            "sections": {s: float(np.mean(v)) for s, v in by_section.items()}}


def _pad_rows(x, size: int):
    """Pad a chunk to a fixed number of rows (one compiled shape for every chunk)."""
    return np.concatenate([x, np.repeat(x[:1], size - len(x), 0)]) if len(x) < size else x


# ---------------------------------------------------------------------------------------
# Planted clusters
# ---------------------------------------------------------------------------------------
def cluster_recovery(words, vectors_VxD, cluster_of: dict[str, int], *, k: int = 5) -> dict:
    """How well vectors recover planted clusters, over the clustered words in the vocabulary.

    For each such word, its k nearest neighbours among all words (itself excluded).
    Returns {'recovered': fraction of words whose k neighbours are all in its cluster,
    'precision': mean fraction of the k neighbours in its cluster, 'words': how many, 'k'}.
    """
    index = _index(words)
    ids = [(index[w], c) for w, c in cluster_of.items() if w in index]
    if not ids:
        raise JaxdlError("no clustered word is in the vocabulary")
    cluster_by_row = np.full(len(words), -1)
    for i, c in ids:
        cluster_by_row[i] = c
    rows = np.asarray([i for i, _ in ids])
    U = unit_rows(vectors_VxD)
    _, nn = _top_k_cosine(U, U[rows], jnp.asarray(rows)[:, None], k=min(k, len(words) - 1))
    same = cluster_by_row[np.asarray(nn)] == cluster_by_row[rows][:, None]
    return {"recovered": float(same.all(1).mean()), "precision": float(same.mean()), "words": len(ids), "k": k}
