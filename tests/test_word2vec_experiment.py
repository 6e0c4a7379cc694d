"""The word2vec experiment end to end, on corpora the tests write (never ../shared/)."""
import json
import zipfile

import numpy as np
import pytest

from jaxdl.cli import main as cli_main
from jaxdl.data import text
from jaxdl.eval import word_vectors as wv


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_default_recovers_the_planted_clusters(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["exp", "word2vec", "--out", str(out), "--no-progress"]) == 0
    s = _summary(out)
    # The target: each word's nearest neighbours in its cluster for >= 90% of words.
    assert s["cluster_recovery"]["recovered"] >= 0.9 and s["cluster_recovery"]["words"] == 400
    for key in ("train_tokens", "vocab_size", "words_per_second", "final_loss"):
        assert s[key] is not None and s[key] > 0, key
    assert s["vocab_size"] == 421 and s["words_with_vectors"] == 420 and s["epochs"] == 5
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert records[-1]["train_loss"] < records[0]["train_loss"] and all(r["train_dropped_tokens"] == 0 for r in records)
    # outputs: word2vec text (parsed by hand in test_word2vec_eval), .npy and vocab, all aligned
    words, vectors = wv.read_word2vec_text(out / "vectors.txt")
    np.testing.assert_array_equal(vectors, np.load(out / "vectors.npy"))
    vocab = [line.split() for line in (out / "vocab.txt").read_text().splitlines()]
    assert [w for w, _ in vocab] == words and "<unk>" not in words and len(words) == 420
    assert np.load(out / "context_vectors.npy").shape == (420, 100)
    assert (out / "curves.png").stat().st_size > 1000
    # the metric can fail: random vectors recover nothing
    _, clusters = text.planted_clusters(seed=0, num_sentences=10)
    assert wv.cluster_recovery(words, np.random.default_rng(0).normal(size=vectors.shape), clusters)["recovered"] < 0.05
    assert "planted clusters" in capsys.readouterr().out


def _write_corpus(tmp_path):
    sentences, clusters = text.planted_clusters(seed=1, num_sentences=800)
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("corpus/train.txt", text.sentences_to_text(sentences))
    (tmp_path / "sim.tsv").write_text("# word1\tword2\tscore\n" + "".join(
        f"c{c:02d}w00\tc{c2:02d}w01\t{10.0 if c == c2 else 1.0}\n" for c in range(6) for c2 in range(6))
        + "c00w00\tunseen\t5.0\n")
    (tmp_path / "analogies.txt").write_text(": planted\nc00w00 c00w01 c01w00 c01w01\nc02w00 c02w03 c03w00 c03w03\n"
                                            "c00w00 c00w01 c01w00 unseen\n")
    return archive


@pytest.mark.parametrize("model,shuffle", [("cbow", "random")])
def test_zip_corpus_with_evaluations_and_an_oov_query(tmp_path, capsys, model, shuffle):
    archive = _write_corpus(tmp_path)
    out = tmp_path / "run"
    code = cli_main(["exp", "word2vec", "--corpus", str(archive), "--corpus-member", "corpus/train.txt",
                     "--model", model, "--shuffle", shuffle, "--min-count", "2", "--sample", "1e-3", "--dim", "16",
                     "--max-epochs", "4", "--lr", "0.25", "--similarity", str(tmp_path / "sim.tsv"),
                     "--analogies", str(tmp_path / "analogies.txt"), "--query", "c00w00,zzz,qqq",
                     "--out", str(out), "--no-progress"])
    assert code == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert err == ["warning: not in the vocabulary, no neighbours shown: zzz, qqq"]
    s = _summary(out)
    assert s["model"] == model and s["train_tokens"] > 8000
    assert s["similarity"]["pairs"] == 37 and s["similarity"]["covered"] == 36 and s["similarity"]["spearman"] > 0.3
    assert s["analogies"]["questions"] == 3 and s["analogies"]["covered"] == 2
    assert list(s["neighbours"]) == ["c00w00"] and len(s["neighbours"]["c00w00"]) == 5
    words, vectors = wv.read_word2vec_text(out / "vectors.txt")
    assert vectors.shape == (len(words), 16)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("similarity_spearman" in r for r in records)


def _bad_corpora(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "rare.txt").write_text("a b c\nd e f\n")
    (tmp_path / "single.txt").write_text("a\na\nb\nb\n" * 10)
    (tmp_path / "ok.txt").write_text("a b a b c\n" * 20)
    with zipfile.ZipFile(tmp_path / "nomember.zip", "w") as z:
        z.writestr("ptb/ptb.valid.txt", "a b\n")
    (tmp_path / "badsim.tsv").write_text("a\tb\t1.0\na\tb\n")
    (tmp_path / "badq.txt").write_text("a b c d\na b\n")


@pytest.mark.parametrize("flags,msg", [
    (["--corpus", "{d}/empty.txt"], "corpus is empty (no tokens)"),
    (["--corpus", "{d}/rare.txt"], "no word occurs at least --min-count 10 times"),
    (["--corpus", "{d}/nomember.zip"], "has no member 'ptb/ptb.train.txt' (it has: ptb/ptb.valid.txt)"),
    (["--corpus", "{d}/missing.txt"], "no such corpus file"),
    (["--corpus", "{d}/single.txt", "--min-count", "1"], "no sentence has two in-vocabulary words"),
    (["--corpus", "{d}/ok.txt", "--min-count", "1", "--similarity", "{d}/badsim.tsv"], "badsim.tsv:2: expected"),
    (["--corpus", "{d}/ok.txt", "--min-count", "1", "--analogies", "{d}/badq.txt"], "badq.txt:2: expected 4 words"),
    (["--lr", "0.01", "--min-lr", "0.1"], "--min-lr 0.1: must not exceed --lr 0.01"),
    (["--model", "glove"], "--model: 'glove' is not one of skipgram, cbow"),
    (["--query", ","], "--query ','"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, flags, msg):
    _bad_corpora(tmp_path)
    argv = ["exp", "word2vec", *[f.format(d=tmp_path) for f in flags], "--out", str(tmp_path / "r"), "--no-progress"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_run_saved_before_the_negatives_option_resumes_with_its_own_draw(tmp_path):
    from jaxdl.cli import load_experiment
    from jaxdl.config import make_config

    Config = load_experiment("word2vec").Config
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"model": "cbow", "dim": 16}))
    cfg = make_config(Config, {"resume": str(old)})
    assert (cfg.negatives, cfg.cbow_update, cfg.dim) == ("pair", "gradient", 16)
    assert make_config(Config, {"resume": str(old), "negatives": "batch"}).negatives == "batch"  # a flag still wins
    new = tmp_path / "new"
    new.mkdir()
    (new / "config.json").write_text(json.dumps({"negatives": "batch", "cbow_update": "word2vec"}))
    cfg = make_config(Config, {"resume": str(new)})
    assert (cfg.negatives, cfg.cbow_update) == ("batch", "word2vec")
    assert make_config(Config, {}).negatives == "batch"  # a fresh run takes today's default
