"""Federated knowledge-graph embedding (FedE, Chen et al., IJCKG 2021) against its two
baselines: isolation (each client alone) and collection (all triples pooled centrally).

    make exp NAME=fede                                            # FedE on the synthetic grid graph
    make exp NAME=fede ARGS="--setting all"                       # the three settings + comparison
    make exp NAME=fede ARGS="--data ../shared/data/kg/umls --setting all"   # UMLS, 3 clients

The graph (default: `jaxdl.data.kg.synthetic_kg`, 100 entities on a 10x10 grid, 8
"move by (dx, dy)" relations; or `--data DIR` in the train/valid/test.txt format) is split
into `--clients` clients by relation, as FedE's FB15k-237-Fed{3,5,10}: relations dealt at
random (`--split-seed`), each client's triples split 80/10/10 (see jaxdl.data.federated);
the split is saved as split.npz in the run folder and `--split FILE` reuses one.

Settings (`--setting`): `isolation` trains every client on its own triples; `collection`
trains one model on the union of the clients' training triples; `fede` runs rounds of
`--local-epochs` local epochs on a `--fraction` of the clients, after which the server
averages each entity's embedding over the participating clients that hold it. One round
is the unit of every setting (each client, or the pooled model, sees its data
`--local-epochs` times), so validation curves per round compare like with like. All
clients of a round train in one compiled, vmapped step (jaxdl.train.federated); with
`--devices N` (N > 1) the client axis is split across the devices (`--parallel` does not
apply: clients, not batches, are what is distributed).

Evaluation, per client: filtered MRR, MR and Hits@1/3/10 on its own test triples, heads
and tails ranked against all entities with the client's own triples filtered; overall:
per-client metrics weighted by test size. Early stopping as the reference (zjukg/FedE):
weighted validation MRR checked every `--eval-every` 5 rounds, stop after `--patience` 5
checks without improvement, test with the best parameters.

Defaults (TransE dim 50, L1; Adam lr 0.01, batch 256, 16 negatives, self-adversarial
alpha 1, gamma 9, entity vectors kept in the unit ball; 3 clients, 3 local epochs, up to
300 rounds) are the transe experiment's UMLS settings with FedE's round structure (the
FedE paper uses dim 128, batch 512, 256 negatives, lr 0.001 on FB15k-237). On UMLS, 3
clients, seeds 0/1/2, expect test MRR isolation ~0.72 < FedE ~0.78 ~ collection ~0.78
(README: the real runs).

The synthetic default deals the grid's 8 relations to 8 clients (preset: batch 64, gamma
4, no norm constraint, as the transe experiment on this graph). A client alone holds one
"move" and sees only chains of entities along it; its held-out triples are exactly the
links missing from its chains, which training on the chains alone pushes apart: isolation
ranks them below chance (test MRR ~0.02; chance ~0.05). FedE shares every entity's
embedding, whose grid position the other clients' moves pin down: ~0.96-1.0, like
collection (1.0), seeds 0 and 1. About a minute for `--setting all` on 2 CPU cores.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from jaxdl.config import TrainConfig, doc, to_dict
from jaxdl.data import federated as fed_data
from jaxdl.data.kg import load_kg, synthetic_kg
from jaxdl.errors import JaxdlError
from jaxdl.eval.federated import METRICS, flat_metrics, make_client_evaluator
from jaxdl.losses.kge import LOSSES, make_loss_fn
from jaxdl.models.kge import ENTITY_CONSTRAINTS, MODELS, KGEModel, with_entity_constraint
from jaxdl.parallel import select_devices
from jaxdl.runs.run import Run, write_json_atomic
from jaxdl.train import federated as fed
from jaxdl.train.loop import fit, median_seconds
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import make_train_step

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "3", "--eval-every", "1", "--dim", "8", "--batch-size", "64", "--local-epochs", "1"]

# The synthetic grid: one relation per client (8 clients), and the transe experiment's
# grid settings (batch 64, gamma 4, no norm constraint: grid positions lie outside the unit ball).
SYNTHETIC = {"clients": 8, "batch_size": 64, "gamma": 4.0, "entity_norm": "none"}
ORDERING_TOLERANCE = 0.02  # FedE may exceed collection by this much and the ordering still holds


@dataclass
class Config(TrainConfig):
    """FedE vs isolation vs collection on a graph split into clients by relation."""

    data: str = field(default="", metadata=doc("graph folder with train/valid/test.txt (default: the synthetic grid)"))
    setting: str = field(default="fede", metadata=doc("what to train; 'all' runs the three and compares",
                                                      choices=(*fed.SETTINGS, "all")))
    clients: int = field(default=3, metadata=doc("clients the relations are dealt to (FedE: 3, 5, 10)", ge=1))
    fraction: float = field(default=1.0, metadata=doc("fraction of clients per FedE round (reference: 1)", gt=0, le=1))
    local_epochs: int = field(default=3, metadata=doc("local epochs per round (reference: 3)", gt=0))
    split: str = field(default="", metadata=doc("reuse a saved split.npz (default: split afresh, saved in the run)"))
    split_seed: int = field(default=0, metadata=doc("seed of the relation deal and the per-client 80/10/10 split",
                                                    ge=0))
    valid_fraction: float = field(default=0.1, metadata=doc("per-client validation share (FedE: 0.1)", gt=0, lt=1))
    test_fraction: float = field(default=0.1, metadata=doc("per-client test share (FedE: 0.1)", gt=0, lt=1))
    model: str = field(default="transe", metadata=doc("score function", choices=MODELS))
    dim: int = field(default=50, metadata=doc("embedding size (KGE room's UMLS setting: 50; FedE: 128)", gt=0))
    gamma: float = field(default=9.0, metadata=doc("margin in the TransE/RotatE score (FedE: 10)", gt=0))
    norm: int = field(default=1, metadata=doc("TransE distance norm", choices=(1, 2)))
    entity_norm: str = field(default="ball", metadata=doc(
        "after each local step keep entity vectors in the unit ball (||e|| <= 1, as the transe experiment), "
        "on the sphere, or unconstrained", choices=ENTITY_CONSTRAINTS))
    loss: str = field(default="nssa", metadata=doc("loss (nssa = self-adversarial negative sampling)", choices=LOSSES))
    neg: int = field(default=16, metadata=doc("negatives per positive (FedE: 256)", gt=0))
    adversarial_temperature: float = field(default=1.0, metadata=doc("self-adversarial alpha (FedE: 1)", ge=0))
    optimizer: str = field(default="adam", metadata=doc("local optimizer (FedE: Adam)",
                                                        choices=("adam", "sgd", "optax_sgd", "momentum")))
    lr: float = field(default=0.01, metadata=doc("local learning rate (FedE: 0.001 at dim 128)", gt=0))
    batch_size: int = field(default=256, metadata=doc("local minibatch size (FedE: 512)", gt=0))
    max_epochs: int = field(default=300, metadata=doc("maximum rounds (a round = --local-epochs local epochs)", gt=0))
    eval_every: int = field(default=5, metadata=doc("rounds between validation checks (FedE: 5)", gt=0))
    patience: int = field(default=5, metadata=doc("checks without a better validation MRR before stopping (FedE: 5)",
                                                  gt=0))
    ckpt_every: int = field(default=25, metadata=doc("checkpoint every N rounds", gt=0))

    PRESETS: ClassVar = {"data": {"": SYNTHETIC}}

    def validate(self) -> None:
        if self.valid_fraction + self.test_fraction >= 1:
            raise JaxdlError(f"--valid-fraction {self.valid_fraction} + --test-fraction {self.test_fraction}: "
                             "must leave a training part (sum < 1)")


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
def load_graph(cfg: Config):
    return load_kg(cfg.data) if cfg.data else synthetic_kg(seed=0)


def graph_name(kg) -> str:
    return Path(kg.source).name if kg.source and Path(kg.source).is_dir() else "synthetic grid"


def make_split(cfg: Config, kg, run_dir: Path | None) -> fed_data.FederatedSplit:
    """The run's own saved split when resuming, else --split, else a fresh one."""
    saved = run_dir / "split.npz" if run_dir is not None else None
    if saved is not None and cfg.resume and saved.is_file():
        split = fed_data.load_split(saved, kg)
    elif cfg.split:
        split = fed_data.load_split(cfg.split, kg)
    else:
        split = fed_data.split_by_relation(kg, cfg.clients, seed=cfg.split_seed, valid_fraction=cfg.valid_fraction,
                                           test_fraction=cfg.test_fraction)
    if split.num_clients != cfg.clients:
        raise JaxdlError(f"--split {cfg.split or saved}: holds {split.num_clients} clients but --clients is "
                         f"{cfg.clients} (pass --clients {split.num_clients})")
    return split


# ---------------------------------------------------------------------------------------
# One setting, trained with the shared loop
# ---------------------------------------------------------------------------------------
def train_setting(cfg: Config, setting: str, run: Run, kg, split: fed_data.FederatedSplit, devices: list) -> dict:
    """Train `setting` in `run` (resuming from its checkpoints), test the best parameters,
    write summary.json and curves.png; returns the summary."""
    model = KGEModel(cfg.model, dim=cfg.dim, gamma=cfg.gamma, p=cfg.norm)
    collection = setting == "collection"
    aggregate = setting == "fede"
    clients = [fed_data.collection_client(split)] if collection else list(split.clients)
    stack = fed_data.stack_clients(clients, kg.num_entities, pad_clients_to=len(devices))
    C = len(clients)
    participants = fed.num_participants(C, cfg.fraction) if aggregate else C
    optimizer = with_entity_constraint(make_optimizer(cfg.optimizer, cfg.lr), cfg.entity_norm)
    loss_fn = make_loss_fn(model, num_entities=kg.num_entities, num_negatives=cfg.neg, loss=cfg.loss,
                           temperature=cfg.adversarial_temperature, margin=cfg.gamma)
    round_fn = fed.make_round(make_train_step(loss_fn, optimizer), aggregate=aggregate,
                              local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, num_clients=C,
                              participants=participants, entity_dim=model.entity_dim,
                              # one device: the packed schedule (no padding steps, same result)
                              client_steps=fed.client_steps(stack, cfg.batch_size) if len(devices) == 1 else None)
    key = jax.random.key(cfg.seed)
    state = fed.init_fed_state(jax.random.fold_in(key, 0), model, stack, optimizer)
    state, data = fed.place_clients(state, fed.client_arrays(stack, cfg.batch_size), devices)
    round_jit = fed.jit_round(round_fn, state, data)

    # Every setting is evaluated on the clients' own valid/test triples.
    evaluator = make_client_evaluator(model, list(split.clients), kg.num_entities, global_relations=collection)
    holds = data.entity_mask_CxE

    def eval_params(state):  # device or host state -> the parameters each client is evaluated with
        p = fed.evaluation_params(state, holds, aggregate=aggregate)
        return jax.tree.map(lambda a: a[0], p) if collection else p

    def params_of(host_state):
        return jax.device_get(eval_params(host_state))

    def score(name, params) -> dict:
        return flat_metrics(evaluator(params, shared=collection, only=(name,)))

    def evaluate(state) -> dict:
        metrics = score("valid", eval_params(state))
        keep = [f"valid_{m}" for m in METRICS] + [f"valid_mrr_client{i}" for i in range(len(split.clients))]
        return {k: metrics[k] for k in keep}

    def from_host(host_state):
        placed, _ = fed.place_clients(jax.tree.map(np.asarray, host_state), data, devices)
        return placed

    resume_dir = run.dir if setting == cfg.setting else run.dir.parent  # an 'all' run resumes from its top folder
    t0 = time.perf_counter()
    result = fit(run=run, state=state, epoch_fn=lambda s, k: round_jit(s, data, k), key=jax.random.fold_in(key, 1),
                 max_epochs=cfg.max_epochs, ckpt_every=cfg.ckpt_every, evaluate=evaluate, eval_every=cfg.eval_every,
                 monitor=("valid_mrr", "max"), patience=cfg.patience, params_of=params_of, to_host=jax.device_get,
                 from_host=from_host, progress=cfg.progress,
                 resume_hint=f"python -m jaxdl exp fede --resume {resume_dir}")
    train_seconds = time.perf_counter() - t0
    best = result.best_params if result.best_params is not None else params_of(jax.device_get(result.state))
    test = score("test", best)
    valid = score("valid", best)
    up = [r["train_floats_up"] for r in run.metrics() if "train_floats_up" in r]
    E, De = kg.num_entities, model.entity_dim
    summary = {
        "finished": True, "setting": setting, "graph": kg.source or "synthetic", "num_entities": E,
        "num_relations": kg.num_relations, "rounds": result.epochs_done, "best_round": result.best_epoch,
        "stopped_early": result.stopped_early, "participants_per_round": participants,
        **{f"test_{m}": test[f"test_{m}"] for m in METRICS},
        "test_mrr_per_client": [test[f"test_mrr_client{i}"] for i in range(len(split.clients))],
        "valid_mrr": valid["valid_mrr"],
        "clients": [{**{f"test_{m}": test[f"test_{m}_client{i}"] for m in METRICS},
                     "num_test": int(len(c.test)), "num_valid": int(len(c.valid)), "num_train": int(len(c.train))}
                    for i, c in enumerate(split.clients)],
        "train_seconds": train_seconds, "median_round_seconds": median_seconds(result.epoch_seconds),
    }
    if aggregate:
        summary["communication"] = {
            "floats_up_per_round": float(np.mean(up)) if up else 0.0,
            "floats_down_per_round": float(np.mean(up)) if up else 0.0,
            "floats_total": float(2 * np.sum(up)),
            "reference_floats_per_round_each_way": participants * E * De,  # zjukg/FedE: the whole table
        }
    if run.is_writer:
        plot_round_curves(run.metrics(), run.dir / "curves.png",
                          title=f"{setting} ({graph_name(kg)}, {len(split.clients)} clients)")
    run.write_summary(summary)
    print(f"{setting}: test MRR {summary['test_mrr']:.4f}  Hits@1 {summary['test_hits@1']:.4f}  "
          f"Hits@10 {summary['test_hits@10']:.4f}  (best round {result.best_epoch} of {result.epochs_done})",
          flush=True)
    return summary


# ---------------------------------------------------------------------------------------
# Plots and the comparison table
# ---------------------------------------------------------------------------------------
def plot_round_curves(records: list[dict], path: Path, *, title: str = "") -> None:
    """Left: local training loss per round; right: validation MRR (overall and per client)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    fig, (ax_loss, ax_mrr) = plt.subplots(1, 2, figsize=(11, 4))
    rounds = [r["epoch"] for r in records]
    ax_loss.plot(rounds, [r.get("train_loss", np.nan) for r in records])
    ax_loss.set(xlabel="round", ylabel="local training loss")
    evals = [r for r in records if "valid_mrr" in r]
    clients = sorted({k for r in evals for k in r if k.startswith("valid_mrr_client")}, key=lambda k: int(k[16:]))
    for k in clients:
        ax_mrr.plot([r["epoch"] for r in evals], [r[k] if r[k] is not None else np.nan for r in evals],
                    alpha=0.5, label=k.replace("valid_mrr_", ""))
    ax_mrr.plot([r["epoch"] for r in evals], [r["valid_mrr"] for r in evals], "k.-", label="weighted")
    ax_mrr.set(xlabel="round", ylabel="validation MRR (filtered)")
    for ax in (ax_loss, ax_mrr):
        ax.grid(alpha=0.3)
    ax_mrr.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_comparison(curves: dict[str, list[dict]], path: Path, *, title: str = "") -> None:
    """Validation MRR per round, one line per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for setting, records in curves.items():
        evals = [r for r in records if "valid_mrr" in r]
        ax.plot([r["epoch"] for r in evals], [r["valid_mrr"] for r in evals], ".-", label=setting)
    ax.set(xlabel="round", ylabel="validation MRR (weighted over clients)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_table(summaries: dict[str, dict]) -> dict:
    """Rows per setting and the ordering check isolation < FedE <= collection (+ tolerance)."""
    rows = {s: {**{f"test_{m}": summaries[s][f"test_{m}"] for m in METRICS},
                "test_mrr_per_client": summaries[s]["test_mrr_per_client"], "best_round": summaries[s]["best_round"],
                "rounds": summaries[s]["rounds"], "train_seconds": summaries[s]["train_seconds"]}
            for s in summaries}
    out = {"rows": rows}
    if all(s in summaries for s in fed.SETTINGS):
        iso, fede, col = (summaries[s]["test_mrr"] for s in ("isolation", "fede", "collection"))
        out.update({"fede_minus_isolation": fede - iso, "collection_minus_fede": col - fede,
                    "tolerance": ORDERING_TOLERANCE, "ordering_holds": bool(iso < fede <= col + ORDERING_TOLERANCE)})
    return out


def format_table(table: dict) -> str:
    head = f"{'setting':<11} {'MRR':>7} {'MR':>7} {'H@1':>7} {'H@3':>7} {'H@10':>7}  per-client MRR"
    lines = [head, "-" * len(head)]
    for s, row in table["rows"].items():
        per = " ".join(f"{v:.3f}" if v is not None else "  -  " for v in row["test_mrr_per_client"])
        lines.append(f"{s:<11} {row['test_mrr']:7.4f} {row['test_mr']:7.2f} {row['test_hits@1']:7.4f} "
                     f"{row['test_hits@3']:7.4f} {row['test_hits@10']:7.4f}  {per}")
    if "ordering_holds" in table:
        lines.append(f"isolation < FedE <= collection (+{table['tolerance']}): {table['ordering_holds']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------
def _open_sub_run(top: Run, setting: str, cfg: Config) -> tuple[Run | None, dict | None]:
    """The sub-run folder of `setting` inside an `all` run: its summary if it finished (early
    stopping, or all of --max-epochs), else the Run to train in (resumed, extended or new)."""
    sub = top.dir / setting
    summary_path = sub / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("finished") and (summary.get("stopped_early") or summary.get("rounds", 0) >= cfg.max_epochs):
            print(f"{setting}: finished earlier in {sub}", flush=True)
            return None, summary
    config = to_dict(replace(cfg, setting=setting, out=str(sub), resume=""))
    if (sub / "config.json").is_file():
        return Run.open("fede", config, resume=str(sub)), None
    return Run.open("fede", config, out=str(sub)), None


def main(cfg: Config) -> Run:
    if jax.process_count() > 1:
        raise JaxdlError("fede runs in one process (it shards the client axis over that process's devices); "
                         "run it without `launch`")
    kg = load_graph(cfg)
    devices = select_devices(cfg.devices)
    run = Run.open("fede", to_dict(cfg), out=cfg.out, resume=cfg.resume, devices=[d.id for d in devices])
    try:
        split = make_split(cfg, kg, run.dir)
        if run.is_writer:
            fed_data.save_split(run.dir / "split.npz", split)
        print(f"{kg.source or 'synthetic graph'}: {kg.num_entities} entities, {kg.num_relations} relations; "
              + "; ".join(f"client {i}: {c['relations']} relations, {c['train']}/{c['valid']}/{c['test']} triples"
                          for i, c in enumerate(split.summary()["clients"])), flush=True)
        if cfg.setting != "all":
            summary = train_setting(cfg, cfg.setting, run, kg, split, devices)
            run.write_summary({**summary, "split": split.summary()})
            return run
        summaries, curves = {}, {}
        for setting in fed.SETTINGS:
            sub, done = _open_sub_run(run, setting, cfg)
            if done is None:
                try:
                    done = train_setting(cfg, setting, sub, kg, split, devices)
                finally:
                    sub.close()
            summaries[setting] = done
            curves[setting] = Run(run.dir / setting, "fede").metrics()
        table = comparison_table(summaries)
        print(format_table(table), flush=True)
        if run.is_writer:
            write_json_atomic(run.dir / "comparison.json", table)
            plot_comparison(curves, run.dir / "comparison.png",
                            title=f"{graph_name(kg)}: {cfg.clients} clients")
        run.write_summary({"finished": True, "setting": "all", "split": split.summary(),
                           "test_mrr": {s: summaries[s]["test_mrr"] for s in summaries},
                           "test_mrr_per_client": {s: summaries[s]["test_mrr_per_client"] for s in summaries},
                           "settings": summaries, **{k: v for k, v in table.items() if k != "rows"}})
        return run
    finally:
        run.close()
