"""`python -m benchmarks [--quick] [--out DIR] [--only NAME,..] [--threads N]` (`make bench`).

Pins the CPU threads of XLA and of every peer framework to the same count, measures the
float32 matmul peak (GFLOP/s of `jnp.dot` on a large square product), runs every workload
of the registry (`benchmarks/workloads_*.py`), adds each dense workload's fraction of that
peak, prints one table and writes `bench.json` (+ `bench.png`) to the run folder
(default runs/bench/<timestamp>), whose path is the last line printed. A workload that
fails is recorded with its error and the run goes on; the exit code is then 1.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import matplotlib
import matplotlib.patches
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from benchmarks.peers import import_torch, pin_xla_threads
from benchmarks.registry import BenchContext, Workload, discover
from benchmarks.timing import time_call
from jaxdl.errors import JaxdlError
from jaxdl.runs.run import Run, write_json_atomic

# ../shared/data beside the checkout, or where $JAXDL_SHARED_DATA says (a copy carried to another machine)
SHARED_DATA = Path(os.environ.get("JAXDL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
PEAK_N = {"full": 2048, "quick": 512}  # side of the square matmul that measures the peak


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, not argparse's usage dump
        raise JaxdlError(f"bench: {message}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="every workload briefly (the test suite's smoke run)")
    parser.add_argument("--out", default="", help="run folder (default runs/bench/<timestamp>)")
    parser.add_argument("--only", default="", help="comma-separated workload names or groups (default: all)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads for XLA and the peers alike (default: the CPUs this process may use)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise JaxdlError(f"--threads {args.threads}: need at least 1")
    return args


def select(found: list[Workload], only: str) -> list[Workload]:
    """The workloads named (or in the groups named) by `--only`, in registry order."""
    if not only.strip():
        return found
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {w.name for w in found} | {w.group for w in found}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise JaxdlError(f"--only: unknown workload {unknown[0]!r}; known: {', '.join(w.name for w in found)}")
    return [w for w in found if w.name in wanted or w.group in wanted]


def measure_peak(quick: bool) -> dict:
    """float32 GFLOP/s of a jitted `jnp.dot` of two random n x n matrices (2 n^3 FLOP); on an
    accelerator also bfloat16, with n large enough to fill it.

    `peak_gflops` is taken from the fast end of the repeats (p10 time): the most this
    machine was seen to deliver, so that `peak_fraction` is never flattered by a moment
    when other processes slowed the peak measurement down; the median is kept beside it."""
    accelerator = jax.default_backend() != "cpu"
    n = PEAK_N["quick" if quick else "full"] * (4 if accelerator else 1)
    out = {}
    for dtype in (jnp.float32, jnp.bfloat16) if accelerator else (jnp.float32,):
        ka, kb = jax.random.split(jax.random.key(0))
        A, B = jax.random.normal(ka, (n, n), dtype), jax.random.normal(kb, (n, n), dtype)
        t = time_call(jax.jit(jnp.dot), A, B, warmup=2, repeats=5 if quick else 10, min_seconds=0.0 if quick else 2.0)
        gflop = 2 * n**3 / 1e9
        prefix = "peak" if dtype == jnp.float32 else "peak_bf16"
        out.update({f"{prefix}_gflops": gflop / (t["p10_ms"] / 1e3),
                    f"{prefix}_median_gflops": gflop / (t["median_ms"] / 1e3)})
    return {**out, "peak_matmul_n": n, "peak_repeats": t["repeats"]}


def measure_torch_peak(torch, n: int) -> float:
    """The same product in PyTorch (same threads): GFLOP/s, for context."""
    A, B = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        A @ B
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        A @ B
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return 2 * n**3 / 1e9 / samples[len(samples) // 2]


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "devices": [str(d) for d in jax.devices()],
            "loadavg_start": list(os.getloadavg())}


def run_one(workload: Workload, ctx: BenchContext) -> dict:
    """The workload's record, or {'name', 'error', 'traceback'} if it raised."""
    t0 = time.perf_counter()
    try:
        record = dict(workload.run(ctx))
        record.setdefault("name", workload.name)
    except Exception as e:  # one broken workload must not end the run
        record = {"name": workload.name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    record.setdefault("group", workload.group)
    record["wall_s"] = time.perf_counter() - t0
    return record


def add_derived(record: dict, peak_gflops: float) -> dict:
    """peak_fraction for records with a FLOP count; speedup and ratio_<peer> where missing."""
    jit_ms = record.get("jit_ms")
    if record.get("gflop") and jit_ms:
        record["achieved_gflops"] = record["gflop"] / (jit_ms / 1e3)
        record["peak_fraction"] = record["achieved_gflops"] / peak_gflops
    if jit_ms and record.get("eager_ms") and "speedup" not in record:
        record["speedup"] = record["eager_ms"] / jit_ms
    for peer in peers_of(record):
        if jit_ms and f"ratio_{peer}" not in record:
            record[f"ratio_{peer}"] = jit_ms / record[f"peer_{peer}_ms"]
    return record


def peers_of(record: dict) -> list[str]:
    """Peer names of `peer_<name>_ms` figures (spreads like peer_x_p10_ms excluded)."""
    names = []
    for k, v in record.items():
        if k.startswith("peer_") and k.endswith("_ms") and isinstance(v, (int, float)):
            name = k[len("peer_"):-len("_ms")]
            if not name.endswith(("_p10", "_p90")):
                names.append(name)
    return names


def fmt_ms(x) -> str:
    if not isinstance(x, (int, float)):
        return "—"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_x(x) -> str:
    return f"{x:,.1f}x" if isinstance(x, (int, float)) else "—"


def render_table(records: list[dict], peak: dict, threads: int, pinned: bool):
    table = Table(title=f"jaxdl bench: {threads} CPU thread(s) for XLA and peers"
                        f"{'' if pinned else ' (XLA unpinned: backend already started)'}; "
                        f"float32 matmul peak {peak['peak_gflops']:.0f} GFLOP/s (n={peak['peak_matmul_n']})",
                  caption="milliseconds, median; speed-up = eager / jit; loop = Python loop of jitted steps; "
                          "ratio = jaxdl jit / peer (below 1: jaxdl faster)")
    for col, justify in (("workload", "left"), ("eager", "right"), ("jit", "right"), ("speed-up", "right"),
                         ("compile", "right"), ("% of peak", "right"), ("loop", "right"), ("peer", "left"),
                         ("peer ms", "right"), ("ratio", "right")):
        table.add_column(col, justify=justify)
    for r in records:
        if "error" in r:
            table.add_row(r["name"], f"[red]error: {r['error'][:100]}[/red]", *[""] * 8)
            continue
        if "skipped" in r:
            table.add_row(r["name"], f"[yellow]skipped: {r['skipped']}[/yellow]", *[""] * 8)
            continue
        peers = peers_of(r)
        table.add_row(
            r["name"], fmt_ms(r.get("eager_ms")), fmt_ms(r.get("jit_ms")), fmt_x(r.get("speedup")),
            fmt_ms(r.get("compile_ms")),
            f"{100 * r['peak_fraction']:.1f}%" if "peak_fraction" in r else "—",
            fmt_ms(r.get("loop_ms")),
            "\n".join(peers) or "—",
            "\n".join(fmt_ms(r[f"peer_{p}_ms"]) for p in peers) or "—",
            "\n".join(f"{r[f'ratio_{p}']:.2f}" if isinstance(r.get(f"ratio_{p}"), (int, float)) else "—"
                      for p in peers) or "—",
        )
    return table


def plot(records: list[dict], path: Path) -> None:
    """Log-scale bars per workload: eager, jit, loop and peers (milliseconds)."""
    matplotlib.use("Agg")
    rows = [r for r in records if "error" not in r and "skipped" not in r and r.get("jit_ms")]
    if not rows:
        return
    labels, values, colors = [], [], []
    palette = {"eager": "tab:gray", "jit": "tab:blue", "loop": "tab:cyan", "peer": "tab:orange"}
    for r in rows:
        for kind, key in (("eager", "eager_ms"), ("jit", "jit_ms"), ("loop", "loop_ms")):
            if isinstance(r.get(key), (int, float)):
                labels.append(f"{r['name']} {kind}")
                values.append(r[key])
                colors.append(palette[kind])
        for p in peers_of(r):
            labels.append(f"{r['name']} {p}")
            values.append(r[f"peer_{p}_ms"])
            colors.append(palette["peer"])
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(values) + 1.2))
    y = range(len(values))[::-1]
    ax.barh(list(y), values, color=colors)
    ax.set_ylim(-0.6, len(values) - 0.4)
    ax.legend(handles=[matplotlib.patches.Patch(color=c, label=k) for k, c in palette.items()],
              loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(palette), frameon=False)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (median, log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _measure_peaks(ctx: BenchContext, machine: dict, console: Console, *, quick: bool, threads: int) -> dict:
    """The float32 matmul peak (printed, and set as `ctx.peak_gflops`) and, when PyTorch is
    installed, PyTorch's peak (its version into `machine`)."""
    peak = measure_peak(quick)
    ctx.peak_gflops = peak["peak_gflops"]
    console.print(f"float32 matmul peak: {peak['peak_gflops']:.1f} GFLOP/s "
                  f"(n={peak['peak_matmul_n']}, {threads} thread(s))")
    torch = import_torch(ctx)
    if torch is not None:
        machine["torch"] = torch.__version__
        peak["peer_torch_peak_gflops"] = measure_torch_peak(torch, peak["peak_matmul_n"])
    return peak


def _run_workloads(workloads: list[Workload], ctx: BenchContext, console: Console, peak_gflops: float) -> list[dict]:
    """Every workload's record (derived figures added), in turn, each with one status line."""
    records = []
    for i, w in enumerate(workloads, 1):
        with console.status(f"[{i}/{len(workloads)}] {w.name}"):
            record = add_derived(run_one(w, ctx), peak_gflops)
        records.append(record)
        status = f"error: {record['error']}" if "error" in record else \
                 f"skipped: {record['skipped']}" if "skipped" in record else "ok"
        console.print(f"[{i}/{len(workloads)}] {w.name}: {status} ({record['wall_s']:.1f} s)", highlight=False)
    return records


def _print_report(console: Console, records: list[dict], peak: dict, machine: dict, notes: list[str], *,
                  threads: int, pinned: bool) -> None:
    """The table, how loaded the machine was, every target (met, missed or not measured) and the notes."""
    console.print(render_table(records, peak, threads, pinned))
    load = f"load average {machine['loadavg_start'][0]:.2f} at the start, {machine['loadavg_end'][0]:.2f} at the end"
    if "peak_end_gflops" in peak:
        load += f"; matmul peak {peak['peak_end_gflops']:.0f} GFLOP/s at the end"
    if "peer_torch_peak_gflops" in peak:
        load += f"; PyTorch's matmul peak {peak['peer_torch_peak_gflops']:.0f} GFLOP/s"
    console.print(load, highlight=False)
    for r in records:
        for t in r.get("targets", []):
            mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "not measured"}[t["met"]]
            value = "—" if t["value"] is None else f"{t['value']:.3g}"
            console.print(f"target {r['name']}: {t['target']}: {value} (limit {t['limit']:.3g}) {mark}")
    for note in notes:
        console.print(f"note: {note}", highlight=False)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workloads = select(discover(), args.only)
    pinned = pin_xla_threads(args.threads)  # before anything starts XLA's CPU client
    console = Console()
    if not console.is_terminal:  # piped or captured: don't squeeze the table into 80 columns
        console = Console(width=160)
    run = Run.open("bench", {"quick": args.quick, "only": args.only, "threads": args.threads}, out=args.out)
    try:
        started = time.time()
        machine = machine_info()
        ctx = BenchContext(quick=args.quick, threads=args.threads, out_dir=run.dir,
                           shared_data=SHARED_DATA if SHARED_DATA.is_dir() else None)
        if not pinned:
            ctx.notes.append(f"XLA's CPU backend started before the bench could set PJRT_NPROC={args.threads}")
        peak = _measure_peaks(ctx, machine, console, quick=args.quick, threads=args.threads)
        records = _run_workloads(workloads, ctx, console, peak["peak_gflops"])
        machine["loadavg_end"] = list(os.getloadavg())
        if not args.quick:  # the same measurement after the workloads: how steady the machine was
            peak["peak_end_gflops"] = measure_peak(args.quick)["peak_gflops"]
        result = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                  "seconds": time.time() - started, "quick": args.quick, "threads": args.threads,
                  "threads_pinned": pinned, **peak, "machine": machine, "notes": ctx.notes,
                  "workloads": records}
        write_json_atomic(run.dir / "bench.json", result)
        plot(records, run.dir / "bench.png")
        _print_report(console, records, peak, machine, ctx.notes, threads=args.threads, pinned=pinned)
        failed = [r["name"] for r in records if "error" in r]
        run.write_summary({"finished": True, "failed": failed, "peak_gflops": peak["peak_gflops"],
                           "workloads": len(records)})
    finally:
        run.close()
    if failed:
        console.print(f"[red]{len(failed)} workload(s) failed: {', '.join(failed)} (tracebacks in bench.json)[/red]")
    print(run.dir, flush=True)
    return 1 if failed else 0
