"""`make hostile`: hostile input, each case in a process of its own, tallied.

    python -m benchmarks.hostile [--only flags,files,folders] [--jobs 2] [--timeout 60] [--out DIR]

Cases: every integer and float flag of every experiment given values out of range or not
numbers (-1, 0, 10^18, nan; the seed also 2^64 and a word), a few huge sizes of string-typed flags;
damaged and crafted input files (zip bombs, NUL corpora, a BOM, empty and degenerate
graphs, truncated gzip, a pickle that runs code); and run folders in damaged or hostile
states (symlinks, a folder for a file, garbage JSON, stray checkpoints).

Each outcome is one of: refused (exit 2, the last line `error: ...`, no traceback), nan
(exit 3, one line), ran (exit 0: the value is allowed and the run finished), traceback,
crash (killed by a signal), hang (past --timeout). A refusal must come within 10 s with
under 1 GB resident (peak RSS of the process, from wait4). Prints a table and writes
hostile.json; exits 1 when any case is a traceback, crash or hang, or a refusal misses
its bounds.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import typing
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--no-progress", "--no-tensorboard"]
BAD_NUMBERS = ["-1", "0", "1000000000000000000", "nan"]  # and, for the seed, 2^64 and a word
REFUSAL_SECONDS, REFUSAL_RSS = 10.0, 1 << 30


@dataclasses.dataclass
class Case:
    group: str
    name: str
    argv: list[str]
    outcome: str = ""
    code: int | None = None
    seconds: float = 0.0
    peak_rss: int = 0
    last_line: str = ""


def _fields(experiment: str) -> dict[str, type]:
    sys.path.insert(0, str(REPO))
    from jaxdl.cli import load_experiment

    config = load_experiment(experiment).Config
    hints = typing.get_type_hints(config)
    return {f.name: hints[f.name] for f in dataclasses.fields(config)}


def _tail(experiment: str, out: Path, *, epochs: bool = True) -> list[str]:
    """The flags that keep a case short and quiet, where the experiment has them."""
    fields = _fields(experiment)
    epochs = epochs and "max_epochs" in fields and experiment != "likelihood"  # its claims need its full run
    return [*(["--max-epochs", "2"] if epochs else []),
            *(["--no-progress"] if "progress" in fields else []),
            *(["--no-tensorboard"] if "tensorboard" in fields else []),
            *(["--out", str(out)] if "out" in fields else [])]


def flag_cases(scratch: Path) -> list[Case]:
    from jaxdl.cli import experiment_names

    cases = []
    for experiment in experiment_names():
        for name, kind in _fields(experiment).items():
            if kind not in (int, float):
                continue
            flag = "--" + name.replace("_", "-")
            for value in BAD_NUMBERS + (["18446744073709551616", "seven"] if name == "seed" else []):
                out = scratch / f"{experiment}-{name}-{len(cases)}"
                cases.append(Case("flags", f"{experiment} {flag} {value}",
                                  ["exp", experiment, f"{flag}={value}",
                                   *_tail(experiment, out, epochs=name != "max_epochs")]))
    huge = [("mlp", "--hidden", "100000000000"), ("mlp", "--hidden", "30000000"), ("mlp", "--hidden", "64,0"),
            ("mlp", "--devices", ":99"), ("mlp", "--devices", "gpu:0"), ("transe", "--dim", "300000000"),
            ("fede", "--dim", "30000000"), ("fede", "--clients", "100000"), ("word2vec", "--dim", "100000000"),
            ("word2vec", "--synthetic-sentences", "100000000000"), ("transe", "--eval-batch-size", "1000000000")]
    for experiment, flag, value in huge:
        cases.append(Case("flags", f"{experiment} {flag} {value}",
                          ["exp", experiment, flag, value, *_tail(experiment, scratch / f"huge-{len(cases)}")]))
    return cases


class _RunsCode:  # unpickling this would run `touch`
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def file_cases(scratch: Path) -> list[Case]:
    files = scratch / "files"
    files.mkdir(parents=True, exist_ok=True)
    made: dict[str, tuple[str, list[str]]] = {}

    def zip_of(name: str, member: str, data_writer) -> Path:
        path = files / name
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            with z.open(member, "w", force_zip64=True) as f:
                data_writer(f)
        return path

    def repeated(block: bytes, n: int):
        """A writer of `block`, n times over (streamed: the member is never in memory)."""
        def write(f):
            for _ in range(n):
                f.write(block)
        return write

    nul_mib, words_block = b"\0" * (1 << 20), b"the cat sat on the mat\n" * (1 << 16)

    made["corpus: zip bomb (4 GiB of NUL, JAXDL_READ_LIMIT 64 MiB)"] = (
        "word2vec", ["--corpus", str(zip_of("bomb.zip", "ptb/ptb.train.txt", repeated(nul_mib, 4096)))])
    made["corpus: 2 GiB of words in a zip (JAXDL_READ_LIMIT 64 MiB)"] = (
        "word2vec", ["--corpus", str(zip_of("words.zip", "ptb/ptb.train.txt", repeated(words_block, 1400)))])
    made["corpus: a zip without the member"] = (
        "word2vec", ["--corpus", str(zip_of("other.zip", "x.txt", repeated(words_block, 1)))])
    (files / "nul.txt").write_bytes(b"\0" * 10000)
    made["corpus: NUL bytes"] = ("word2vec", ["--corpus", str(files / "nul.txt")])
    (files / "empty.txt").write_bytes(b"")
    made["corpus: empty"] = ("word2vec", ["--corpus", str(files / "empty.txt")])
    (files / "notzip.zip").write_bytes(b"PK\x03\x04 broken")
    made["corpus: a broken zip"] = ("word2vec", ["--corpus", str(files / "notzip.zip")])
    made["corpus: missing"] = ("word2vec", ["--corpus", str(files / "nope.txt")])
    made["corpus: a folder"] = ("word2vec", ["--corpus", str(files)])

    def graph(name: str, train: str, valid: str = "a\tr\ta\n", test: str = "a\tr\ta\n") -> Path:
        folder = files / name
        folder.mkdir(exist_ok=True)
        for split, text in (("train", train), ("valid", valid), ("test", test)):
            (folder / f"{split}.txt").write_bytes(text.encode("utf-8", "surrogateescape"))
        return folder

    ok = "".join(f"e{i % 20}\tr{i % 3}\te{(i * 7 + 1) % 20}\n" for i in range(60))
    few = "".join(ok.splitlines(keepends=True)[:4])
    for experiment in ("transe", "fede"):
        made[f"{experiment} graph: empty train"] = (experiment, ["--data", str(graph("empty", ""))])
        made[f"{experiment} graph: one entity"] = (experiment, ["--data", str(graph("one", "a\tr\ta\n" * 5))])
        made[f"{experiment} graph: two columns"] = (experiment, ["--data", str(graph("cols", "a\tb\n" * 5))])
        made[f"{experiment} graph: binary"] = (experiment, ["--data", str(graph("bin", "\udcff\udcfe\0\0\n" * 9))])
        made[f"{experiment} graph: no valid/test triples"] = (experiment, ["--data", str(graph("novalid", ok, "", ""))])
        made[f"{experiment} graph: missing folder"] = (experiment, ["--data", str(files / "nograph")])
    made["transe graph: a BOM before the first entity"] = (
        "transe", ["--data", str(graph("bom", "\ufeff" + ok, few, few))])
    for name, payload in (("code", _RunsCode(files / "ran")), ("list of ints", [1, 2, 3]), ("truncated", None)):
        path = files / f"split-{name.replace(' ', '-')}.pkl"
        raw = pickle.dumps([{"train": {}}], protocol=3)[:-9] if payload is None else pickle.dumps(payload, protocol=3)
        path.write_bytes(raw)
        made[f"fede --split: {name} pickle"] = ("fede", ["--split", str(path)])
    fashion = files / "fashion"
    fashion.mkdir(exist_ok=True)
    for member in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                   "t10k-labels-idx1-ubyte"):
        (fashion / member).write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x00" * 3)  # zero images
    made["mlp: IDX set of zero images"] = ("mlp", ["--dataset", "fashion_mnist", "--data-dir", str(fashion)])
    cases = []
    for name, (experiment, args) in made.items():
        tail = _tail(experiment, scratch / f"file-{len(cases)}")
        cases.append(Case("files", name, ["exp", experiment, *args, *tail]))
    return cases


def folder_cases(scratch: Path) -> list[Case]:
    """Run folders in damaged or hostile states, resumed (or written into)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAXDL_REGISTRY": str(scratch / "registry")}
    base = scratch / "folders" / "base"
    subprocess.run([sys.executable, "-m", "jaxdl", "exp", "linreg", "--max-epochs", "3", *QUIET, "--out", str(base)],
                   cwd=REPO, env=env, check=True, capture_output=True)
    victim = scratch / "folders" / "victim.txt"
    victim.write_text("precious\n")
    damages = {
        "config.json: garbage": lambda d: (d / "config.json").write_text("{not json"),
        "config.json: a list": lambda d: (d / "config.json").write_text("[1, 2]"),
        "config.json: a folder": lambda d: ((d / "config.json").unlink(), (d / "config.json").mkdir()),
        "config.json: missing": lambda d: (d / "config.json").unlink(),
        "metrics.jsonl: a folder": lambda d: ((d / "metrics.jsonl").unlink(), (d / "metrics.jsonl").mkdir()),
        "metrics.jsonl: random bytes": lambda d: (d / "metrics.jsonl").write_bytes(os.urandom(500)),
        "metrics.jsonl: a symlink": lambda d: ((d / "metrics.jsonl").unlink(),
                                               (d / "metrics.jsonl").symlink_to(victim)),
        "run.lock: a symlink": lambda d: ((d / "run.lock").unlink(missing_ok=True),
                                          (d / "run.lock").symlink_to(victim)),
        "run.lock: garbage": lambda d: (d / "run.lock").write_text("\0\0garbage"),
        "summary.json.tmp: a symlink": lambda d: (d / "summary.json.tmp").symlink_to(victim),
        "checkpoints: deleted": lambda d: _rmtree(d / "checkpoints"),
        "checkpoints: every file emptied": lambda d: [p.write_bytes(b"") for p in (d / "checkpoints").rglob("*")
                                                      if p.is_file()],
        "checkpoints: a file for the folder": lambda d: (_rmtree(d / "checkpoints"),
                                                         (d / "checkpoints").write_text("x")),
        "the run folder: a file": lambda d: (_rmtree(d), d.write_text("x")),
    }
    cases = []
    for i, (name, damage) in enumerate(damages.items()):
        folder = scratch / "folders" / f"f{i}"
        subprocess.run(["cp", "-a", str(base), str(folder)], check=True)
        damage(folder)
        cases.append(Case("folders", name, ["exp", "linreg", "--resume", str(folder), "--max-epochs", "4", *QUIET]))
    stray = scratch / "folders" / "stray"
    subprocess.run(["cp", "-a", str(base), str(stray)], check=True)
    (stray / "config.json").unlink()
    cases.append(Case("folders", "stray checkpoints in a fresh --out",
                      ["exp", "linreg", "--out", str(stray), "--max-epochs", "4", *QUIET]))
    cases.append(Case("folders", "--resume of a folder that does not exist",
                      ["exp", "linreg", "--resume", str(scratch / "folders" / "none"), *QUIET]))
    cases.append(Case("folders", "--resume of another experiment's run",
                      ["exp", "mlp", "--resume", str(base), *QUIET]))
    cases.append(Case("folders", "stop: a folder with no run", ["stop", str(scratch / "folders")]))
    return cases


def _rmtree(path: Path) -> None:
    subprocess.run(["rm", "-rf", str(path)], check=True)


def run_case(case: Case, env: dict, timeout: float) -> Case:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "jaxdl", *case.argv], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, 9))
    timer.start()
    stderr = proc.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    timed_out = not timer.is_alive()
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    case.seconds, case.peak_rss, case.code = time.perf_counter() - t0, usage.ru_maxrss * 1024, proc.returncode
    lines = [line for line in stderr.splitlines() if line.strip()]
    case.last_line = lines[-1][:300] if lines else ""
    one_error = bool(lines) and lines[-1].startswith("error:") and "Traceback" not in stderr
    if timed_out:
        case.outcome = "hang"
    elif case.code < 0 or case.code in (134, 137, 139):
        case.outcome = "crash"
    elif "Traceback" in stderr or case.code == 1:
        case.outcome = "traceback"
    elif case.code == 2 and one_error:
        case.outcome = "refused"
    elif case.code == 3 and one_error:
        case.outcome = "nan"
    elif case.code == 0:
        case.outcome = "ran"
    else:
        case.outcome = "traceback"
    return case


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__.splitlines()[0])
    p.add_argument("--only", default="flags,files,folders")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--match", default="", help="only cases whose name contains one of these, comma-separated")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="jaxdl-hostile-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAXDL_REGISTRY": str(out / "registry"),
           "JAXDL_READ_LIMIT": str(64 << 20)}
    makers = {"flags": flag_cases, "files": file_cases, "folders": folder_cases}
    cases = [c for group in args.only.split(",") for c in makers[group](out)]
    if args.match:
        cases = [c for c in cases if any(m in c.name for m in args.match.split(","))]
    print(f"{len(cases)} cases, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for case in pool.map(lambda c: run_case(c, env, args.timeout), cases):
            print(f"{case.outcome:<9} {case.seconds:5.1f} s {case.peak_rss / 2**20:6.0f} MB  {case.group}: {case.name}"
                  f"  | {case.last_line[:110]}", flush=True)
    bad = [c for c in cases if c.outcome in ("traceback", "crash", "hang")]
    slow = [c for c in cases if c.outcome == "refused" and (c.seconds > REFUSAL_SECONDS or c.peak_rss > REFUSAL_RSS)]
    table = {}
    for c in cases:
        row = table.setdefault(c.group, {"inputs": 0, "refused": 0, "nan": 0, "ran": 0, "traceback": 0, "crash": 0,
                                         "hang": 0, "refusals_past_10s_or_1GB": 0})
        row["inputs"] += 1
        row[c.outcome] += 1
        row["refusals_past_10s_or_1GB"] += c in slow
    print(f"\n{'group':<8} " + " ".join(f"{k:>9}" for k in next(iter(table.values()))))
    for group, row in table.items():
        print(f"{group:<8} " + " ".join(f"{v:>9}" for v in row.values()))
    refused = [c for c in cases if c.outcome == "refused"]
    if refused:
        largest_mb = max(c.peak_rss for c in refused) / 2**20
        print(f"refusals: slowest {max(c.seconds for c in refused):.1f} s, largest {largest_mb:.0f} MB resident")
    (out / "hostile.json").write_text(json.dumps({"table": table, "cases": [dataclasses.asdict(c) for c in cases]},
                                                 indent=1))
    print(out / "hostile.json")
    return 1 if bad or slow else 0


if __name__ == "__main__":
    sys.exit(main())
