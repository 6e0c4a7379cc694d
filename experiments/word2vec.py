"""word2vec with negative sampling (D2L 15.1-15.4, 15.7): skip-gram or CBOW.

    make exp NAME=word2vec                                   # embedded synthetic corpus, offline
    make exp NAME=word2vec ARGS="--corpus ptb"               # the book's PTB (cache, else download)
    make exp NAME=word2vec ARGS="--corpus ptb.zip --similarity wordsim353.tsv --analogies questions-words.txt"
    make exp NAME=word2vec ARGS="--corpus my_text.txt --model cbow --query king,queen"

Data: by default the planted-cluster corpus (`jaxdl.data.text.planted_clusters`: 20 topics
of 20 words, 20 shared Zipfian stop words, 6,000 sentences, 66,000 tokens), whose clusters
the vectors should recover. `--corpus ptb` reads `ptb/ptb.train.txt` from the book's
archive (887,521 tokens), `--corpus PATH` a text file (one sentence per line) or a zip.

Defaults are word2vec's and the book's: skip-gram, dim 100, window 5 (each centre draws
its radius from 1..5), K = 5 negatives from count^0.75, min-count 10, subsampling
t = 1e-4 with the book's keep probability min(1, sqrt(t/f)) (`--subsample word2vec` for
word2vec.c's), batches of 1,024 pairs, 5 epochs (20 with `--corpus ptb`, see below).
Training is plain SGD on the rows a batch touches (`jaxdl.train.sparse`; `make bench`
compares it with a dense optax.sgd step, workloads w2v_update_*), with word2vec.c's/gensim's
learning rate: 0.025 per pair (0.05 for CBOW), decaying linearly to 0.0001 over the run --
a per-pair rate, so the batch size does not change it. One departure, for speed: a
skip-gram batch draws its K noise words once and every pair scores against them
(`--negatives pair` draws them per pair, as word2vec.c and the book do, and as CBOW does
by default). Each example still sees K
independent noise words; the step gathers and scatters B + K rows of W_out instead of
B (1 + K). README: on PTB this is about twice as fast per epoch, at the same or a higher
WordSim-353 rho. It runs on one device: the row-sparse step is not data-parallel.

Expect (README: real runs): on the default corpus every clustered word has its nearest
neighbours in its own cluster (`cluster_recovery.recovered`, target >= 0.9); on PTB with
`--similarity wordsim353.tsv` a WordSim-353 Spearman rho near gensim's at the same settings
after 20 epochs (SGD at word2vec's learning rate needs more passes than the book's Adam --
hence 20 epochs for PTB).

Writes to the run folder: vectors.txt (word2vec text format: gensim's
`KeyedVectors.load_word2vec_format` loads it), vectors.npy (V-1, D) and vocab.txt
("word count", same row order; `<unk>` has no vector), context_vectors.npy, and
summary.json with train_tokens, vocab_size, words_per_second, final_loss and the
evaluations.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import harness
from jaxdl.config import DataOptions, TrainConfig, defaults, doc
from jaxdl.data import text
from jaxdl.errors import JaxdlError
from jaxdl.eval import word_vectors as wv
from jaxdl.losses import word2vec as w2v_losses
from jaxdl.models import word2vec as w2v
from jaxdl.train.epoch import make_scan_epoch
from jaxdl.train.sparse import linear_decay_by_progress, make_row_sparse_sgd_step, skip_inactive
from jaxdl.train.step import TrainState

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "2", "--dim", "16", "--synthetic-sentences", "600"]

# SGD at word2vec's per-example rate needs more passes over PTB than the book's Adam: 20.
PTB = {"query": "chip,baby,beautiful", "max_epochs": 20}
# With a few hundred word types every word of the synthetic corpus is "frequent": t = 1e-4
# would drop most of its tokens; word2vec.c's and gensim's default t = 1e-3 keeps about half.
SYNTHETIC = {"sample": 1e-3}
# word2vec.c's CBOW learning rate. CBOW draws its negatives per example: its step is dominated
# by the 2 * window context rows, so sharing the negatives saves little there (README: 1.09x
# per PTB epoch, the same rho).
CBOW = {"lr": 0.05, "negatives": "pair"}


@defaults(max_epochs=(5, "the book; --corpus ptb: 20"),
          lr=(0.025, "word2vec/gensim, per example; CBOW: 0.05"), batch_size=1024, ckpt_every=5)
class Config(DataOptions, TrainConfig):
    """word2vec: skip-gram or CBOW with negative sampling. --batch-size counts examples (pairs
    for skip-gram) per step; the learning rate is per example, so the batch does not change it."""

    corpus: str = field(default="synthetic", metadata=doc(
        "'synthetic' (embedded planted clusters), 'ptb' (the book's archive from --data-dir or the cache; "
        "downloaded with its SHA-1 when missing), or a path to a text file or zip"))
    corpus_member: str = field(default="", metadata=doc("member of a zip corpus (default ptb/ptb.train.txt)"))
    synthetic_sentences: int = field(default=6000, metadata=doc("sentences in the synthetic corpus, at most 10^7", gt=0,
                                                                   le=10_000_000))
    model: Literal["skipgram", "cbow"] = field(default="skipgram", metadata=doc("architecture"))
    dim: int = field(default=100, metadata=doc("vector size (the book: 100), at most 2^20", gt=0, le=1 << 20))
    window: int = field(default=5, metadata=doc("largest window radius; each centre draws 1..window (the book: 5), "
                                                "at most 1000", gt=0, le=1000))
    neg: int = field(default=5, metadata=doc("negatives per positive, K (the book: 5), at most 65536", gt=0,
                                             le=65536))
    negatives: str = field(default="batch", metadata=doc(
        "how the K noise words are drawn: 'batch' (one draw per batch, shared by all its examples: "
        "the negatives are scored with one matrix product) or 'pair' (a draw per example, as in "
        "word2vec.c and the book; the CBOW default)", choices=("batch", "pair")))
    cbow_update: str = field(default="word2vec", metadata=doc(
        "CBOW's update of the context vectors: 'word2vec' (each gets the whole gradient of their mean h, "
        "as word2vec.c and gensim do) or 'gradient' (each gets its true gradient, 1/n of it)",
        choices=("word2vec", "gradient")))
    noise_power: float = field(default=0.75, metadata=doc("noise distribution ~ count^power (word2vec: 0.75)", ge=0))
    min_count: int = field(default=10, metadata=doc("drop words seen fewer times (the book: 10)", gt=0))
    sample: float = field(default=1e-4, metadata=doc("subsampling threshold t; 0 keeps every word (the book: 1e-4)",
                                                     ge=0))
    subsample: str = field(default="book", metadata=doc(
        "keep probability: 'book' min(1, sqrt(t/f)) or 'word2vec' (word2vec.c/gensim) sqrt(t/f) + t/f",
        choices=text.SUBSAMPLE_FORMULAS))
    min_lr: float = field(default=0.0001, metadata=doc("final learning rate after linear decay (gensim: 0.0001)",
                                                       ge=0))
    shuffle: str = field(default="streams", metadata=doc(
        "example order: 'streams' (each batch slot walks its own 1/B of the corpus) or 'random' "
        "(a fresh permutation of the centres)", choices=text.SHUFFLES))
    query: str = field(default="", metadata=doc(
        "comma-separated words to show nearest neighbours for (default: a few words of the corpus)"))
    top_k: int = field(default=5, metadata=doc("neighbours per query word", gt=0))
    similarity: str = field(default="", metadata=doc("word-pair similarity file (WordSim-353, SimLex-999) for rho"))
    analogies: str = field(default="", metadata=doc("analogy questions file (questions-words.txt) for 3CosAdd"))

    PRESETS: ClassVar = {"corpus": {"ptb": PTB, "synthetic": SYNTHETIC}, "model": {"cbow": CBOW}}
    # A run saved before these options existed drew its negatives per example and gave CBOW's
    # contexts their true gradient: --resume keeps that.
    RESUME_DEFAULTS: ClassVar = {"negatives": "pair", "cbow_update": "gradient"}

    def validate(self) -> None:
        if self.min_lr > self.lr:
            raise JaxdlError(f"--min-lr {self.min_lr}: must not exceed --lr {self.lr}")
        self.queries()

    def queries(self) -> list[str]:
        words = [q.strip() for q in self.query.split(",") if q.strip()]
        if self.query.strip() and not words:
            raise JaxdlError(f"--query {self.query!r}: expected words like chip,baby")
        return words


def load_sentences(cfg: Config) -> tuple[list[list[str]], dict[str, int] | None]:
    """The corpus's sentences, and the planted clusters for the synthetic one."""
    if cfg.corpus == "synthetic":
        return text.planted_clusters(seed=0, num_sentences=cfg.synthetic_sentences)
    if cfg.corpus == "ptb":
        return text.read_corpus(text.ptb_zip(cfg.data_dir or None), member=cfg.corpus_member or None), None
    return text.read_corpus(cfg.corpus, member=cfg.corpus_member or None), None


def summarize_epoch(metrics_S: dict) -> dict:
    """Per-step metrics (host arrays) -> the epoch's, as shape-(1,) arrays for `fit`: mean
    loss per example over the real examples (skipped steps carry zeros), and the epoch's
    counts. On the host: a few thousand numbers, not worth a compiled program."""
    examples = np.sum(metrics_S["examples"])
    loss = np.sum(metrics_S["loss"], dtype=np.float32) / np.float32(max(examples, 1))
    return {"loss": np.asarray([loss], np.float32), "examples": np.asarray([examples]),
            "kept_tokens": np.asarray([np.sum(metrics_S["kept_tokens"])]),
            "dropped_tokens": np.asarray([np.sum(metrics_S["dropped_tokens"])]),
            "finite": np.asarray([np.all(metrics_S["finite"])])}


def with_epoch_stats(train_step):
    """Pass the batch's epoch counts (kept/dropped tokens) through to the step's metrics."""

    def step(state, batch, key):
        state, metrics = train_step(state, batch, key)
        return state, {**metrics, "kept_tokens": batch["kept_tokens"], "dropped_tokens": batch["dropped_tokens"]}

    return step


@dataclass
class Word2Vec:
    """Everything a run trains from: corpus statistics, the step and its batches, fresh params."""

    vocab: text.Vocab
    corpus: text.Corpus
    steps_per_epoch: int
    capacity: int
    epoch_fn: object  # (state, key) -> (state, epoch metrics): the jitted epoch on the default device
    init_params: object  # key -> params
    train_step: object  # the row-sparse SGD step (state, batch, key) -> (state, metrics)
    make_batches: object  # (data, key) -> the epoch's batches
    data: dict  # the encoded corpus and keep probabilities, on the default device


def build(cfg: Config, sentences) -> Word2Vec:
    """Vocabulary, device data and the jitted epoch for `cfg` (shared with the benchmark)."""
    vocab = text.build_vocab(sentences, min_count=cfg.min_count)
    corpus = text.encode(sentences, vocab)
    if not np.any(corpus.sentence[1:] == corpus.sentence[:-1]):
        raise JaxdlError("no sentence has two in-vocabulary words, so there is no (centre, context) pair; "
                         "lower --min-count or use a larger corpus")
    keep = text.keep_probabilities(vocab.counts, cfg.sample, formula=cfg.subsample)
    capacity = text.kept_capacity(corpus, keep)
    if cfg.batch_size > len(corpus.tokens):
        raise JaxdlError(f"--batch-size {cfg.batch_size}: larger than the corpus's {len(corpus.tokens)} "
                         "in-vocabulary words")
    noise = jnp.asarray(text.packed_alias_table(text.noise_distribution(vocab.counts, cfg.noise_power)))
    if cfg.model == "skipgram":
        batches = text.skipgram_batches
        objective = w2v_losses.skipgram_objective(noise=noise, num_negatives=cfg.neg, shared=cfg.negatives == "batch")
        S = text.num_pair_steps(capacity, cfg.window, cfg.batch_size)
    else:
        batches = text.cbow_batches
        objective = w2v_losses.cbow_objective(noise=noise, num_negatives=cfg.neg, shared=cfg.negatives == "batch",
                                              word2vec_update=cfg.cbow_update == "word2vec")
        S = text.num_center_steps(capacity, cfg.batch_size)
    make_batches = partial(batches, batch_size=cfg.batch_size, window=cfg.window, capacity=capacity,
                           shuffle=cfg.shuffle)
    lr_fn = linear_decay_by_progress(cfg.lr, min_lr=cfg.min_lr, steps_per_epoch=S, epochs=cfg.max_epochs)
    step = with_epoch_stats(skip_inactive(make_row_sparse_sgd_step(objective, lr_fn, check_grads=False)))
    run_epoch = make_scan_epoch(step, make_batches)
    data = text.device_corpus(corpus, keep)
    def epoch_fn(state, key):
        state, metrics = run_epoch(state, data, key)
        return state, summarize_epoch(jax.device_get(metrics))

    return Word2Vec(vocab, corpus, S, capacity, epoch_fn, lambda key: w2v.init(key, len(vocab), cfg.dim), step,
                    make_batches, data)


def default_queries(vocab: text.Vocab, cluster_of) -> list[str]:
    if cluster_of is not None:
        return [w for w in ("c00w00", "c01w00", "c02w00") if w in vocab]
    return list(vocab.words[1:4])


def evaluate_vectors(cfg: Config, words, vectors, *, cluster_of, similarity_pairs, analogies) -> dict:
    """The evaluations this run asked for, on the centre vectors."""
    out = {}
    if cluster_of is not None:
        out["cluster_recovery"] = wv.cluster_recovery(words, vectors, cluster_of, k=cfg.top_k)
    if similarity_pairs is not None:
        out["similarity"] = wv.similarity_spearman(words, vectors, similarity_pairs)
    if analogies is not None:
        out["analogies"] = wv.analogy_accuracy(words, vectors, analogies)
    return out


def task(cfg: Config, sentences, cluster_of, similarity_pairs, analogies) -> harness.Task:
    """Train on one device (the row-sparse step is not data-parallel); evaluate the centre
    vectors on the planted clusters or the similarity pairs after each epoch."""
    model = build(cfg, sentences)
    vocab = model.vocab
    words = list(vocab.words[1:])  # row i of the saved vectors is words[i]; <unk> has none
    queries = cfg.queries() or default_queries(vocab, cluster_of)
    missing = [q for q in queries if q not in vocab and q.lower() not in vocab]
    if missing:
        print(f"warning: not in the vocabulary, no neighbours shown: {', '.join(missing)}", file=sys.stderr)

    def evaluate(params) -> dict:
        found = evaluate_vectors(cfg, words, np.asarray(params["W_in"])[1:], cluster_of=cluster_of,
                                 similarity_pairs=similarity_pairs, analogies=None)
        flat = {}
        if "cluster_recovery" in found:
            flat["cluster_recovered"] = found["cluster_recovery"]["recovered"]
        if "similarity" in found:
            flat["similarity_spearman"] = found["similarity"]["spearman"]
        return flat

    def report(run, result: harness.Result) -> dict:
        evaluations = evaluate_vectors(cfg, words, np.asarray(result.params["W_in"])[1:], cluster_of=cluster_of,
                                       similarity_pairs=similarity_pairs, analogies=analogies)
        summary = write_outputs(run, cfg, vocab, model.corpus, result.params, result, evaluations, queries, model)
        print_report(summary)
        return summary

    def make_state():  # made by the harness once its size is known to fit
        return TrainState(model.init_params(jax.random.fold_in(jax.random.key(cfg.seed), 0)), optax.EmptyState(),
                          jnp.zeros((), jnp.int32))

    return harness.Task(state=make_state, train_step=model.train_step,
                        epoch=harness.Batches(model.data, model.make_batches),
                        summarize=summarize_epoch, report=report, title=f"word2vec {cfg.model} on {cfg.corpus}",
                        evaluate=evaluate if (cluster_of is not None or similarity_pairs is not None) else None)


def write_outputs(run, cfg: Config, vocab, corpus, params, result: harness.Result, evaluations: dict, queries,
                  model: Word2Vec) -> dict:
    words = list(vocab.words[1:])
    vectors = np.asarray(params["W_in"])[1:]
    neighbours, _ = wv.nearest_neighbours(words, vectors, queries, k=cfg.top_k)
    trained = len(result.epoch_seconds)  # epochs run by this process (fewer after --resume)
    train_seconds = float(sum(result.epoch_seconds))
    last = result.records[-1] if result.records else {}
    summary = {
        "model": cfg.model, "corpus": cfg.corpus,
        "train_tokens": corpus.raw_tokens, "in_vocabulary_tokens": int(len(corpus.tokens)),
        "vocab_size": len(vocab), "words_with_vectors": len(words), "unk_tokens": int(vocab.counts[0]),
        "kept_tokens_last_epoch": last.get("train_kept_tokens"), "examples_last_epoch": last.get("train_examples"),
        "steps_per_epoch": model.steps_per_epoch, "kept_capacity": model.capacity,
        "words_per_second": corpus.raw_tokens * trained / train_seconds if train_seconds else None,
        "examples_per_second": (sum(r.get("train_examples", 0) for r in result.records[-trained:]) / train_seconds
                                if train_seconds and trained else None),
        "train_seconds": train_seconds,
        "median_epoch_seconds": float(np.median(result.epoch_seconds)) if result.epoch_seconds else None,
        "wall_seconds": result.train_seconds, "final_loss": last.get("train_loss"),
        "neighbours": {q: [[w, round(c, 4)] for w, c in nn] for q, nn in neighbours.items()},
        **evaluations,
    }
    if run.is_writer:
        run.write_text("vectors.txt", wv.word2vec_text(words, vectors))
        run.save_array("vectors.npy", vectors)
        run.save_array("context_vectors.npy", np.asarray(params["W_out"])[1:])
        run.write_text("vocab.txt", "".join(f"{w} {c}\n" for w, c in zip(words, vocab.counts[1:].tolist())))
    return summary


def print_report(summary: dict) -> None:
    print(f"{summary['train_tokens']:,} tokens, vocabulary {summary['vocab_size']:,}; "
          f"final loss {summary['final_loss']:.4f}; {summary['words_per_second']:,.0f} words/s")
    for q, nn in summary["neighbours"].items():
        print(f"  {q}: " + ", ".join(f"{w} ({c:.3f})" for w, c in nn))
    if "cluster_recovery" in summary:
        c = summary["cluster_recovery"]
        print(f"planted clusters: {c['recovered']:.3f} of {c['words']} words have all {c['k']} nearest "
              f"neighbours in their cluster (precision@{c['k']} {c['precision']:.3f})")
    if "similarity" in summary:
        s = summary["similarity"]
        print(f"similarity: Spearman rho {s['spearman']:.3f} on {s['covered']} of {s['pairs']} pairs")
    if "analogies" in summary:
        a = summary["analogies"]
        print(f"analogies (3CosAdd): accuracy {a['accuracy']:.3f} on {a['covered']} of {a['questions']} questions")


def main(cfg: Config):
    # Read every input first, so bad input fails before anything trains.
    sentences, cluster_of = load_sentences(cfg)
    similarity_pairs = wv.read_similarity_pairs(cfg.similarity) if cfg.similarity else None
    analogies = wv.read_analogies(cfg.analogies) if cfg.analogies else None
    return harness.run(cfg, "word2vec", lambda: task(cfg, sentences, cluster_of, similarity_pairs, analogies))
