"""Hostile input: every malformed thing a user can hand jaxdl ends in one `error: ...` line on
stderr and a non-zero exit -- never a traceback, a hang, or a half-made run folder that
claims to be finished. Plus property tests (hypothesis) of the two parsers users feed: the
IDX reader and the config/flag parser.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import REPO
from jaxdl.cli import main as cli_main
from jaxdl.config import TrainConfig, doc, parse_config
from jaxdl.data.idx import parse_idx, read_idx, write_idx
from jaxdl.errors import JaxdlError

FMNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def _registry(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))


def _fails_cleanly(capsys, argv, *expected, code=2, out=None, notices=False):
    """Run the CLI in-process; it must return `code` and print one `error:` line containing `expected`
    (after `notice:` lines, where the run got as far as starting)."""
    rc = cli_main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not (notices and line.startswith("notice: "))]
    assert rc == code and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    if out is not None:  # nothing passed off as a finished run
        summary = out / "summary.json"
        assert not summary.exists() or json.loads(summary.read_text()).get("finished") is not True
    return lines[0]


# ---- data files --------------------------------------------------------------------------------

def _fashion_dir(tmp_path):
    folder = tmp_path / "fmnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 40), ("t10k", 20)):
        write_idx(folder / f"{name}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{name}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def _raw_idx(array: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.float32): 0x0D, np.dtype(np.int32): 0x0C}[array.dtype]
    dtype = {0x08: ">u1", 0x0D: ">f4", 0x0C: ">i4"}[code]
    return (b"\x00\x00" + bytes([code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(dtype).tobytes())


HOSTILE_FILES = {
    "truncated": ("train-images-idx3-ubyte", lambda raw: raw[: len(raw) // 2], "truncated"),
    "trailing bytes": ("train-images-idx3-ubyte", lambda raw: raw + b"\x00" * 7, "trailing bytes"),
    "wrong magic": ("train-labels-idx1-ubyte", lambda raw: b"\x01\x02" + raw[2:], "bad magic number"),
    "empty": ("t10k-images-idx3-ubyte", lambda raw: b"", "too short to be an IDX file"),
    "non-UTF-8 text": ("t10k-labels-idx1-ubyte", lambda raw: "naïve\xff".encode("latin-1") * 9, "bad magic"),
    "float images": ("train-images-idx3-ubyte", lambda raw: _raw_idx(np.zeros((40, 28, 28), np.float32)),
                     "expected uint8 images"),
    "2-D labels": ("train-labels-idx1-ubyte", lambda raw: _raw_idx(np.zeros((40, 2), np.uint8)),
                   "expected uint8 labels of shape (N,)"),
    "count mismatch": ("t10k-labels-idx1-ubyte", lambda raw: _raw_idx(np.zeros(19, np.uint8)), "20 images but"),
    "label out of range": ("t10k-labels-idx1-ubyte", lambda raw: _raw_idx(np.full(20, 10, np.uint8)),
                           "label 10 out of range"),
    "truncated gzip": ("train-images-idx3-ubyte.gz", None, "corrupt or truncated gzip"),
}


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_hostile_idx_files(case, tmp_path, capsys):
    folder = _fashion_dir(tmp_path)
    name, damage, expected = HOSTILE_FILES[case]
    if name.endswith(".gz"):
        raw = (folder / name[:-3]).read_bytes()
        (folder / name[:-3]).unlink()
        (folder / name).write_bytes(gzip.compress(raw)[:-20])
    else:
        (folder / name).write_bytes(damage((folder / name).read_bytes()))
    out = tmp_path / "run"
    line = _fails_cleanly(capsys, ["exp", "softmax", "--dataset", "fashion_mnist", "--data-dir", str(folder),
                                   "--out", str(out), "--no-progress"], expected, out=out)
    assert name.removesuffix(".gz") in line
    assert not out.exists()  # the data is read before a run folder is made


def test_missing_data_files_and_folder(tmp_path, capsys):
    folder = _fashion_dir(tmp_path)
    (folder / FMNIST[3]).unlink()
    _fails_cleanly(capsys, ["exp", "mlp", "--dataset", "fashion_mnist", "--data-dir", str(folder)],
                   "missing t10k-labels-idx1-ubyte.gz")
    _fails_cleanly(capsys, ["exp", "mlp", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "nope")],
                   "no such directory")


# ---- flags and config values ---------------------------------------------------------------------

@pytest.mark.parametrize("flags,expected", [
    (["--lr", "abc"], "argument --lr: expected float, got 'abc'"),
    (["--max-epochs", "1.5"], "argument --max-epochs: expected int, got '1.5'"),
    (["--max-epochs", "-3"], "--max-epochs: must be > 0, got -3"),
    (["--batch-size", "0"], "--batch-size: must be > 0"),
    (["--seed", "-1"], "--seed: must be >= 0"),
    (["--lr", "nan"], "--lr: must be a number, got nan"),
    (["--lr", "inf"], "--lr: must be finite"),
    (["--lr", "1e400"], "--lr: must be finite"),
    (["--dataset", "imagenet"], "--dataset 'imagenet': not one of"),
    (["--hidden", "0"], "--hidden '0': sizes must be positive"),
    (["--hidden", "32,,x"], "--hidden"),
    (["--lr"], "expected one argument"),
    (["--progress=maybe"], "--progress"),
    (["--frobnicate", "1"], "unknown flag --frobnicate"),
    (["--max-epoch", "3"], "unknown flag --max-epoch; did you mean --max-epochs?"),  # no abbreviations
    (["--devices", "7"], "--devices 7"),
    (["--batch-size", "100000"], "larger than"),
])
def test_hostile_flags(flags, expected, tmp_path, capsys):
    out = tmp_path / "run"
    _fails_cleanly(capsys, ["exp", "mlp", *flags, "--out", str(out), "--no-progress"], expected, out=out)


@pytest.mark.parametrize("experiment,flags,expected", [
    ("mlp", ["--max-epochs", "10000000"], "--max-epochs: must be <= 1000000"),
    ("autograd", ["--seed", "18446744073709551616"], "--seed: must be <= 4294967295"),
    ("transe", ["--dim", "1000000000000000000"], "--dim: must be <= 1048576"),
    ("fede", ["--neg", "1000000"], "--neg: must be <= 65536"),
    ("fede", ["--local-epochs", "1000000"], "--local-epochs: must be <= 1000"),
    ("fede", ["--batch-size", "100000"], "--batch-size 100000: larger than the clients' 593 training triples"),
    ("word2vec", ["--window", "100000"], "--window: must be <= 1000"),
    ("word2vec", ["--batch-size", "100000000"], "--batch-size 100000000: larger than the corpus's"),
    ("interpret", ["--ig-steps", "1000000"], "--ig-steps: must be <= 100000"),
    ("linreg", ["--num-examples", "1000000000000000000"], "--num-examples: must be <= 10000000"),
])
def test_counts_past_their_documented_bounds(experiment, flags, expected, tmp_path, capsys):
    """Every count has an upper bound: a documented one at parse time, or one from the data."""
    out = tmp_path / "run"
    tail = [] if experiment == "autograd" else ["--no-progress"]
    _fails_cleanly(capsys, ["exp", experiment, *flags, "--out", str(out), *tail], expected, out=out)


def test_unknown_experiment_and_command(capsys):
    _fails_cleanly(capsys, ["exp", "resnet"], "unknown experiment 'resnet' (known:", "mlp", "softmax")
    _fails_cleanly(capsys, ["exp"], "name an experiment")
    _fails_cleanly(capsys, ["train", "mlp"], "unknown command 'train'")
    _fails_cleanly(capsys, ["ps", "--bogus"], "unrecognized arguments")
    _fails_cleanly(capsys, ["stop"], "required: RUN_DIR")


def test_non_utf8_arguments_and_output_from_a_real_process(tmp_path):
    """Bytes that are not UTF-8 in argv (a Latin-1 shell) come back escaped in one line."""
    proc = subprocess.run([sys.executable, "-m", "jaxdl", "exp", "mlp", b"--hidden", b"3\xff2",
                           "--out", str(tmp_path / "r")], capture_output=True, timeout=120, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "JAXDL_REGISTRY": str(tmp_path / "reg")})
    err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: --hidden"), err
    assert not (tmp_path / "r").exists()


# ---- run folders --------------------------------------------------------------------------------

def test_not_a_run_folder(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    (tmp_path / "afile").write_text("x")
    for target, expected in ((tmp_path / "plain", "not a run folder (no config.json)"),
                             (tmp_path / "missing", "not a run folder"), (tmp_path / "afile", "not a run folder")):
        _fails_cleanly(capsys, ["exp", "softmax", "--resume", str(target)], expected)
        _fails_cleanly(capsys, ["stop", str(target)], "not a run folder")
        _fails_cleanly(capsys, ["ps", str(target)], "not a run folder")
    _fails_cleanly(capsys, ["exp", "softmax", "--out", str(tmp_path / "afile")], "exists and is not a folder")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["notes.txt"]  # untouched


@pytest.mark.parametrize("content,expected", [
    (b"", "config.json is corrupt"),
    (b"\xff\xfe\x00garbage", "config.json is corrupt"),
    (b"[1, 2, 3]", "config.json is corrupt (not a JSON object)"),
    (b'{"lr": "fast"}', "--lr: expected float, got 'fast'"),
    (b'{"max_epochs": 2.5}', "--max-epochs: expected int, got 2.5"),
    (b'{"seed": true}', "--seed: expected int, got True"),
    (b'{"loss": 3}', "--loss: expected str, got 3"),
    (b'{"lr": -1}', "--lr: must be > 0, got -1"),
])
def test_hostile_saved_config(content, expected, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes(content)
    _fails_cleanly(capsys, ["exp", "softmax", "--resume", str(run), "--no-progress"], expected, out=run)
    assert (run / "config.json").read_bytes() == content  # a refused resume changes nothing


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 3-epoch softmax run with checkpoints at epochs 2 and 3."""
    out = tmp_path_factory.mktemp("trained") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXDL_REGISTRY", str(out.parent / "registry"))
    try:
        assert cli_main(["exp", "softmax", "--max-epochs", "3", "--ckpt-every", "1", "--out", str(out),
                         "--no-progress"]) == 0
    finally:
        mp.undo()
    return out


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_run_folder_of_another_experiment_or_config(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    _fails_cleanly(capsys, ["exp", "mlp", "--resume", str(run)], "holds a 'softmax' run, not 'mlp'",
                   "python -m jaxdl exp softmax --resume")
    _fails_cleanly(capsys, ["exp", "softmax", "--out", str(run)],
                   "holds a finished run; choose another folder (or extend it: --resume")
    _fails_cleanly(capsys, ["exp", "softmax", "--resume", str(run), "--max-epochs", "2"],
                   "has reached epoch 3; give --max-epochs 3 or more")
    _fails_cleanly(capsys, ["exp", "softmax", "--resume", str(run), "--max-epochs", "4", "--seed", "1"],
                   "checkpoint was made with another seed", out=None)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] is True and summary["epochs"] == 3  # refused resumes left it finished


def test_corrupt_checkpoint_names_the_intact_older_one(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    ckpt = run / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["2", "3"]
    manifest = ckpt / "3/state/manifest.ocdbt"
    manifest.write_bytes(manifest.read_bytes()[:-9])
    line = _fails_cleanly(capsys, ["exp", "softmax", "--resume", str(run), "--max-epochs", "5", "--no-progress"],
                          f"checkpoint {ckpt / '3'} is corrupt", "checkpoint 2 is intact",
                          f"mv {ckpt / '3'} {ckpt / '3.corrupt'}")
    assert json.loads((run / "summary.json").read_text())["finished"] is True  # not resumed, not spoiled
    shutil.move(ckpt / "3", ckpt / "3.corrupt")  # follow the advice
    assert cli_main(["exp", "softmax", "--resume", str(run), "--max-epochs", "4", "--no-progress"]) == 0, line
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    # every checkpoint damaged: says so, offers none
    for step in ckpt.iterdir():
        if step.name.isdigit():
            (step / "meta" / "metadata").write_bytes(b"\xff")
    capsys.readouterr()
    _fails_cleanly(capsys, ["exp", "softmax", "--resume", str(run), "--max-epochs", "5"], "no older intact checkpoint")


def test_corrupt_checkpoint_in_a_real_process_prints_no_traceback(trained_run, tmp_path):
    """orbax reads in background threads; a damaged file must not make them print tracebacks."""
    run = _copy(trained_run, tmp_path)
    for path in (run / "checkpoints/3/state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"\x00" * path.stat().st_size)
    proc = subprocess.run([sys.executable, "-m", "jaxdl", "exp", "softmax", "--resume", str(run), "--max-epochs", "5"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "JAXDL_REGISTRY": str(tmp_path / "reg"),
                               "TF_CPP_MIN_LOG_LEVEL": "3"})
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "is corrupt" in err[0] and "checkpoint 2 is intact" in err[0], err


def test_checkpoint_of_another_shape_is_named(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)  # digits: 64 features, 10 classes; breast cancer: 30 and 2
    _fails_cleanly(capsys, ["exp", "softmax", "--resume", str(run), "--dataset", "breast_cancer", "--max-epochs", "4"],
                   "checkpoint 3 does not fit this config", "float32[10] in the checkpoint, float32[2] now",
                   "resume with the run's own settings")


def test_nan_run_stops_keeps_last_good_checkpoint_and_replays_op_by_op(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["exp", "linreg", "--max-epochs", "2", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    line = _fails_cleanly(capsys, ["exp", "linreg", "--resume", str(out), "--lr", "1e30", "--max-epochs", "4"],
                          "loss or gradient became NaN/inf at epoch 3, step 2 of", "last good checkpoint: epoch 2",
                          f"python -m jaxdl exp linreg --resume {out} --debug-nans", code=3, out=out, notices=True)
    assert max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == 2
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # the suggested replay (from checkpoint 2, op by op) names the operation and the line
    rc = cli_main(["exp", "linreg", "--resume", str(out), "--debug-nans"])
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" in err and "experiments/linreg.py" in err and "in squared_loss" in err, line
    assert err.strip().splitlines()[-1].lower().startswith("error: --debug-nans: invalid value (")


# ---- property tests of the parsers ------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_idx_parser_never_fails_other_than_cleanly(raw):
    try:
        array = parse_idx(raw)
    except JaxdlError:
        return
    assert array.dtype.isnative and array.nbytes == len(raw) - 4 - 4 * array.ndim


_IDX_DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hnp.arrays(_IDX_DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)),
       st.booleans(), st.data())
def test_idx_round_trip_and_every_damage_is_caught(tmp_path, array, compress, data):
    path = tmp_path / "a.idx"
    write_idx(path, array, compress=compress)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)  # NaNs compare equal here
    raw = path.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    path.write_bytes(raw[:cut])  # any proper prefix of the file
    with pytest.raises(JaxdlError):
        read_idx(path)


@dataclasses.dataclass
class _Cfg(TrainConfig):
    """A config with every kind of field."""

    hidden: str = dataclasses.field(default="8", metadata=doc("sizes"))
    sigma: float = dataclasses.field(default=0.01, metadata=doc("init scale", ge=0, le=10))
    loss: str = dataclasses.field(default="ce", metadata=doc("loss", choices=("ce", "mse")))
    note: str | None = dataclasses.field(default=None, metadata=doc("optional"))


_FLAGS = ["--seed", "--max-epochs", "--lr", "--batch-size", "--ckpt-every", "--sigma", "--loss", "--hidden",
          "--progress", "--no-progress", "--debug-nans", "--parallel", "--devices", "--note", "--resume", "-h", "--"]
_TOKENS = st.one_of(st.sampled_from(_FLAGS), st.text(max_size=8),
                    st.sampled_from(["0", "-1", "1e9", "nan", "inf", "1.5", "ce", "pmap", "", "=", "--lr=2"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=8))
def test_config_parser_accepts_or_refuses_cleanly(argv):
    try:
        cfg = parse_config(_Cfg, argv, "prog")
    except JaxdlError:
        return
    except SystemExit:  # -h prints help and exits 0, as argparse does
        assert "-h" in argv
        return
    assert cfg.max_epochs > 0 and cfg.lr > 0 and np.isfinite(cfg.lr) and 0 <= cfg.sigma <= 10
    assert cfg.loss in ("ce", "mse") and isinstance(cfg.progress, bool) and isinstance(cfg.seed, int)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31), max_epochs=st.integers(1, 10**6),
       lr=st.floats(1e-12, 1e6, allow_nan=False), sigma=st.floats(0, 10), loss=st.sampled_from(["ce", "mse"]),
       progress=st.booleans(), hidden=st.text(st.characters(blacklist_categories=("Cs",)), max_size=10))
def test_config_round_trips_through_its_flags(seed, max_epochs, lr, sigma, loss, progress, hidden):
    argv = ["--seed", str(seed), "--max-epochs", str(max_epochs), "--lr", repr(lr), "--sigma", repr(sigma),
            "--loss", loss, "--progress" if progress else "--no-progress", f"--hidden={hidden}"]
    cfg = parse_config(_Cfg, argv, "prog")
    assert (cfg.seed, cfg.max_epochs, cfg.lr, cfg.sigma, cfg.loss, cfg.progress, cfg.hidden) == \
        (seed, max_epochs, lr, sigma, loss, progress, hidden)
