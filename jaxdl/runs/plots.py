"""Training curves as a PNG (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(records: list[dict], path: Path, *, title: str = "") -> None:
    """One panel for losses, one for everything else (accuracies, MRR, ...), over epochs."""
    if not records:
        return
    epochs = [r["epoch"] for r in records]
    keys = [k for k in records[-1] if k != "epoch" and isinstance(records[-1][k], (int, float))]
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses]
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, group in zip(axes[0], panels):
        for k in group:
            xs = [e for e, r in zip(epochs, records) if k in r]
            ax.plot(xs, [r[k] for r in records if k in r], marker="." if len(xs) < 40 else None, label=k)
        ax.set_xlabel("epoch")
        if group is losses and all(r.get(k, 1) > 0 for r in records for k in group):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
