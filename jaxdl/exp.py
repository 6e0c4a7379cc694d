"""`python -m jaxdl exp NAME`: an experiment's flags parsed into its Config, and its main run
with signals handled (and, with --debug-nans, op by op)."""
from __future__ import annotations

import contextlib
import traceback

import jax

from jaxdl.config import build_parser, parse_config
from jaxdl.discover import experiment_names, load_experiment
from jaxdl.errors import JaxdlError, NumericalFault
from jaxdl.runs import signals


def main_exp(argv: list[str]) -> int:
    """`python -m jaxdl exp NAME [flags]`: parse the experiment's flags and run its main."""
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
    nan_checks = contextlib.ExitStack()
    if debug_nans:  # op by op, so that JAX names the operation that made the NaN and the line calling it
        jax.clear_caches()  # compiled fast paths from earlier runs in this process would skip the checks
        nan_checks.enter_context(jax.debug_nans(True))
        nan_checks.enter_context(jax.debug_infs(True))
        nan_checks.enter_context(jax.disable_jit())
    # From here on SIGINT/SIGTERM/SIGHUP end the run cleanly wherever it is (see runs/signals.py).
    with signals.graceful(), nan_checks:
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
