"""`make bench`: jit vs eager (and peers) over a registry of workloads."""
