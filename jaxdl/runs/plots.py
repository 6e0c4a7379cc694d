"""Training curves as a PNG, drawn on a `matplotlib.figure.Figure` of its own: no pyplot, no
backend chosen, nothing global changed (a notebook's `plt.show()` keeps working).

One quantity family per axis, each labelled: losses; errors; accuracy, MRR and Hits@k
(0 to 1); mean ranks; scores. Losses, errors and ranks go on a log axis when they span a
decade or more. Counts (tokens, examples, floats sent) are not drawn: they are in
metrics.jsonl. Epoch ticks are integers.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from jaxdl.runs.files import save_figure

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn, not when a run starts
    from matplotlib.figure import Figure

# (family, y label, log axis when the values span a decade, test on a metric's name)
FAMILIES = (
    ("loss", "loss", True, lambda k: "loss" in k),
    ("error", "error", True, lambda k: "error" in k or k.endswith("mse")),
    ("rank", "mean rank (lower is better)", True, lambda k: k.endswith("_mr") or k == "mr"),
    ("fraction", "accuracy / MRR / Hits@k", False,
     lambda k: any(w in k for w in ("accuracy", "mrr", "hits", "recovered", "spearman", "precision"))),
    ("score", "score", False, lambda k: "score" in k),
)
SKIPPED = ("tokens", "examples", "floats", "steps", "client")


def families(keys) -> list[tuple[str, str, bool, list[str]]]:
    """The panels to draw: (family, y label, log allowed, metric names), in FAMILIES' order."""
    keys = [k for k in keys if not any(w in k for w in SKIPPED)]
    panels = []
    for name, label, log, test in FAMILIES:
        members = [k for k in keys if test(k)]
        keys = [k for k in keys if k not in members]
        if members:
            panels.append((name, label, log, members))
    if keys:
        panels.append(("other", "value", False, keys))
    return panels


_FRACTION_WORDS = (("accuracy", "accuracy"), ("mrr", "MRR"), ("hits", "Hits@k"), ("recovered", "fraction recovered"),
                   ("spearman", "Spearman rho"), ("precision", "precision"))


def _fraction_label(members: list[str]) -> str:
    """'accuracy', 'MRR / Hits@k', ...: what the 0-1 panel shows."""
    words = [label for word, label in _FRACTION_WORDS if any(word in k for k in members)]
    return " / ".join(words) + " (higher is better)"


def _spans_a_decade(values) -> bool:
    values = [v for v in values if v == v]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 10


def plot_curves(records: list[dict], path: Path, *, title: str = "") -> Figure | None:
    """Every numeric metric of `records` (metrics.jsonl rows) over epochs, one panel per
    quantity family; saved to `path`, and returned."""
    if not records:
        return None
    keys = list(dict.fromkeys(k for r in records for k, v in r.items()
                              if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)))
    panels = families(keys)
    if not panels:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(4.6 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (family, label, log, members) in zip(axes, panels):
        values = []
        for k in members:
            xs = [r["epoch"] for r in records if isinstance(r.get(k), (int, float))]
            ys = [r[k] for r in records if isinstance(r.get(k), (int, float))]
            values += ys
            ax.plot(xs, ys, marker="." if len(xs) < 40 else None, label=k)
        if log and _spans_a_decade(values):
            ax.set_yscale("log")
        if family == "fraction":
            ax.set_ylim(-0.02, 1.02)
        ax.set(xlabel="epoch", ylabel=_fraction_label(members) if family == "fraction" else label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return fig
