"""`make bench` (`python -m benchmarks`): jit vs eager (and peers) over a registry of workloads.

Lives beside the library, not in it: jaxdl never imports benchmarks, and the package is not
installed; run it from the repository root."""
