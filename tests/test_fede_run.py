"""The fede experiment end to end (in-process, the synthetic default graph) and its bad input."""
import json

import pytest

from jaxdl.cli import main as cli_main
from jaxdl.data import federated as fd
from jaxdl.data.kg import load_kg, synthetic_kg, write_kg
from test_fede import tiny_kg

SMOKE = ["--no-progress", "--max-epochs", "2", "--eval-every", "1", "--dim", "8", "--batch-size", "64",
         "--local-epochs", "1", "--neg", "4"]


@pytest.fixture(scope="module")
def all_run(tmp_path_factory):
    """`--setting all` on a tiny graph read from --data (the default graph runs in the
    generic smoke tests); returns (graph folder, run folder, printed output)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("fede")
    graph = write_kg(tmp / "g", tiny_kg())
    out = tmp / "all"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli_main(["exp", "fede", "--data", str(graph), "--out", str(out), "--setting", "all", *SMOKE])
    assert code == 0
    return graph, out, printed.getvalue()


def test_setting_all_writes_table_plot_and_per_client_summaries(all_run):
    graph, out, printed = all_run
    assert "isolation < FedE <= collection" in printed and str(out) in printed.splitlines()[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["setting"] == "all"
    assert set(summary["test_mrr"]) == {"isolation", "collection", "fede", "fusion"}
    for setting in ("isolation", "collection", "fede"):
        per_client = summary["test_mrr_per_client"][setting]
        assert len(per_client) == 3 and all(0 < v <= 1 for v in per_client)
        sub = json.loads((out / setting / "summary.json").read_text())
        assert sub["setting"] == setting and sub["rounds"] == 2
        sizes = [c["num_test"] for c in sub["clients"]]
        weighted = sum(n * v for n, v in zip(sizes, per_client)) / sum(sizes)
        assert sub["test_mrr"] == pytest.approx(weighted, rel=1e-6)
        records = [json.loads(line) for line in (out / setting / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records] == [1, 2] and all("valid_mrr_client2" in r for r in records)
        assert (out / setting / "curves.png").stat().st_size > 1000
    split = fd.load_split(out / "split.npz", load_kg(graph))  # saved with the run, reloads
    assert split.num_clients == 3 and split.seed == 0 and summary["split"] == split.summary()
    # only the rows a client holds travel; the reference sends the whole table to every client
    held = sum(len(c.entities()) for c in split.clients)
    fede = summary["settings"]["fede"]
    assert fede["communication"]["floats_up_per_round"] == held * 8 <= 3 * 14 * 8
    assert fede["communication"]["reference_floats_per_round_each_way"] == 3 * 14 * 8
    table = json.loads((out / "comparison.json").read_text())
    assert set(table["rows"]) == {"isolation", "collection", "fede", "fusion"} and "ordering_holds" in table
    assert set(table["protocols"]) == {"standard", "reference"}
    for row in table["rows"].values():  # every row under both protocols
        assert 0 < row["test_mrr"] <= 1 and 0 < row["reference_test_mrr"] <= 1
    assert (out / "comparison.png").stat().st_size > 1000
    fused = json.loads((out / "fusion.json").read_text())
    assert len(fused["weights"]) == 3 and len(fused["bias"]) == 3
    assert "ref MRR" in printed and "fusion" in printed


def test_reference_split_exported_then_trained_on(tmp_path, capsys):
    """--export-split writes the reference code's pickle and stops; --split FILE.pkl trains
    on its clients and graph, here with every behaviour of the reference selected (and the
    negatives shared by each batch)."""
    pkl = tmp_path / "split.pkl"
    assert cli_main(["exp", "fede", "--export-split", str(pkl), "--clients", "3", "--out", str(tmp_path / "x")]) == 0
    assert pkl.is_file() and not (tmp_path / "x").exists()
    out = tmp_path / "run"
    code = cli_main(["exp", "fede", "--split", str(pkl), "--clients", "3", "--semantics", "reference",
                     "--negatives", "batch", "--out", str(out), *SMOKE])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["corrupt"] == "tail" and config["reset_optimizer"] and config["download"] == "all"
    assert config["patience"] == 15 and summary["validation_protocol"] == "reference"
    assert config["negatives"] == "batch"
    assert summary["num_entities"] == 100 and len(summary["clients"]) == 3
    assert summary["communication"]["floats_down_per_round"] == 3 * 100 * 8  # the whole table to everyone


@pytest.fixture(scope="module")
def other_split(tmp_path_factory):
    """A split of another graph, and a 2-client split of the default graph."""
    folder = tmp_path_factory.mktemp("splits")
    fd.save_split(folder / "other.npz", fd.split_by_relation(tiny_kg(), 3))
    fd.save_split(folder / "two.npz", fd.split_by_relation(synthetic_kg(seed=0), 2))
    (folder / "evil.pkl").write_bytes(b"cos\nsystem\n(S'touch " + str(folder / "ran").encode() + b"'\ntR.")
    return folder


@pytest.mark.parametrize("flags,msg", [
    (["--clients", "9"], "--clients 9: more clients than the graph's 8 relations"),
    (["--clients", "0"], "--clients: must be >= 1"),
    (["--fraction", "1.5"], "--fraction: must be <= 1"),
    (["--fraction", "0"], "--fraction: must be > 0"),
    (["--setting", "both"], "--setting: 'both' is not one of"),
    (["--valid-fraction", "0.6", "--test-fraction", "0.5"], "must leave a training part"),
    (["--split", "{dir}/other.npz"], "made for a graph of 14 entities"),
    (["--split", "{dir}/two.npz"], "holds 2 clients but --clients is 8"),
    (["--split", "{dir}/missing.npz"], "no such file"),
    (["--data", "{dir}/nowhere"], "no such directory"),
    (["--split", "{dir}/evil.pkl"], "refuses to load"),
    (["--split", "{dir}/x.pkl", "--data", "umls"], "carries its own graph"),
])
def test_bad_input_is_one_line(flags, msg, other_split, tmp_path, capsys):
    flags = [f.format(dir=other_split) for f in flags]
    code = cli_main(["exp", "fede", "--out", str(tmp_path / "r"), "--no-progress", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err


@pytest.mark.parametrize("schedule", ["sequential", "vmap"])
def test_client_axis_sharded_over_two_devices_matches_one(all_run, tmp_path, schedule):
    """--devices :2 (fake CPU devices, in a subprocess): the client axis is split over the
    devices (3 clients padded to 4), each device training its clients in turn (shard_map)
    or vmapped (the partitioned padded vmap); every round's metrics equal the one-device
    FedE run's (there: the clients in turn, as on any CPU)."""
    import os
    import subprocess
    import sys

    from conftest import REPO, xla_flags

    graph, out, _ = all_run
    env = {**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=2"), "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "jaxdl", "exp", "fede", "--devices", ":2", "--data", str(graph),
                           "--out", str(tmp_path / "d2"), "--schedule", schedule, *SMOKE], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    one, two = read(out / "fede" / "metrics.jsonl"), read(tmp_path / "d2" / "metrics.jsonl")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
