"""`make soak`: kill -9 at random times, resume, compare -- for every training loop.

    python -m benchmarks.soak [--trials 20] [--loops mlp,transe,fede,word2vec,launch] [--seed 0]

Per loop: one uninterrupted reference run, then `--trials` runs each killed with SIGKILL at a
time drawn uniformly over the reference's duration (a trial that finished first counts as not
killed), resumed with `--resume` (several times if a kill leaves no checkpoint yet), and
compared with the reference: every metrics.jsonl byte for byte. `launch` is mlp as two
processes (`launch --nproc 2`), one worker killed, resumed through `launch`. Prints a table and
writes soak.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
LOOPS = {
    "mlp": ["exp", "mlp", "--max-epochs", "8", "--hidden", "32", "--ckpt-every", "1"],
    "transe": ["exp", "transe", "--max-epochs", "16", "--eval-every", "2", "--dim", "8", "--ckpt-every", "2"],
    "fede": ["exp", "fede", "--setting", "all", "--max-epochs", "8", "--eval-every", "2", "--dim", "8",
             "--batch-size", "64", "--local-epochs", "1", "--ckpt-every", "2"],
    "word2vec": ["exp", "word2vec", "--max-epochs", "5", "--dim", "16", "--synthetic-sentences", "1500",
                 "--ckpt-every", "1"],
    "launch": ["launch", "--nproc", "2", "exp", "mlp", "--max-epochs", "8", "--hidden", "32", "--ckpt-every", "1"],
}
QUIET = ["--no-progress", "--no-tensorboard"]


def _start(args, env):
    return subprocess.Popen([sys.executable, "-m", "jaxdl", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _metrics(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("metrics.jsonl"))}


def _resume_args(loop: str, folder: Path) -> list[str]:
    head = ["launch", "--nproc", "2", "exp", "mlp"] if loop == "launch" else ["exp", LOOPS[loop][1]]
    return [*head, "--resume", str(folder), *QUIET]


def _kill(proc, loop: str) -> None:
    """SIGKILL the run (for `launch`: one worker, the launcher stops the rest)."""
    if loop == "launch":
        workers = psutil.Process(proc.pid).children()
        target = workers[-1].pid if workers else proc.pid
    else:
        target = proc.pid
    try:
        os.kill(target, signal.SIGKILL)
    except ProcessLookupError:
        pass


def trial(loop: str, folder: Path, reference: dict, duration: float, rng: random.Random, env: dict) -> dict:
    proc = _start([*LOOPS[loop], *QUIET, "--out", str(folder)], env)
    at = rng.uniform(0.0, duration)
    try:
        proc.wait(at)
        killed = False
    except subprocess.TimeoutExpired:
        _kill(proc, loop)
        proc.wait(120)
        killed = True
    resumes = 0
    while killed and resumes < 5:
        resumes += 1
        if (folder / "config.json").is_file():
            code = _start(_resume_args(loop, folder), env).wait(600)
        else:  # killed before the run folder was written: start it again
            code = _start([*LOOPS[loop], *QUIET, "--out", str(folder)], env).wait(600)
        if code == 0:
            break
    return {"killed_at_s": round(at, 2), "killed": killed, "resumes": resumes, "exact": _metrics(folder) == reference}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--loops", default=",".join(LOOPS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="jaxdl-soak-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAXDL_REGISTRY": str(out / "registry")}
    table = {}
    for loop in args.loops.split(","):
        t0 = time.perf_counter()
        if _start([*LOOPS[loop], *QUIET, "--out", str(out / loop / "ref")], env).wait(900) != 0:
            raise SystemExit(f"error: the reference {loop} run failed")
        duration = time.perf_counter() - t0
        reference = _metrics(out / loop / "ref")
        results = [trial(loop, out / loop / f"t{i}", reference, duration, rng, env) for i in range(args.trials)]
        table[loop] = {"trials": len(results), "killed": sum(r["killed"] for r in results),
                       "exact": sum(r["exact"] for r in results), "reference_s": round(duration, 1),
                       "results": results}
        print(f"{loop:<9} trials {len(results):>3}  killed {table[loop]['killed']:>3}  exact resumes "
              f"{table[loop]['exact']:>3}  (reference run {duration:.1f} s)", flush=True)
    (out / "soak.json").write_text(json.dumps(table, indent=2))
    print(out / "soak.json")
    return 0 if all(t["exact"] == t["trials"] for t in table.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
