"""`python -m benchmarks [--quick] [--only NAME,..] [--threads N] [--out DIR]` (`make bench`).

Bad input ends as one `error: ...` line on stderr and exit 2, as with `python -m jaxdl`."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read once, when XLA loads: before benchmarks.cli imports jax

from benchmarks.cli import main  # noqa: E402
from jaxdl.cli import run_command  # noqa: E402


def run(argv: list[str]) -> int:
    return run_command(main, argv)


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
