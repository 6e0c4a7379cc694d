"""`python -m jaxdl <command>`: exp, list, verify, ps, stop, devices, launch.

Every bad input ends as one `error: ...` line on stderr and a non-zero exit:
2 bad input, 3 numerical fault, 128+N interrupted by signal N (after checkpointing).
"""
from __future__ import annotations

import importlib
import os
import sys

from jaxdl.discover import experiment_names, load_experiment  # noqa: F401  (the library's loader, re-exported)
from jaxdl.errors import Interrupted, JaxdlError, NumericalFault

USAGE = """usage: python -m jaxdl <command> [args]

commands:
  exp NAME [--flag value ...]   run experiments/NAME (flags: python -m jaxdl exp NAME --help)
  list                          list the experiments
  verify                        check hand-derived gradients against autodiff
  ps                            list jaxdl runs on this machine
  stop RUN_DIR                  make a run checkpoint and exit
  devices                       list the devices JAX sees
  launch --nproc N exp NAME ... run an experiment as N cooperating processes"""

# command -> "module:function" taking argv, returning an exit code. Imported when called, so
# that `ps`, `stop` and `list` start at once (without jax) and a broken room breaks no other.
COMMANDS = {
    "exp": "jaxdl.exp:main_exp",
    "verify": "jaxdl.verify.cli:main",
    "ps": "jaxdl.runs.ps:main_ps",
    "stop": "jaxdl.runs.ps:main_stop",
    "devices": "jaxdl.devices.select:main_devices",
    "launch": "jaxdl.launch:main_launch",
}


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "list":
        print("\n".join(experiment_names()))
        return 0
    if command == "bench":
        raise JaxdlError("bench: the benchmarks live in the repository's benchmarks/ folder: run `make bench` "
                         "(or `python -m benchmarks`) from a checkout")
    if command not in COMMANDS:
        raise JaxdlError(f"unknown command {command!r}; known: list, {', '.join(COMMANDS)}")
    module_name, func = COMMANDS[command].split(":")
    return int(getattr(importlib.import_module(module_name), func)(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return _dispatch(argv)
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 128 + e.signum
    except NumericalFault as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except JaxdlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
