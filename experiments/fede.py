"""Federated knowledge-graph embedding (FedE, Chen et al., IJCKG 2021) against its
baselines: isolation (each client alone) and collection (all triples pooled centrally),
and the model fusion of isolation and FedE.

    make exp NAME=fede                                            # FedE on the synthetic grid graph
    make exp NAME=fede ARGS="--setting all"                       # the four settings + comparison
    make exp NAME=fede ARGS="--data ../shared/data/kg/umls --setting all"   # UMLS, 3 clients
    make exp NAME=fede ARGS="--data fb15k237 --clients 3 --setting all"     # FB15k-237-Fed3
    make exp NAME=fede ARGS="--split FILE.pkl --clients 3 --semantics reference"  # the reference's split and ways

The graph (default: `jaxdl.data.kg.synthetic_kg`, 100 entities on a 10x10 grid, 8
"move by (dx, dy)" relations; or `--data DIR` in the train/valid/test.txt format) is split
into `--clients` clients by relation, as FedE's FB15k-237-Fed{3,5,10}: relations dealt at
random (`--split-seed`), each client's triples split 80/10/10 (see jaxdl.data.federated);
the split is saved as split.npz in the run folder and `--split FILE` reuses one.
`--split FILE.pkl` reads a split in the FedE reference code's format (a pickled list of
per-client dicts; read by a restricted unpickler, jaxdl.data.reference_split; the file
carries its own graph) and `--export-split FILE.pkl` writes the split in that format and
stops, so both codes can train on the same clients.

Settings (`--setting`): `isolation` trains every client on its own triples; `collection`
trains one model on the union of the clients' training triples; `fede` runs rounds of
`--local-epochs` local epochs on a `--fraction` of the clients, after which the server
averages each entity's embedding over the participating clients that hold it. One round
is the unit of every setting (each client, or the pooled model, sees its data
`--local-epochs` times), so validation curves per round compare like with like. All
clients of a round train in one compiled program (jaxdl.train.federated), one after the
other on a CPU and vmapped on an accelerator (`--schedule`); with several devices
(`--devices :N`, `0,2`, ...) the client axis is split across them (`--parallel` does not
apply: clients, not batches, are what is distributed). `--setting all` also fits the model
fusion (jaxdl.train.fusion: per client, w . (isolation score, FedE score) + b on its
validation triples, as the reference code's fourth setting).

The FedE reference code trains and evaluates differently in several ways, each a flag
here, all selected by `--semantics reference` (see jaxdl.train.federated): tail-only
negatives (`--corrupt tail`) filtered against the client's training triples
(`--filter-negatives`) and drawn from the entities the model knows (`--negatives-from
own`: a client's own in isolation); a fresh Adam every round (`--reset-optimizer`); the
whole table sent to every client (`--download all`) and averaged over every holder
(`--average holders`); no entity constraint; validation by its protocol (`--protocol
reference`); patience 15.

Evaluation, per client, on its own test triples, filtered with its own triples, under two
protocols, both in every summary and table: standard (heads and tails ranked against all
entities) and reference (tails only, against the entities of the client's training
triples: the reference code's). Overall: per-client metrics weighted by test size.
Early stopping: weighted validation MRR (`--protocol`'s) checked every `--eval-every` 5
rounds, stop after `--patience` 15 checks without improvement (both as the reference
code), test with the best parameters.

Defaults (TransE dim 50, L1; Adam lr 0.01, batch 256, 16 negatives, self-adversarial
alpha 1, gamma 9, entity vectors kept in the unit ball; 3 clients, 3 local epochs, up to
300 rounds) are the transe experiment's UMLS settings with FedE's round structure (the
FedE paper uses dim 128, batch 512, 256 negatives, lr 0.001 on FB15k-237). On UMLS, 3
clients, expect isolation < FedE ~ collection in test MRR (README: the real runs).

The synthetic default deals the grid's 8 relations to 8 clients (preset: batch 64, gamma
4, no norm constraint, as the transe experiment on this graph). A client alone holds one
"move" and sees only chains of entities along it; its held-out triples are exactly the
links missing from its chains, which training on the chains alone pushes apart: isolation
ranks them below chance. FedE shares every entity's embedding, whose grid position the
other clients' moves pin down: it comes close to collection (README: the real runs).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jaxdl import harness
from jaxdl.config import KGEOptions, TrainConfig, defaults, doc
from jaxdl.data import federated as fed_data
from jaxdl.data.kg import load_kg, synthetic_kg
from jaxdl.data.named import graph_folder
from jaxdl.data.reference_split import load_reference_split, save_reference_split
from jaxdl.data.kg import CORRUPT_MODES
from jaxdl.errors import JaxdlError
from jaxdl.eval.federated import METRICS, PROTOCOLS, flat_metrics, make_client_evaluator
from jaxdl.eval.link_prediction import default_batch_size
from jaxdl.losses.kge import make_loss_fn
from jaxdl.models.kge import KGEModel, with_entity_constraint
from jaxdl.runs.files import save_figure
from jaxdl.train import federated as fed
from jaxdl.train import fusion
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import make_train_step

# Flags that make a run take a few seconds; used by the generic smoke/determinism/resume tests.
SMOKE_ARGS = ["--max-epochs", "3", "--eval-every", "1", "--dim", "8", "--batch-size", "64", "--local-epochs", "1"]

# The synthetic grid: one relation per client (8 clients), and the transe experiment's
# grid settings (batch 64, gamma 4, no norm constraint: grid positions lie outside the unit ball).
SYNTHETIC = {"clients": 8, "batch_size": 64, "gamma": 4.0, "entity_norm": "none"}
ORDERING_TOLERANCE = 0.02  # FedE may exceed collection by this much and the ordering still holds


# --semantics reference: how the FedE reference code trains and evaluates (jaxdl.train.federated)
REFERENCE = {"corrupt": "tail", "filter_negatives": True, "negatives_from": "own", "reset_optimizer": True,
             "download": "all", "average": "holders", "protocol": "reference", "entity_norm": "none", "patience": 15}


@defaults(max_epochs=(300, "rounds"), lr=0.01, batch_size=256, optimizer=("adam", "the FedE paper"), ckpt_every=25,
          patience=(15, "validations; the FedE reference code"))
class Config(KGEOptions, TrainConfig):
    """FedE vs isolation vs collection (and their model fusion) on a graph split into clients
    by relation. An epoch is a round: --local-epochs local epochs on every participating
    client, then aggregation."""

    setting: str = field(default="fede", metadata=doc(
        "what to train; 'all' runs the three, fits the fusion of isolation and FedE, and compares",
        choices=(*fed.SETTINGS, "all")))
    semantics: str = field(default="jaxdl", metadata=doc(
        "'reference' selects every behaviour of the FedE reference code below (each flag can still be set)",
        choices=("jaxdl", "reference")))
    corrupt: str = field(default="both", metadata=doc(
        "which side negatives replace: one side per positive (both), or tail (the reference)",
        choices=CORRUPT_MODES))
    filter_negatives: bool = field(default=False, metadata=doc(
        "leave out negatives that are training triples of the client (the reference)"))
    negatives_from: str = field(default="all", metadata=doc(
        "entities negatives are drawn from: all, or the model's own (a client's in isolation, all in FedE and "
        "collection: the reference)", choices=("all", "own")))
    reset_optimizer: bool = field(default=False, metadata=doc(
        "a fresh optimizer state for every client every round (the reference) instead of carrying it over"))
    download: str = field(default="held", metadata=doc(
        "what the server sends: each participant its held entities, or every client the whole table (the reference)",
        choices=fed.DOWNLOADS))
    average: str = field(default="participants", metadata=doc(
        "an entity's mean over the participants holding it, or over all its holders (the reference; the same "
        "with --fraction 1)", choices=fed.AVERAGES))
    protocol: str = field(default="standard", metadata=doc(
        "validation protocol for early stopping: heads and tails among all entities (standard), or tails among "
        "the client's entities (the reference); summaries report both", choices=PROTOCOLS))
    fusion_epochs: int = field(default=500, metadata=doc(
        "epochs of the model fusion fit under --setting all (the reference: 500)", gt=0, le=100_000))
    export_split: str = field(default="", metadata=doc(
        "write the split in the FedE reference code's pickle format to this file and stop"))
    clients: int = field(default=3, metadata=doc("clients the relations are dealt to (the FedE paper: 3, 5, 10)",
                                                 ge=1))
    fraction: float = field(default=1.0, metadata=doc("fraction of clients per FedE round (FedE reference: 1)",
                                                      gt=0, le=1))
    local_epochs: int = field(default=3, metadata=doc("local epochs per round (FedE reference: 3), at most 1000", gt=0,
                                                          le=1000))
    schedule: str = field(default="auto", metadata=doc(
        "how one device trains the clients of a round: vmapped together (without padding steps), or one after "
        "the other (the step compiled once, whatever the clients); auto: one after the other on a CPU, vmapped "
        "on an accelerator. On several devices each trains its own share of the clients that way",
        choices=("auto", "vmap", "sequential")))
    split: str = field(default="", metadata=doc(
        "reuse a saved split.npz, or read the FedE reference code's pickle (.pkl; it carries its own graph) "
        "(default: split afresh, saved in the run)"))
    split_seed: int = field(default=0, metadata=doc("seed of the relation deal and the per-client 80/10/10 split",
                                                    ge=0))
    valid_fraction: float = field(default=0.1, metadata=doc("per-client validation share (the FedE paper: 0.1)",
                                                            gt=0, lt=1))
    test_fraction: float = field(default=0.1, metadata=doc("per-client test share (the FedE paper: 0.1)", gt=0, lt=1))

    PRESETS: ClassVar = {"data": {"": SYNTHETIC}, "semantics": {"reference": REFERENCE}}

    def validate(self) -> None:
        KGEOptions.validate(self)
        if self.split.endswith(".pkl") and self.data:
            raise JaxdlError(f"--split {self.split}: a reference split carries its own graph; drop --data {self.data}")
        if self.valid_fraction + self.test_fraction >= 1:
            raise JaxdlError(f"--valid-fraction {self.valid_fraction} + --test-fraction {self.test_fraction}: "
                             "must leave a training part (sum < 1)")


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
def load_inputs(cfg: Config) -> tuple:
    """(graph, split): a reference pickle's own graph and clients, else --data (default: the
    synthetic grid) and `make_split`."""
    if cfg.split.endswith(".pkl"):
        kg, given = load_reference_split(cfg.split)
    else:
        kg, given = (load_kg(graph_folder(cfg.data, cfg.data_dir)) if cfg.data else synthetic_kg(seed=0)), None
    return kg, make_split(cfg, kg, given)


def graph_name(kg) -> str:
    return Path(kg.source).name if kg.source else "synthetic grid"


def make_split(cfg: Config, kg, given: fed_data.FederatedSplit | None = None) -> fed_data.FederatedSplit:
    """The resumed run's own saved split, else the --split given, else a fresh one."""
    saved = Path(cfg.resume) / "split.npz" if cfg.resume else None
    if saved is not None and saved.is_file():
        split = fed_data.load_split(saved, kg)
    elif given is not None:
        split = given
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
# One setting
# ---------------------------------------------------------------------------------------
def setting_task(cfg: Config, setting: str, kg, split: fed_data.FederatedSplit) -> harness.Task:
    """Rounds of `setting` on the clients of `split`; every setting is evaluated on the
    clients' own valid/test triples, and tested with its best validation round."""
    model = KGEModel(cfg.model, dim=cfg.dim, gamma=cfg.gamma, p=cfg.norm)
    collection, aggregate = setting == "collection", setting == "fede"
    clients = [fed_data.collection_client(split)] if collection else list(split.clients)
    stack = fed_data.stack_clients(clients, kg.num_entities)
    C = len(clients)
    participants = fed.num_participants(C, cfg.fraction) if aggregate else C
    optimizer = with_entity_constraint(make_optimizer(cfg.optimizer, cfg.lr), cfg.entity_norm)
    loss_fn = make_loss_fn(model, num_entities=kg.num_entities, num_negatives=cfg.neg, loss=cfg.loss,
                           temperature=cfg.adversarial_temperature, margin=cfg.margin, corrupt_mode=cfg.corrupt,
                           regularizer=cfg.regularizer, regularizer_weight=cfg.regularizer_weight,
                           shared_negatives=cfg.negatives == "batch")
    def make_state():  # made by the harness once its size is known to fit
        return fed.init_fed_state(jax.random.fold_in(jax.random.key(cfg.seed), 0), model, stack, optimizer)

    total = int(np.sum(stack.num_train_C))  # a client with fewer triples than a batch trains on one masked batch
    if cfg.batch_size > total:
        raise JaxdlError(f"--batch-size {cfg.batch_size}: larger than the clients' {total} training triples together")
    own = cfg.negatives_from == "own" and setting == "isolation"  # a client alone knows only its entities
    data = fed.client_arrays(stack, cfg.batch_size, batch_extras=fed.negative_extras(
        stack, filtered=cfg.filter_negatives, pool="held" if own else "all"))
    make_round = partial(fed.make_round, make_train_step(loss_fn, optimizer), aggregate=aggregate,
                         local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, num_clients=C,
                         participants=participants, entity_dim=model.entity_dim,
                         reset_optimizer=optimizer if cfg.reset_optimizer else None, download=cfg.download,
                         average=cfg.average)
    sequential = cfg.schedule == "sequential" or (cfg.schedule == "auto" and jax.default_backend() == "cpu")

    def build_round(client_map=None):  # client_map: None on one device (see harness.Rounds)
        if sequential:
            return make_round(sequential=True, client_map=client_map)
        # vmapped: on one device the packed schedule (no padding steps, the same result); on
        # several the padded one, its client axis partitioned among them
        return make_round(client_steps=fed.client_steps(stack, cfg.batch_size)) if client_map is None else make_round()

    rounds = harness.Rounds(build_round, data)
    score = client_scorer(model, split, kg, global_relations=collection)
    holds = np.asarray(data.entity_mask_CxE)

    def params_of(host_state):  # the parameters each client is evaluated with
        p = fed.evaluation_params(host_state, holds, aggregate=aggregate, download=cfg.download)
        return jax.tree.map(lambda a: a[0], p) if collection else p

    def evaluate(params) -> dict:
        metrics = score("valid", params, protocol=cfg.protocol, shared=collection)
        keep = [f"valid_{m}" for m in METRICS] + [f"valid_mrr_client{i}" for i in range(len(split.clients))]
        return {k: metrics[k] for k in keep}

    def report(run, result: harness.Result) -> dict:
        tests = {p: score("test", result.best_params, protocol=p, shared=collection) for p in PROTOCOLS}
        valid = score("valid", result.best_params, protocol=cfg.protocol, shared=collection)
        return setting_summary(setting, kg, split, result, tests, valid, protocol=cfg.protocol,
                               participants=participants, entity_floats=kg.num_entities * model.entity_dim,
                               floats_up=[r["train_floats_up"] for r in run.metrics() if "train_floats_up" in r]
                               if aggregate else None)

    return harness.Task(state=make_state, epoch=rounds, evaluate=evaluate,
                        eval_every=cfg.eval_every, monitor=("valid_mrr", "max"), patience=cfg.patience,
                        min_delta=cfg.min_delta, params_of=params_of, report=report, plot=plot_round_curves,
                        title=f"{setting} ({graph_name(kg)}, {len(split.clients)} clients; "
                              f"validation: {cfg.protocol} protocol)",
                        label=f"fede {setting}")


def client_scorer(model, split, kg, *, global_relations: bool = False, batch_size: int | None = None):
    """`score(split_name, params, *, protocol, shared) -> flat metrics`: the clients' own
    valid/test triples ranked under either protocol (evaluators built on first use)."""
    evaluators: dict = {}

    def score(name: str, params, *, protocol: str, shared: bool = False) -> dict:
        if protocol not in evaluators:
            evaluators[protocol] = make_client_evaluator(model, list(split.clients), kg.num_entities,
                                                         global_relations=global_relations, protocol=protocol,
                                                         batch_size=batch_size)
        return flat_metrics(evaluators[protocol](params, shared=shared, only=(name,)))

    return score


def protocol_metrics(tests: dict, num_clients: int) -> dict:
    """Test metrics under one protocol: overall, per client MRR."""
    return {**{f"test_{m}": tests[f"test_{m}"] for m in METRICS},
            "test_mrr_per_client": [tests[f"test_mrr_client{i}"] for i in range(num_clients)]}


def setting_summary(setting: str, kg, split, result: harness.Result, tests: dict, valid: dict, *, protocol: str,
                    participants: int, entity_floats: int, floats_up: list | None) -> dict:
    """A setting's summary.json fields: test metrics of its best validation round under
    both protocols (the top level: standard), overall and per client, and (FedE) the floats
    it sent."""
    test = tests["standard"]
    summary = {
        "setting": setting, "graph": kg.source or "synthetic", "num_entities": kg.num_entities,
        "num_relations": kg.num_relations, "rounds": result.epochs_done, "best_round": result.best_epoch,
        "stopped_early": result.stopped_early, "participants_per_round": participants,
        "protocol": "standard: heads and tails, among all entities, filtered",
        **protocol_metrics(test, len(split.clients)),
        "reference_protocol": {"protocol": "reference: tails only, among the client's entities, filtered",
                               **protocol_metrics(tests["reference"], len(split.clients))},
        "validation_protocol": protocol,
        "valid_mrr": valid["valid_mrr"],
        "clients": [{**{f"test_{m}": test[f"test_{m}_client{i}"] for m in METRICS},
                     "num_test": int(len(c.test)), "num_valid": int(len(c.valid)), "num_train": int(len(c.train))}
                    for i, c in enumerate(split.clients)],
        "train_seconds": result.train_seconds,
        "median_round_seconds": float(np.median(result.epoch_seconds)) if result.epoch_seconds else None,
    }
    if floats_up is not None:
        summary["communication"] = {
            "floats_up_per_round": float(np.mean(floats_up)) if floats_up else 0.0,
            "floats_down_per_round": float(np.mean(floats_up)) if floats_up else 0.0,
            "floats_total": float(2 * np.sum(floats_up)),
            # the FedE reference code sends the whole entity table each way
            "reference_floats_per_round_each_way": participants * entity_floats,
        }
    print(f"{setting}: test MRR {summary['test_mrr']:.4f}  Hits@1 {summary['test_hits@1']:.4f}  "
          f"Hits@10 {summary['test_hits@10']:.4f}  (standard protocol); MRR "
          f"{summary['reference_protocol']['test_mrr']:.4f} (reference protocol); best round {result.best_epoch} "
          f"of {result.epochs_done}", flush=True)
    return summary


# ---------------------------------------------------------------------------------------
# Plots and the comparison table
# ---------------------------------------------------------------------------------------
def mrr_limits(values) -> tuple[float, float]:
    """y limits that show the spread of these MRRs (within [0, 1], a tenth of the spread or at
    least 0.02 of margin): settings 0.01 apart stay apart on a plot of a large graph."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return -0.02, 1.02
    lo, hi = min(finite), max(finite)
    pad = max(0.02, 0.1 * (hi - lo))
    return max(-0.02, lo - pad), min(1.02, hi + pad)


def plot_round_curves(records: list[dict], path: Path, *, title: str = "") -> None:
    """Left: local training loss per round; right: validation MRR (overall and per client)."""
    if not records:
        return
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_mrr = fig.subplots(1, 2, sharex=True)  # both over the rounds run, also with one validation
    rounds = [r["epoch"] for r in records]
    ax_loss.plot(rounds, [r.get("train_loss", np.nan) for r in records])
    ax_loss.set(xlabel="round", ylabel="local training loss")
    evals = [r for r in records if "valid_mrr" in r]
    clients = sorted({k for r in evals for k in r if k.startswith("valid_mrr_client")}, key=lambda k: int(k[16:]))
    for k in clients:
        ax_mrr.plot([r["epoch"] for r in evals], [r[k] if r[k] is not None else np.nan for r in evals],
                    ".-", alpha=0.5, label=k.replace("valid_mrr_", ""))
    ax_mrr.plot([r["epoch"] for r in evals], [r["valid_mrr"] for r in evals], "k.-", label="weighted")
    shown = [r.get(k) for r in evals for k in (*clients, "valid_mrr")]
    ax_mrr.set(xlabel="round", ylabel="validation MRR (filtered)", ylim=mrr_limits(shown))
    for ax in (ax_loss, ax_mrr):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_mrr.legend(fontsize=7, ncol=2, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_comparison(curves: dict[str, list[dict]], path: Path, *, title: str = "", protocol: str = "standard") -> None:
    """Validation MRR (under `protocol`) per round, one line per setting."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for setting, records in curves.items():
        evals = [r for r in records if "valid_mrr" in r]
        ax.plot([r["epoch"] for r in evals], [r["valid_mrr"] for r in evals], ".-", label=setting)
    shown = [r["valid_mrr"] for records in curves.values() for r in records if "valid_mrr" in r]
    ax.set(xlabel="round", ylabel=f"validation MRR, {protocol} protocol", title=title, ylim=mrr_limits(shown))
    last = max((r["epoch"] for records in curves.values() for r in records), default=1)
    ax.set_xlim(0.5, last + 0.5)  # every round run, also when few were validated
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def fit_fusion(cfg: Config, kg, split, isolation_params, fede_params) -> dict:
    """The fourth setting: per client, w . (isolation score, FedE score) + b fitted on its
    validation triples (jaxdl.train.fusion), tested like the others under both protocols."""
    model = KGEModel(cfg.model, dim=cfg.dim, gamma=cfg.gamma, p=cfg.norm)
    start = time.perf_counter()
    data = fusion.fusion_data(model, isolation_params, model, fede_params, list(split.clients), kg.num_entities,
                              jax.random.fold_in(jax.random.key(cfg.seed), 1), num_negatives=cfg.neg)
    params, losses = fusion.train_fusion(data, epochs=cfg.fusion_epochs, batch_size=cfg.batch_size)
    params = jax.device_get(params)
    seconds = time.perf_counter() - start
    score = client_scorer(fusion.FusionScores(model, model), split, kg,
                          batch_size=default_batch_size(kg.num_entities, 2 * model.entity_dim))
    both = {"isolation": isolation_params, "fede": fede_params, "fusion": params}
    tests = {p: score("test", both, protocol=p) for p in PROTOCOLS}
    summary = {"setting": "fusion", "protocol": "standard: heads and tails, among all entities, filtered",
               **protocol_metrics(tests["standard"], split.num_clients),
               "reference_protocol": {"protocol": "reference: tails only, among the client's entities, filtered",
                                      **protocol_metrics(tests["reference"], split.num_clients)},
               "weights": np.asarray(params["w"]).tolist(), "bias": np.asarray(params["b"]).tolist(),
               "fit_epochs": cfg.fusion_epochs, "fit_loss_first_last": [np.asarray(losses[0]).tolist(),
                                                                         np.asarray(losses[-1]).tolist()],
               "best_round": None, "rounds": None, "train_seconds": seconds}
    print(f"fusion: test MRR {summary['test_mrr']:.4f} (standard protocol); MRR "
          f"{summary['reference_protocol']['test_mrr']:.4f} (reference protocol); weights (isolation, FedE) per "
          f"client {[tuple(round(v, 3) for v in w) for w in summary['weights']]}", flush=True)
    return summary


def comparison_table(summaries: dict[str, dict]) -> dict:
    """Rows per setting under both protocols, and the ordering check isolation < FedE <=
    collection (+ tolerance) under each."""
    rows = {}
    for s, summary in summaries.items():
        reference = summary["reference_protocol"]
        rows[s] = {**{f"test_{m}": summary[f"test_{m}"] for m in METRICS},
                   "test_mrr_per_client": summary["test_mrr_per_client"],
                   **{f"reference_test_{m}": reference[f"test_{m}"] for m in METRICS},
                   "reference_test_mrr_per_client": reference["test_mrr_per_client"],
                   "best_round": summary["best_round"], "rounds": summary["rounds"],
                   "train_seconds": summary["train_seconds"]}
    out = {"protocols": {"standard": "heads and tails, among all entities, filtered",
                         "reference": "tails only, among the client's entities, filtered (the FedE reference code)"},
           "rows": rows}
    if all(s in summaries for s in fed.SETTINGS):
        for prefix, name in (("", "standard"), ("reference_", "reference")):
            iso, fede, col = (rows[s][f"{prefix}test_mrr"] for s in ("isolation", "fede", "collection"))
            out[name] = {"fede_minus_isolation": fede - iso, "collection_minus_fede": col - fede,
                         "ordering_holds": bool(iso < fede <= col + ORDERING_TOLERANCE)}
        out["tolerance"] = ORDERING_TOLERANCE
        out["ordering_holds"] = out["standard"]["ordering_holds"] and out["reference"]["ordering_holds"]
    return out


def format_table(table: dict) -> str:
    head = (f"{'setting':<11} {'MRR':>7} {'MR':>7} {'H@1':>7} {'H@3':>7} {'H@10':>7}  {'ref MRR':>7} "
            f"{'ref H@10':>8}  per-client MRR")
    lines = ["test, standard protocol: heads and tails among all entities; ref: the FedE reference code's "
             "(tails among the client's entities); both filtered", head, "-" * len(head)]
    for s, row in table["rows"].items():
        per = " ".join(f"{v:.3f}" if v is not None else "  -  " for v in row["test_mrr_per_client"])
        lines.append(f"{s:<11} {row['test_mrr']:7.4f} {row['test_mr']:7.2f} {row['test_hits@1']:7.4f} "
                     f"{row['test_hits@3']:7.4f} {row['test_hits@10']:7.4f}  {row['reference_test_mrr']:7.4f} "
                     f"{row['reference_test_hits@10']:8.4f}  {per}")
    if "ordering_holds" in table:
        lines.append(f"isolation < FedE <= collection (+{table['tolerance']}): standard "
                     f"{table['standard']['ordering_holds']}, reference {table['reference']['ordering_holds']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------
def main(cfg: Config):
    kg, split = load_inputs(cfg)
    if cfg.export_split:
        save_reference_split(cfg.export_split, split)
        print(f"wrote the split ({split.num_clients} clients) in the FedE reference code's format to "
              f"{cfg.export_split}", flush=True)
        return None
    print(f"{kg.source or 'synthetic graph'}: {kg.num_entities} entities, {kg.num_relations} relations; "
          + "; ".join(f"client {i}: {c['relations']} relations, {c['train']}/{c['valid']}/{c['test']} triples"
                      for i, c in enumerate(split.summary()["clients"])), flush=True)

    def save_split(run):
        run.write_bytes("split.npz", fed_data.split_bytes(split))

    if cfg.setting != "all":
        def build():
            task = setting_task(cfg, cfg.setting, kg, split)
            report = task.report
            task.report = lambda run, result: {**report(run, result), "split": split.summary()}
            return task

        return harness.run(cfg, "fede", build, save_inputs=save_split)

    def combine(run, outcomes: dict[str, harness.Outcome]) -> dict:
        summaries = {s: o.summary for s, o in outcomes.items()}
        summaries["fusion"] = fit_fusion(cfg, kg, split, outcomes["isolation"].result.best_params,
                                         outcomes["fede"].result.best_params)
        if run.is_writer:
            run.write_json("fusion.json", summaries["fusion"])
        table = comparison_table(summaries)
        print(format_table(table), flush=True)
        if run.is_writer:
            run.write_json("comparison.json", table)
            plot_comparison({s: o.result.records for s, o in outcomes.items()}, run.dir / "comparison.png",
                            title=f"{graph_name(kg)}: {cfg.clients} clients", protocol=cfg.protocol)
        return {"setting": "all", "split": split.summary(),
                "test_mrr": {s: summaries[s]["test_mrr"] for s in summaries},
                "test_mrr_per_client": {s: summaries[s]["test_mrr_per_client"] for s in summaries},
                "settings": summaries, **{k: v for k, v in table.items() if k != "rows"}}

    parts = {s: harness.Part(dataclasses.replace(cfg, setting=s), lambda s=s: setting_task(cfg, s, kg, split))
             for s in fed.SETTINGS}
    return harness.run(cfg, "fede", lambda: parts, combine=combine, save_inputs=save_split)
