"""Which feature matters: five attributions of an MLP on the breast-cancer table, and
8x8 importance maps of a digits MLP (jaxdl/interpret.py).

    make exp NAME=interpret
    make exp NAME=interpret ARGS="--shapley-samples 4000 --explain 114"   # tighter, every test row

Breast cancer (scikit-learn: 569 tumours, 30 named features, standardised with the
training split): an MLP 30 -> 32 -> 2 (ReLU, Xavier init, Adam lr 0.01, batch 64, 60
epochs). The score explained is the log-odds of
'benign', logit_benign - logit_malignant, at `explain` test rows, against `background`
training rows drawn with the seed:
  weight            first-layer weight norm per feature (global: no row, no baseline)
  leave_one_out     f(x) - mean_b f(x with feature i from b)
  shapley           sampled Shapley values (D = 30 rules out 2^30 exact coalitions):
                    `shapley_samples` antithetic permutation pairs per row, standard errors
  integrated_grads  trapezoid rule, `ig_steps` steps, averaged over the background
  gradient_x_input  grad f(x) * (x - background mean)
A feature's importance under a method is its mean |attribution| over the explained rows.

Digits (scikit-learn 8x8, 10 classes): an MLP 64 -> 64 -> 10 trained the same way for
`digits_epochs` epochs; for each class c, the Shapley values (sampled) and integrated
gradients of log p(c | image) against a blank image, averaged over `digits_per_class`
test images of class c, drawn as an 8x8 map.

Writes, beside the run's metrics: importance.json (every method's importances per feature,
the top features, Spearman and Kendall rank correlations between methods, Shapley
efficiency gaps and standard errors, IG completeness gaps), top_features.md (the table),
importance.png (bar chart), digits_heatmaps.png, summary.json.

Expect (README: a real run): worst-case size/concavity/texture/smoothness features and the
radius error on top; Shapley values, leave-one-out, integrated gradients and gradient x input
agreeing closely in rank, first-layer weights much less; Shapley efficiency holding to
float32 rounding.

The two MLPs are two runs of the harness: breast cancer in the run folder, digits in its
`digits/` sub-folder, resumed together.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from jaxdl import harness, interpret
from jaxdl.config import TrainConfig, WeightInit, defaults, doc
from jaxdl.data.tabular import load_breast_cancer, load_digits
from jaxdl.errors import JaxdlError
from jaxdl.eval.classification import make_evaluator
from jaxdl.losses.classification import classification_loss
from jaxdl.models.dense import mlp_apply, mlp_init
from jaxdl.runs.files import save_figure
from jaxdl.train.epoch import shuffled_indices, take_rows
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import init_state

METHODS = ("weight", "leave_one_out", "shapley", "integrated_grads", "gradient_x_input")

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "2", "--digits-epochs", "1", "--explain", "3", "--background", "4",
              "--shapley-samples", "8", "--ig-steps", "4", "--digits-per-class", "1", "--digits-samples", "4"]


@defaults(max_epochs=(60, "breast cancer"), lr=0.01, batch_size=64, optimizer="adam", ckpt_every=20)
class Config(TrainConfig):
    """Feature importance of an MLP: weights, leave-one-out, Shapley values, integrated gradients.
    --lr, --batch-size and --optimizer apply to both MLPs."""

    hidden: str = field(default="32", metadata=doc("hidden layer sizes of the breast-cancer MLP, comma-separated"))
    weight_init: WeightInit = field(default="xavier", metadata=doc("weight initialiser"))
    explain: int = field(default=50, metadata=doc("test rows explained (the breast-cancer test split has 114)", gt=0))
    background: int = field(default=50, metadata=doc("training rows averaged over as the baseline (as shap's "
                                                     "independent masker)", gt=0))
    shapley_samples: int = field(default=1000, metadata=doc("antithetic permutation pairs per explained row "
                                                            "(rounded up to a multiple of --background), at most 10^6",
                                                            gt=0, le=1_000_000))
    ig_steps: int = field(default=64, metadata=doc("integrated-gradients steps (trapezoid rule), at most 10^5", gt=0,
                                                       le=100_000))
    top: int = field(default=10, metadata=doc("features listed per method", gt=0))
    digits_hidden: str = field(default="64", metadata=doc("hidden layer sizes of the digits MLP"))
    digits_epochs: int = field(default=30, metadata=doc("digits training epochs, at most 10^5", gt=0, le=100_000))
    digits_per_class: int = field(default=20, metadata=doc("test images per class averaged in a heat map", gt=0))
    digits_samples: int = field(default=200, metadata=doc("permutation pairs per digit image (Shapley), at most 10^6",
                                                            gt=0, le=1_000_000))

    def validate(self) -> None:
        _sizes(self.hidden, "--hidden")
        _sizes(self.digits_hidden, "--digits-hidden")


def _sizes(text: str, flag: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(h) for h in text.split(",") if h.strip())
    except ValueError:
        raise JaxdlError(f"{flag} {text!r}: expected sizes like 32 or 64,32") from None
    if not sizes or min(sizes) < 1:
        raise JaxdlError(f"{flag} {text!r}: sizes must be positive")
    return sizes


# ---- explaining many rows -----------------------------------------------------------------------


def explain_rows(f, X_RxD, background_NxD, key, *, shapley_samples: int, ig_steps: int) -> dict:
    """Every method's attributions for each row of X (R, D): one compiled `lax.map` over rows."""

    def explain(args):
        x, k = args
        shap = interpret.shapley(f, x, background_NxD, method="sampling", num_samples=shapley_samples, key=k)
        return {"leave_one_out": interpret.leave_one_out(f, x, background_NxD),
                "shapley": shap.values, "shapley_stderr": shap.stderr,
                "shapley_base": shap.base_value, "shapley_output": shap.output,
                "integrated_grads": interpret.integrated_gradients(f, x, background_NxD, ig_steps),
                "gradient_x_input": interpret.gradient_x_input(f, x, background_NxD)}

    return jax.lax.map(explain, (X_RxD, jax.random.split(key, X_RxD.shape[0])))


def rank_correlations(importance: dict[str, np.ndarray]) -> dict:
    """Spearman's rho and Kendall's tau between every pair of methods' importance vectors."""
    names = list(importance)
    out = {"methods": names, "spearman": [], "kendall": []}
    for a in names:
        out["spearman"].append([float(stats.spearmanr(importance[a], importance[b]).statistic) for b in names])
        out["kendall"].append([float(stats.kendalltau(importance[a], importance[b]).statistic) for b in names])
    return out


def top_features_table(importance: dict[str, np.ndarray], names: tuple[str, ...], top: int) -> str:
    """Markdown: rank x method, each cell a feature name."""
    order = {m: np.argsort(-v, kind="stable")[:top] for m, v in importance.items()}
    lines = ["| rank | " + " | ".join(importance) + " |", "|---" * (len(importance) + 1) + "|"]
    for r in range(min(top, len(names))):
        lines.append(f"| {r + 1} | " + " | ".join(names[order[m][r]] for m in importance) + " |")
    return "\n".join(lines) + "\n"


# ---- plots --------------------------------------------------------------------------------------


def plot_importance(importance: dict[str, np.ndarray], names, path: Path, *, top: int, title: str) -> None:
    """Grouped horizontal bars: the top features by Shapley value, each method scaled to its max."""
    order = np.argsort(-importance["shapley"], kind="stable")[:top]
    methods = list(importance)
    height = 0.8 / len(methods)
    fig = Figure(figsize=(8, 0.55 * len(order) + 1.5))
    ax = fig.subplots()
    for j, m in enumerate(methods):
        scaled = importance[m][order] / max(float(importance[m].max()), 1e-12)
        ax.barh(np.arange(len(order)) + j * height, scaled, height, label=m)
    ax.set_yticks(np.arange(len(order)) + 0.4 - height / 2, [names[i] for i in order])
    ax.invert_yaxis()
    ax.set_xlabel("mean |attribution| over explained rows, scaled to each method's largest")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_digit_maps(maps: dict[str, np.ndarray], path: Path, *, title: str) -> None:
    """One row per method, one 8x8 panel per class on the row's common colour scale (its
    colorbar on the right); red raises log p(class), blue lowers it."""
    methods = list(maps)
    fig = Figure(figsize=(16, 1.8 * len(methods) + 0.9), layout="constrained")
    axes = fig.subplots(len(methods), 10, squeeze=False)
    for row, m in enumerate(methods):
        limit = max(float(np.abs(maps[m]).max()), 1e-12)
        for c in range(10):
            ax = axes[row, c]
            image = ax.imshow(maps[m][c].reshape(8, 8), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(f"class {c}")
        axes[row, 0].set_ylabel(m, fontsize=9)
        fig.colorbar(image, ax=axes[row, :], shrink=0.9, label="attribution")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=110)


# ---- the experiment -----------------------------------------------------------------------------


def mlp_task(cfg: Config, data, hidden: tuple[int, ...], *, title: str, summary: dict) -> harness.Task:
    """An MLP trained on `data` (cross-entropy), its test accuracy every epoch and at the end."""
    params = mlp_init(jax.random.key(cfg.seed), data.num_features, hidden, data.num_classes,
                      weight_init=cfg.weight_init)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr)
    evaluate = make_evaluator(mlp_apply, {"test": (data.X_test, data.y_test)})
    return harness.Task(
        state=init_state(params, optimizer), loss_fn=classification_loss(mlp_apply), optimizer=optimizer,
        epoch=harness.Batches({"X": data.X_train, "y": data.y_train},
                              partial(shuffled_indices, batch_size=cfg.batch_size), take_rows, cfg.batch_size),
        evaluate=evaluate, report=lambda run, result: {**summary, **evaluate(result.params)}, title=title)


def explain_breast_cancer(cfg: Config, params, data, key) -> dict:
    def log_odds_benign(X):  # sklearn's target: 0 malignant, 1 benign
        logits = mlp_apply(params, X)
        return logits[..., 1] - logits[..., 0]

    n_train, n_test = len(data.X_train), len(data.X_test)
    pick = jax.random.choice(jax.random.fold_in(key, 0), n_train, (min(cfg.background, n_train),), replace=False)
    background = jnp.asarray(data.X_train)[pick]
    X = jnp.asarray(data.X_test[: min(cfg.explain, n_test)])
    att = explain_rows(log_odds_benign, X, background, jax.random.fold_in(key, 1),
                       shapley_samples=cfg.shapley_samples, ig_steps=cfg.ig_steps)
    att = jax.tree.map(np.asarray, att)
    importance = {"weight": np.asarray(interpret.weight_importance(params))}
    importance.update({m: np.abs(att[m]).mean(axis=0) for m in METHODS[1:]})
    change = att["shapley_output"] - att["shapley_base"]  # f(x) - mean_b f(b), per row
    efficiency_gap = np.abs(att["shapley"].sum(1) - change)
    completeness_gap = np.abs(att["integrated_grads"].sum(1) - change)
    return {
        "rows_explained": int(X.shape[0]), "background_rows": int(background.shape[0]),
        "score": "log-odds of benign (logit_1 - logit_0)",
        "importance": {m: v.tolist() for m, v in importance.items()},
        "_importance": importance,
        "shapley_max_efficiency_gap": float(efficiency_gap.max()),
        "shapley_mean_stderr": float(att["shapley_stderr"].mean()),
        "shapley_mean_abs_value": float(np.abs(att["shapley"]).mean()),
        "ig_mean_completeness_gap": float(completeness_gap.mean()),
        "ig_mean_abs_output_change": float(np.abs(change).mean()),
    }


def explain_digits(cfg: Config, params, data, key) -> dict:
    """Per class c: Shapley values and integrated gradients of log p(c | image) against a
    blank image, averaged over up to `digits_per_class` test images of class c."""
    picks = [np.flatnonzero(data.y_test == c)[: cfg.digits_per_class] for c in range(10)]
    index = np.concatenate(picks)
    X, cls = jnp.asarray(data.X_test[index]), jnp.asarray(data.y_test[index])
    keys = jax.random.split(key, len(index))
    blank = jnp.zeros((data.num_features,), jnp.float32)

    def attribute(args):  # one compiled body for every class: the class is data, not code
        x, c, k = args

        def log_prob(Z):
            return jnp.take(jax.nn.log_softmax(mlp_apply(params, Z), axis=-1), c, axis=-1)

        shap = interpret.shapley(log_prob, x, blank, method="sampling", num_samples=cfg.digits_samples, key=k)
        return shap.values, interpret.integrated_gradients(log_prob, x, blank, cfg.ig_steps)

    shap_values, ig_values = (np.asarray(a) for a in jax.lax.map(attribute, (X, cls, keys)))
    maps = {"shapley": np.zeros((10, data.num_features)), "integrated_grads": np.zeros((10, data.num_features))}
    counts = [len(p) for p in picks]
    start = 0
    for c, n in enumerate(counts):
        if n:
            maps["shapley"][c] = shap_values[start:start + n].mean(0)
            maps["integrated_grads"][c] = ig_values[start:start + n].mean(0)
        start += n
    agreement = [float(stats.spearmanr(maps["shapley"][c], maps["integrated_grads"][c]).statistic)
                 for c in range(10) if counts[c]]
    return {"images_per_class": counts, "maps": {m: v.tolist() for m, v in maps.items()}, "_maps": maps,
            "shapley_vs_ig_spearman_per_class": agreement}


def explain(cfg: Config, bc, digits, outcomes: dict[str, harness.Outcome], run) -> dict:
    """Both explanations, their files, and the top run's summary."""
    bc_scores, digits_scores = outcomes[""].summary, outcomes["digits"].summary
    print(f"breast cancer: test accuracy {bc_scores['test_accuracy']:.4f}", flush=True)
    print(f"digits: test accuracy {digits_scores['test_accuracy']:.4f}", flush=True)
    key = jax.random.fold_in(jax.random.key(cfg.seed), 7)
    print("explaining breast cancer ...", flush=True)
    bc_out = explain_breast_cancer(cfg, outcomes[""].result.params, bc, jax.random.fold_in(key, 0))
    importance = bc_out.pop("_importance")
    names = bc.feature_names
    correlations = rank_correlations(importance)
    table = top_features_table(importance, names, cfg.top)
    print(table, flush=True)
    print("Spearman rank correlation between methods:")
    for m, row in zip(correlations["methods"], correlations["spearman"]):
        print(f"  {m:>17s} " + " ".join(f"{v:5.2f}" for v in row))
    print("explaining digits ...", flush=True)
    digits_out = explain_digits(cfg, outcomes["digits"].result.params, digits, jax.random.fold_in(key, 1))
    maps = digits_out.pop("_maps")
    top = {m: [names[i] for i in np.argsort(-v, kind="stable")[: cfg.top]] for m, v in importance.items()}
    report = {"feature_names": list(names), "breast_cancer": {**bc_out, "top_features": top,
                                                              "rank_correlation": correlations},
              "digits": digits_out}
    if run.is_writer:
        run.write_json("importance.json", report)
        run.write_text("top_features.md", table)
        plot_importance(importance, names, run.dir / "importance.png", top=min(15, len(names)),
                        title=f"breast cancer MLP: what drives the log-odds of benign "
                              f"({bc_out['rows_explained']} test rows)")
        plot_digit_maps(maps, run.dir / "digits_heatmaps.png",
                        title="digits MLP: mean attribution to log p(class) against a blank image "
                              "(red raises it, blue lowers it)")
    spearman = dict(zip(correlations["methods"], correlations["spearman"]))
    return {**bc_scores, "digits_test_accuracy": digits_scores["test_accuracy"],
            "top_feature_shapley": top["shapley"][0],
            "spearman_shapley_vs": {m: spearman["shapley"][j] for j, m in enumerate(correlations["methods"])},
            "shapley_max_efficiency_gap": bc_out["shapley_max_efficiency_gap"],
            "shapley_mean_stderr": bc_out["shapley_mean_stderr"],
            "digits_shapley_vs_ig_spearman_mean": float(np.mean(digits_out["shapley_vs_ig_spearman_per_class"]))}


def main(cfg: Config):
    bc, digits = load_breast_cancer(split_seed=cfg.seed), load_digits(split_seed=cfg.seed)
    digits_cfg = dataclasses.replace(cfg, max_epochs=cfg.digits_epochs)
    parts = {"": harness.Part(cfg, lambda: mlp_task(cfg, bc, _sizes(cfg.hidden, "--hidden"),
                                                    title="interpret: breast cancer", summary={})),
             "digits": harness.Part(digits_cfg, lambda: mlp_task(
                 digits_cfg, digits, _sizes(cfg.digits_hidden, "--digits-hidden"), title="interpret: digits",
                 summary={"dataset": "digits"}))}
    return harness.run(cfg, "interpret", lambda: parts,
                       combine=lambda run, outcomes: explain(cfg, bc, digits, outcomes, run))
