"""How many rows an evaluation can take at once: read from the program as XLA compiles it,
against the memory available (the evaluation adapts to the machine rather than failing)."""
from __future__ import annotations

import psutil

from jaxdl.errors import JaxdlError


def fitting_rows(jitted, make_args, rows: int, *, share: float = 0.5,
                 what: str = "evaluation") -> tuple[int, object]:
    """The largest block of rows, at most `rows`, for which `jitted(*make_args(block))` (args
    as ShapeDtypeStructs) needs at most `share` of the memory available now, as XLA compiles it;
    returns (block, the program compiled for it). Rows shrink in proportion to the excess,
    then by halves; JaxdlError when not even one row fits."""
    limit = psutil.virtual_memory().available * share
    while True:
        compiled = jitted.lower(*make_args(rows)).compile()
        stats = compiled.memory_analysis()
        if stats is None:
            return rows, compiled
        need = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
        if need <= limit:
            return rows, compiled
        if rows == 1:
            raise JaxdlError(f"{what} of a single row needs about {need / 2**30:.1f} GiB, more than {share:.0%} of the "
                             f"{int(limit / share) / 2**30:.1f} GiB available; choose smaller settings")
        rows = max(1, min(rows // 2, int(rows * limit / need * 0.9)))
