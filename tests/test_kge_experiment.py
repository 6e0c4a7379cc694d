"""experiments/transe.py end to end on graphs the tests write, and its bad-input lines."""
import json

import numpy as np
import pytest

from jaxdl.cli import main as cli_main
from jaxdl.data import kg as kgdata

SUMMARY_KEYS = {"test_mrr", "test_mr", "test_hits@1", "test_hits@3", "test_hits@10", "epoch_seconds",
                "num_entities", "num_relations", "num_train", "num_valid", "num_test", "dropped_valid",
                "dropped_test"}


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_default_synthetic_graph_is_recovered(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["exp", "transe", "--out", str(out), "--no-progress"]) == 0
    s = _summary(out)
    assert SUMMARY_KEYS <= set(s) and s["finished"] is True
    assert s["test_mrr"] >= 0.9 and s["test_hits@10"] == 1.0  # documented: 1.0; random ~0.05
    assert s["epoch_seconds"] > 0 and s["best_epoch"] % 5 == 0
    entities = (out / "entities.tsv").read_text().splitlines()
    emb = np.load(out / "entity_embeddings.npy")
    assert emb.shape == (100, 50) and len(entities) == 100 and entities[0] == "0\te00_00"
    assert np.load(out / "relation_embeddings.npy").shape == (8, 50)
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert "valid_mrr" in records[4] and "valid_mrr" not in records[0]


def test_data_folder_counts_dropped_triples(tmp_path):
    g = kgdata.synthetic_kg(0, side=5)
    folder = kgdata.write_kg(tmp_path / "g", g)
    with open(folder / "test.txt", "a") as f:
        f.write("stranger\tmove+1+0\te00_00\ne00_00\tteleport\te01_01\n")
    out = tmp_path / "run"
    assert cli_main(["exp", "transe", "--data", str(folder), "--out", str(out), "--no-progress",
                     "--model", "rotate", "--batch-size", "32", "--max-epochs", "1", "--eval-every", "1",
                     "--dim", "4"]) == 0
    s = _summary(out)
    assert (s["num_entities"], s["num_relations"], s["num_test"], s["dropped_test"]) == \
           (25, 8, len(g.test), 2)
    assert np.load(out / "entity_embeddings.npy").shape == (25, 8)  # RotatE: 2 x dim reals


def test_learning_rate_falls_tenfold_at_the_decay_epoch():
    from jaxdl.cli import load_experiment
    from jaxdl.config import from_dict

    transe = load_experiment("transe")
    cfg = from_dict(transe.Config, {"lr": 0.01, "batch_size": 64, "lr_decay_epoch": 3})
    schedule = transe.learning_rate(cfg, num_train=130)  # 3 steps an epoch
    assert [float(schedule(step)) for step in (0, 8, 9, 30)] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert transe.learning_rate(from_dict(transe.Config, {"lr": 0.01}), num_train=130) == 0.01


def test_subsampling_weights_and_lr_decay_train_the_grid(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["exp", "transe", "--out", str(out), "--no-progress", "--subsampling-weight",
                     "--lr-decay-epoch", "20", "--max-epochs", "30", "--eval-every", "10"]) == 0
    assert _summary(out)["test_mrr"] >= 0.5  # random ~0.05


def test_negatives_shared_by_the_batch_train_the_grid(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["exp", "transe", "--out", str(out), "--no-progress", "--negatives", "batch",
                     "--filter-negatives", "--max-epochs", "30", "--eval-every", "10"]) == 0
    assert _summary(out)["test_mrr"] >= 0.5  # random ~0.05


@pytest.mark.parametrize("setup,flags,msg", [
    (None, ["--data", "/nonexistent/kg"], "--data /nonexistent/kg: no such directory"),
    ("bad_line", [], "train.txt:2: expected 3 tab-separated fields"),
    ("ok", ["--model", "rotate", "--norm", "2"], "--norm applies to TransE only"),
    ("ok", ["--batch-size", "5000"], "larger than the"),
    ("ok", ["--loss", "hinge"], "--loss: 'hinge' is not one of"),
    ("ok", ["--lr-decay-epoch", "3", "--optimizer", "sgd"], "--lr-decay-epoch needs an optax optimizer"),
])
def test_bad_input_is_one_line(tmp_path, capsys, setup, flags, msg):
    folder = tmp_path / "g"
    if setup is not None:
        kgdata.write_kg(folder, kgdata.synthetic_kg(0, side=4))
        if setup == "bad_line":
            lines = (folder / "train.txt").read_text().splitlines()
            lines[1] = "a\tb"
            (folder / "train.txt").write_text("\n".join(lines) + "\n")
        flags = ["--data", str(folder), *flags]
    code = cli_main(["exp", "transe", "--out", str(tmp_path / "run"), "--no-progress", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err
