"""`python -m jaxdl <command>`: exp, list, verify, ps, stop, devices, launch.

Every bad input ends as one `error: ...` line on stderr and a non-zero exit:
2 bad input, 3 numerical fault, 128+N interrupted by signal N (after checkpointing).
"""
from __future__ import annotations

import ast
import contextlib
import errno
import difflib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from jaxdl.errors import Interrupted, JaxdlError, NumericalFault

_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

# ---- experiments: one copyable file each, loaded from its file (no package, no sys.path edit) ----

EXPERIMENTS_ENV = "JAXDL_EXPERIMENTS"


def experiments_dir() -> Path:
    """Where experiment files are found: $JAXDL_EXPERIMENTS, else ./experiments, else the
    experiments/ folder beside the installed package (a checkout)."""
    if os.environ.get(EXPERIMENTS_ENV):
        return Path(os.environ[EXPERIMENTS_ENV])
    here = Path.cwd() / "experiments"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "experiments"


def experiment_names() -> list[str]:
    """The experiments: every `NAME.py` in `experiments_dir()` not starting with '_'."""
    folder = experiments_dir()
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []


def describe_experiment(name: str) -> str:
    """The first sentence of an experiment file's docstring, read without running the file."""
    path = experiments_dir() / f"{name}.py"
    try:
        text = ast.get_docstring(ast.parse(path.read_text())) or ""
    except (OSError, SyntaxError, ValueError):
        return ""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    sentence = paragraph.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 110 else sentence[:107].rsplit(" ", 1)[0] + " ..."


def load_experiment(name: str):
    """The module of experiment `name` (or of a path to an experiment file), loaded from its
    file: each experiment is a self-contained, copyable file."""
    path = Path(name) if name.endswith(".py") else experiments_dir() / f"{name}.py"
    if not path.is_file():
        names = experiment_names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise JaxdlError(f"unknown experiment {name!r}{hint} (known: {', '.join(names)})")
    module_name = f"jaxdl_experiment_{path.stem}"
    if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


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
    "verify": "jaxdl.verify.cli:main",
    "ps": "jaxdl.runs.ps:main_ps",
    "stop": "jaxdl.runs.ps:main_stop",
    "devices": "jaxdl.devices.select:main_devices",
    "launch": "jaxdl.launch:main_launch",
}


def main_exp(argv: list[str]) -> int:
    """`python -m jaxdl exp NAME [flags]`: parse the experiment's flags and run its main, with
    signals handled (and, with --debug-nans, op by op)."""
    # Deferred, and only here: `ps`, `stop` and `list` must start without importing jax.
    import jax

    from jaxdl.config import build_parser, parse_config
    from jaxdl.devices import compile_cache
    from jaxdl.runs import signals

    if not argv:
        raise JaxdlError(f"exp: name an experiment; known: {', '.join(experiment_names())}")
    name, argv = argv[0], argv[1:]
    module = load_experiment(name)
    prog = f"python -m jaxdl exp {name}"
    if "-h" in argv or "--help" in argv:
        build_parser(module.Config, prog).print_help()
        return 0
    cfg = parse_config(module.Config, argv, prog)
    debug_nans = bool(getattr(cfg, "debug_nans", False))
    settings = contextlib.ExitStack()
    if getattr(cfg, "compile_cache", False):
        settings.enter_context(compile_cache.enabled())
    if debug_nans:  # op by op, so that JAX names the operation that made the NaN and the line calling it
        jax.clear_caches()  # compiled fast paths from earlier runs in this process would skip the checks
        settings.enter_context(jax.debug_nans(True))
        settings.enter_context(jax.debug_infs(True))
        settings.enter_context(jax.disable_jit())
    # From here on SIGINT/SIGTERM/SIGHUP end the run cleanly wherever it is (see runs/signals.py).
    with signals.graceful(), settings:
        try:
            run = module.main(cfg)
        except FloatingPointError as e:
            if not debug_nans:
                raise
            traceback.print_exc()
            raise NumericalFault(f"--debug-nans: {str(e).splitlines()[0].rstrip('.')}; the traceback above ends at the "
                                 f"operation and the line that made it") from None
    if run is not None:
        print(getattr(run, "dir", run), flush=True)
    return 0


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "exp":
        return main_exp(rest)
    if command == "list":
        width = max((len(n) for n in experiment_names()), default=0)
        for name in experiment_names():
            print(f"{name:<{width}}  {describe_experiment(name)}")
        return 0
    if command == "bench":
        raise JaxdlError("bench: the benchmarks live in the repository's benchmarks/ folder: run `make bench` "
                         "(or `python -m benchmarks`) from a checkout")
    if command not in COMMANDS:
        known = ["exp", "list", *COMMANDS]
        close = difflib.get_close_matches(command, known, n=1, cutoff=0.6)
        raise JaxdlError(f"unknown command {command!r}" + (f"; did you mean {close[0]}?" if close else "")
                         + f" (known: {', '.join(known)})")
    module_name, func = COMMANDS[command].split(":")
    return int(getattr(importlib.import_module(module_name), func)(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return run_command(_dispatch, argv)


def run_command(command, argv: list[str]) -> int:
    """`command(argv)`, its failures turned into one line on stderr and an exit code: 2 bad
    input or a refused run, 3 NaN/inf, 128+N interrupted by signal N."""
    try:
        return command(argv)
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
    except BrokenPipeError:  # `python -m jaxdl ps | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        print(f"error: {e.filename or 'writing'}: {os.strerror(e.errno)}; the last checkpoint is intact: free space "
              f"(or make the folder writable) and continue with --resume RUN_DIR", file=sys.stderr)
        return 2
    except Exception as e:
        text = str(e)
        if type(e).__name__ not in ("XlaRuntimeError", "JaxRuntimeError") or "RESOURCE_EXHAUSTED" not in text:
            raise
        if "No space left on device" in text:
            print("error: no space left on device; the last checkpoint is intact: free space and continue with "
                  "--resume RUN_DIR", file=sys.stderr)
        else:
            first = next((line for line in text.splitlines() if "RESOURCE_EXHAUSTED" in line), text)[:300]
            print(f"error: out of memory on the device ({first.strip()}); choose smaller settings (--batch-size, "
                  f"--dim, --hidden, --neg, --eval-batch-size)", file=sys.stderr)
        return 2
