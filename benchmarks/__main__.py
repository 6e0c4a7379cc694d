"""`python -m benchmarks [--quick] [--only NAME,..] [--threads N] [--out DIR]` (`make bench`).

Bad input ends as one `error: ...` line on stderr and exit 2, as with `python -m jaxdl`."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read once, when XLA loads: before benchmarks.cli imports jax

from benchmarks.cli import main  # noqa: E402
from jaxdl.errors import Interrupted, JaxdlError  # noqa: E402


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 128 + e.signum
    except JaxdlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
