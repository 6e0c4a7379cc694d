"""FB15k-237 at full scale: a FedE round at the FedE reference code's settings (time and
memory), a TransE epoch and the filtered test ranking, jaxdl beside PyKEEN.

FedE rounds (`fede_round_fb15k237_fed3`, `fede_round_umls_fed3`,
`fede_round_fb15k237_fed10_memory`): built by the fede experiment itself
(`experiments/fede.py`: `Config` parsed from the flags below, `make_split`, which is
`jaxdl.data.federated.split_by_relation(kg, C, seed=0)`, and `setting_task(cfg, "fede", ...)`),
as `make exp NAME=fede ARGS="--semantics reference --dim 128 --neg 256 --batch-size 512
--lr 1e-3 --gamma 10 --adversarial-temperature 1 --local-epochs 3 --entity-norm none"` trains:
TransE (L1) dim 128, 256 negatives, batch 512, Adam lr 1e-3, 3 local epochs, gamma 10,
self-adversarial temperature 1, no entity constraint, and the reference's behaviours (tail
corrupted, negatives filtered against the client's training triples, a fresh optimizer every
round, the whole table downloaded, the mean over every holder). The round is the experiment's
one-device round (`Rounds.build(None)`: on a CPU the clients one after the other; on an
accelerator the packed vmap), jitted with the state donated as the harness does.

  compile_ms      lower + compile of the round;
  jit_ms          one round, milliseconds: the median of `ROUNDS` rounds after one warm-up
                  round (Fed10: 1 round); `seconds_per_round` the same in seconds;
  valid_<protocol>_ms   one validation on the clients' valid triples under each protocol
                  (`client_scorer` of the experiment, i.e. `make_client_evaluator`): the
                  second call (the first compiles: `valid_<protocol>_first_ms`);
  array_bytes     what a round must hold: the stacked params, the Adam state (and step
                  counters) and the server table (`state_bytes`) plus the client data
                  (`data_bytes`: triples, masks, the negative filters), from the pytrees;
  round_peak_rss_bytes  the process's resident memory at its highest during the rounds
                  (sampled every few ms), `rss_before_rounds_bytes` before them;
  rss_vs_array_bytes    round_peak_rss_bytes / array_bytes (the process's other memory,
                  XLA's runtime, the graph on the host, ..., is in the numerator);
  maxrss_bytes    the process's lifetime peak (getrusage) when the record is written.
The reference implementation cannot be run from the bench: `peer_reference_note` says where
its figure is kept.

TransE epoch (`kge_epoch_fb15k237`): all 272,115 training triples, dim 200, 256 negatives
(head or tail), batch 1024, self-adversarial loss (gamma 9, temperature 1), Adam, L1, entity
vectors on the unit sphere (as PyKEEN's TransE keeps them), built by
`experiments/transe.py`'s `build(cfg, kg)`; `jit_ms` the median of 3 epochs after the first
(compiling) one. PyKEEN 1.11.1: `TransE(embedding_dim=200, scoring_fct_norm=1)`,
`SLCWATrainingLoop`, `NSSALoss`, basic sampler with 256 negatives, batch 1024, Adam, its epoch
gc.collect() disabled as in `workloads_kge`; its epoch is timed (median of the epochs after
the first, from a `post_epoch` callback) on `PYKEEN_BATCHES` batches of training triples
drawn at random (the same entity and relation tables) and scaled to the full epoch's batch
count: `peer_pykeen_batches_timed`, `peer_pykeen_scale`. speedup_vs_pykeen = peer / jaxdl.

Filtered test ranking (`kge_eval_fb15k237`): both directions against every entity, filtered
with train + valid + test, on a randomly initialised TransE dim 200:
`jaxdl.eval.link_prediction.make_evaluator(model, kg, splits=("test",))`, the second call
timed (`compile_ms` = first - second), against PyKEEN's `RankBasedEvaluator` (filtered,
batch `PYKEEN_EVAL_BATCH`) on `PYKEEN_EVAL_TRIPLES` random test triples (filtered with
`additional_filter_triples=[train, valid, test]`, the whole test set, as jaxdl's), scaled to
the whole test set: `peer_pykeen_test_triples_timed`, `peer_pykeen_scale`.

Negative filter (`kge_negatives_fb15k237`): drawing `NEG_BATCHES` batches of 512 training
triples' 256 corruptions each (one side per positive, as `--corrupt both`) and masking those
that are training triples (`jaxdl.data.kg.corrupt` with `known`: each positive searches only
its (h, r)'s run of known tails or its (t, r)'s run of known heads), beside the same draw
masked by a search over every known pair (`contains` on the (B, K) corrupted triples, as
`--corrupt mixed` does) and the draw alone; `jit_ms`, `full_search_ms`, `draw_only_ms` per
batch (median of `time_call`), `speedup_vs_full_search`; the masks are checked equal.

Graphs: ../shared/data/kg/{fb15k237,umls} (benchmark only; skipped with a note when absent).
Quick mode skips every workload here with a note: they take minutes.
"""
from __future__ import annotations

import functools
import resource
import statistics
import threading
import time
from pathlib import Path

import jax
import numpy as np
import psutil

from benchmarks.peers import import_torch
from benchmarks.registry import BenchContext, Workload
from benchmarks.timing import time_call, time_once
from benchmarks.workloads_kge import pykeen_epoch_ms, pykeen_factories
from jaxdl.cli import load_experiment
from jaxdl.config import parse_config
from jaxdl.data.kg import KG, contains, corrupt, load_kg, triple_set
from jaxdl.devices.memory import tree_bytes
from jaxdl.eval.link_prediction import make_evaluator
from jaxdl.models.kge import KGEModel
from jaxdl.train.step import init_state

GROUP = "fb15k"
FEDE_SETTINGS = {"dim": 128, "neg": 256, "batch_size": 512, "lr": 1e-3, "local_epochs": 3, "gamma": 10.0,
                 "adversarial_temperature": 1.0, "entity_norm": "none", "semantics": "reference"}
KGE_SETTINGS = {"dim": 200, "neg": 256, "batch_size": 1024, "loss": "nssa", "optimizer": "adam", "lr": 1e-3,
                "norm": 1, "gamma": 9.0, "adversarial_temperature": 1.0, "entity_norm": "sphere"}
ROUNDS = 3  # timed rounds after one warm-up round (Fed3)
EPOCHS = 3  # timed jaxdl epochs after the compiling one
# PyKEEN's whole epoch and whole test ranking take many minutes on a small CPU at these settings:
# both are timed on a random part and scaled to the whole.
PYKEEN_BATCHES = 8  # PyKEEN's epoch timed on this many batches, scaled to the full epoch's count
PYKEEN_EPOCHS = 3  # of which the first is left out of the median
PYKEEN_EVAL_TRIPLES = 1024  # test triples PyKEEN ranks (both directions), scaled to the whole test set
PYKEEN_EVAL_BATCH = 256
NEG_BATCHES = 20  # batches per timed call of the negative filter workload
REFERENCE_NOTE = ("the FedE reference code's seconds per round on this split cannot be run from the bench; "
                  "its figure is recorded in the README")


def _flags(settings: dict) -> list[str]:
    return [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def _folder(ctx: BenchContext, graph: str, record: dict) -> Path | None:
    """The graph's folder, or None with the record marked skipped and a note (quick mode, no data)."""
    if ctx.quick:
        note = "fb15k workloads: skipped in quick mode (they take minutes)"
        if note not in ctx.notes:
            ctx.notes.append(note)
        record["skipped"] = "quick mode: minutes at full scale"
        return None
    folder = ctx.shared_data / "kg" / graph if ctx.shared_data is not None else None
    if folder is None or not folder.is_dir():
        ctx.notes.append(f"{record['name']}: ../shared/data/kg/{graph} not found; skipped")
        record["skipped"] = "data not found"
        return None
    return folder


@functools.lru_cache(maxsize=2)
def _graph(folder: Path) -> KG:
    return load_kg(folder)


class PeakRSS:
    """Within the block, the process's resident memory sampled every `interval` seconds on a
    thread: `start`, `peak` (bytes)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = 0

    def _watch(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self):
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        return False


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


# ---------------------------------------------------------------------------------------
# FedE rounds
# ---------------------------------------------------------------------------------------
def fede_setup(folder: Path, clients: int, settings: dict = FEDE_SETTINGS):
    """(cfg, kg, split, task) exactly as `make exp NAME=fede` builds setting 'fede' with the
    flags of `settings` and `--clients C`."""
    fede = load_experiment("fede")
    cfg = parse_config(fede.Config, ["--data", str(folder), "--clients", str(clients), *_flags(settings)], "fede")
    kg = _graph(folder)
    split = fede.make_split(cfg, kg)
    return fede, cfg, kg, split, fede.setting_task(cfg, "fede", kg, split)


def _fede_workload(name: str, graph: str, clients: int, rounds: int, *, validate: bool, settings: dict = FEDE_SETTINGS):
    def run(ctx: BenchContext) -> dict:
        record: dict = {"name": name, "graph": graph, "clients": clients,
                        **{f"setting_{k}": v for k, v in settings.items()}}
        folder = _folder(ctx, graph, record)
        if folder is None:
            return record
        fede, cfg, kg, split, task = fede_setup(folder, clients, settings)
        data = task.epoch.data
        state = jax.device_put(task.state())  # the experiment hands its state over as a function
        state_bytes, data_bytes = tree_bytes(state), tree_bytes(data)
        params_bytes, opt_bytes = tree_bytes(state.clients.params), tree_bytes(state.clients.opt_state)
        keys = iter(jax.random.split(jax.random.key(1), rounds + 1))
        jitted = jax.jit(task.epoch.build(None), donate_argnums=0)  # as the harness: state donated
        t0 = time.perf_counter()
        with PeakRSS() as compile_mem:
            compiled = jitted.lower(state, data, jax.random.key(0)).compile()
        compile_ms = 1e3 * (time.perf_counter() - t0)
        with PeakRSS() as mem:
            state, _, warm_ms = _timed_round(compiled, state, data, next(keys))
            round_ms = []
            for _ in range(rounds):
                state, metrics, ms = _timed_round(compiled, state, data, next(keys))
                round_ms.append(ms)
        array_bytes = state_bytes + data_bytes
        record.update({
            "num_entities": kg.num_entities, "num_relations": kg.num_relations,
            "client_train_sizes": split.sizes("train").tolist(),
            "compile_ms": compile_ms, "compile_peak_rss_bytes": compile_mem.peak,
            "warmup_round_ms": warm_ms, "round_ms_samples": round_ms, "jit_ms": statistics.median(round_ms),
            "seconds_per_round": statistics.median(round_ms) / 1e3, "rounds_timed": rounds,
            "last_round_loss": float(metrics["loss"]), "last_round_finite": bool(metrics["finite"]),
            "params_bytes": params_bytes, "adam_state_bytes": opt_bytes, "state_bytes": state_bytes,
            "data_bytes": data_bytes, "array_bytes": array_bytes,
            "rss_before_rounds_bytes": mem.start, "round_peak_rss_bytes": mem.peak,
            "rss_vs_array_bytes": mem.peak / array_bytes,
            "rss_growth_vs_array_bytes": (mem.peak - mem.start) / array_bytes,
            "peer_reference_note": REFERENCE_NOTE})
        if validate:
            model = KGEModel(cfg.model, dim=cfg.dim, gamma=cfg.gamma, p=cfg.norm)
            score = fede.client_scorer(model, split, kg)
            params = task.params_of(jax.device_get(state))
            for protocol in ("standard", "reference"):
                first = time_once(lambda: score("valid", params, protocol=protocol))
                t0 = time.perf_counter()
                metrics = score("valid", params, protocol=protocol)
                record[f"valid_{protocol}_first_ms"] = first
                record[f"valid_{protocol}_ms"] = 1e3 * (time.perf_counter() - t0)
                record[f"valid_{protocol}_mrr"] = float(metrics["valid_mrr"])
        record["maxrss_bytes"] = _maxrss_bytes()
        return record

    return run


def _timed_round(compiled, state, data, key):
    """(state, metrics, milliseconds) of one round, synchronised."""
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled(state, data, key))
    return state, metrics, 1e3 * (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------
# TransE epoch and evaluation, beside PyKEEN
# ---------------------------------------------------------------------------------------
def transe_setup(folder: Path):
    transe = load_experiment("transe")
    cfg = parse_config(transe.Config, ["--data", str(folder), *_flags(KGE_SETTINGS)], "transe")
    return cfg, transe.build(cfg, _graph(folder))


def _import_pykeen(ctx: BenchContext, name: str):
    """torch (threads as ctx says) when PyKEEN is installed, else None with a note."""
    try:  # deferred: pykeen is optional, only installed by `make peers`
        import pykeen  # noqa: F401
    except ImportError:
        ctx.notes.append(f"{name}: PyKEEN not installed (make peers); jaxdl figures only")
        return None
    return import_torch(ctx)


def pykeen_epoch(folder: Path, *, batches: int, epochs: int, seed: int = 0) -> dict:
    """PyKEEN's SLCWA epoch at KGE_SETTINGS on `batches` random batches of the training triples
    (every entity and relation kept): epoch ms (median of the epochs after the first) and
    that scaled to the full training set's batch count."""
    import torch
    from pykeen.losses import NSSALoss
    from pykeen.models import TransE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import TriplesFactory

    train, _, _ = pykeen_factories(folder)
    B = KGE_SETTINGS["batch_size"]
    n_all = train.num_triples
    full_batches = -(-n_all // B)
    n = min(n_all, batches * B)
    pick = torch.from_numpy(np.random.default_rng(seed).permutation(n_all)[:n])
    subset = TriplesFactory(mapped_triples=train.mapped_triples[pick], entity_to_id=train.entity_to_id,
                            relation_to_id=train.relation_to_id)
    model = TransE(triples_factory=train, embedding_dim=KGE_SETTINGS["dim"], scoring_fct_norm=KGE_SETTINGS["norm"],
                   random_seed=seed, loss=NSSALoss(margin=KGE_SETTINGS["gamma"],
                                                   adversarial_temperature=KGE_SETTINGS["adversarial_temperature"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=KGE_SETTINGS["lr"])
    loop = SLCWATrainingLoop(model=model, triples_factory=subset, optimizer=optimizer, negative_sampler="basic",
                             negative_sampler_kwargs={"num_negs_per_pos": KGE_SETTINGS["neg"]})
    epoch_ms = pykeen_epoch_ms(loop, subset, epochs=epochs, batch_size=B)
    timed = statistics.median(epoch_ms[1:] or epoch_ms)
    scale = full_batches / -(-n // B)
    return {"epoch_ms": timed * scale, "subset_epoch_ms": timed, "subset_epoch_ms_samples": epoch_ms,
            "batches_timed": -(-n // B), "full_batches": full_batches, "scale": scale}


def _epoch_workload(ctx: BenchContext) -> dict:
    name = "kge_epoch_fb15k237"
    record: dict = {"name": name, "graph": "fb15k237", **{f"setting_{k}": v for k, v in KGE_SETTINGS.items()}}
    folder = _folder(ctx, "fb15k237", record)
    if folder is None:
        return record
    cfg, setup = transe_setup(folder)
    state = init_state(setup.params, setup.optimizer)
    keys = iter(jax.random.split(jax.random.key(cfg.seed), EPOCHS + 1))
    out: list = []

    def one_epoch(key):
        nonlocal state
        state, metrics = setup.run_epoch(state, setup.data, key)
        out.append(metrics)
        return state

    first = time_once(one_epoch, next(keys))
    samples = [time_once(one_epoch, next(keys)) for _ in range(EPOCHS)]
    jit_ms = statistics.median(samples)
    record.update({"num_train": int(len(setup.kg.train)), "steps_per_epoch": -(-len(setup.kg.train) // cfg.batch_size),
                   "jit_ms": jit_ms, "epoch_ms_samples": samples, "first_epoch_ms": first,
                   "compile_ms": first - jit_ms, "epochs_timed": EPOCHS,
                   "last_epoch_loss": float(np.mean(jax.device_get(out[-1]["loss"])))})
    if _import_pykeen(ctx, name) is not None:
        peer = pykeen_epoch(folder, batches=PYKEEN_BATCHES, epochs=PYKEEN_EPOCHS)
        record.update({"peer_pykeen_ms": peer["epoch_ms"], "peer_pykeen_part_epoch_s": peer["subset_epoch_ms"] / 1e3,
                       "peer_pykeen_part_epoch_s_samples": [ms / 1e3 for ms in peer["subset_epoch_ms_samples"]],
                       "peer_pykeen_batches_timed": peer["batches_timed"],
                       "peer_pykeen_full_batches": peer["full_batches"], "peer_pykeen_scale": peer["scale"],
                       "speedup_vs_pykeen": peer["epoch_ms"] / jit_ms})
    return record


def pykeen_eval(folder: Path, *, triples: int, batch_size: int, seed: int = 0) -> dict:
    """PyKEEN's filtered rank-based evaluation (both directions, filtered with train + valid +
    test) of `triples` random test triples on a random-init TransE at KGE_SETTINGS: ms, and
    that scaled to the whole test set."""
    import torch
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import TransE

    train, valid, test = pykeen_factories(folder)
    model = TransE(triples_factory=train, embedding_dim=KGE_SETTINGS["dim"], scoring_fct_norm=KGE_SETTINGS["norm"],
                   random_seed=seed)
    n_all = test.num_triples
    n = min(n_all, triples)
    pick = torch.from_numpy(np.random.default_rng(seed).permutation(n_all)[:n])
    t0 = time.perf_counter()
    result = RankBasedEvaluator().evaluate(model, test.mapped_triples[pick], batch_size=batch_size, use_tqdm=False,
                                          additional_filter_triples=[train.mapped_triples, valid.mapped_triples,
                                                                     test.mapped_triples])
    ms = 1e3 * (time.perf_counter() - t0)
    return {"eval_ms": ms * n_all / n, "timed_ms": ms, "triples_timed": n, "test_triples": int(n_all),
            "scale": n_all / n, "mrr": float(result.get_metric("both.realistic.inverse_harmonic_mean_rank"))}


def _eval_workload(ctx: BenchContext) -> dict:
    name = "kge_eval_fb15k237"
    record: dict = {"name": name, "graph": "fb15k237", "model": "transe", "dim": KGE_SETTINGS["dim"],
                    "filter": "train+valid+test", "directions": "heads and tails"}
    folder = _folder(ctx, "fb15k237", record)
    if folder is None:
        return record
    _, setup = transe_setup(folder)
    evaluate = make_evaluator(setup.model, setup.kg, splits=("test",))
    first = time_once(lambda: evaluate(setup.params))
    t0 = time.perf_counter()
    metrics = evaluate(setup.params)
    jit_ms = 1e3 * (time.perf_counter() - t0)
    record.update({"test_triples": int(len(setup.kg.test)), "jit_ms": jit_ms, "first_call_ms": first,
                   "compile_ms": first - jit_ms, "random_init_test_mrr": float(metrics["test_mrr"])})
    if _import_pykeen(ctx, name) is not None:
        peer = pykeen_eval(folder, triples=PYKEEN_EVAL_TRIPLES, batch_size=PYKEEN_EVAL_BATCH)
        record.update({"peer_pykeen_ms": peer["eval_ms"], "peer_pykeen_batch_size": PYKEEN_EVAL_BATCH,
                       "peer_pykeen_part_s": peer["timed_ms"] / 1e3,
                       "peer_pykeen_test_triples_timed": peer["triples_timed"],
                       "peer_pykeen_test_triples": peer["test_triples"], "peer_pykeen_scale": peer["scale"],
                       "peer_pykeen_random_init_test_mrr_on_part": peer["mrr"],
                       "speedup_vs_pykeen": peer["eval_ms"] / jit_ms})
    return record


def _negatives_workload(ctx: BenchContext) -> dict:
    name = "kge_negatives_fb15k237"
    B, K = 512, 256
    record: dict = {"name": name, "graph": "fb15k237", "batch_size": B, "neg": K, "corrupt": "both",
                    "batches_per_call": NEG_BATCHES}
    folder = _folder(ctx, "fb15k237", record)
    if folder is None:
        return record
    kg = _graph(folder)
    E, R = kg.num_entities, kg.num_relations
    known = triple_set(kg.train, E, R)
    rows = np.random.default_rng(0).integers(0, len(kg.train), (NEG_BATCHES, B))
    batches_SxBx3 = jax.device_put(kg.train[rows])
    keys = jax.random.split(jax.random.key(0), NEG_BATCHES)

    def per_batch(draw):
        return jax.jit(lambda keys, batches: jax.lax.map(lambda kb: draw(*kb), (keys, batches)))

    def narrowed(key, batch):
        return corrupt(key, batch, num_entities=E, num_negatives=K, mode="both", known=known).mask_BxK

    def full_search(key, batch):
        neg = corrupt(key, batch, num_entities=E, num_negatives=K, mode="both")
        return ~contains(known, neg.heads_BxK, batch[:, 1:2], neg.tails_BxK)

    def draw_only(key, batch):
        return corrupt(key, batch, num_entities=E, num_negatives=K, mode="both").heads_BxK

    fns = {"jit_ms": per_batch(narrowed), "full_search_ms": per_batch(full_search),
           "draw_only_ms": per_batch(draw_only)}
    masks = [np.asarray(fns[k](keys, batches_SxBx3)) for k in ("jit_ms", "full_search_ms")]
    if not np.array_equal(*masks):
        raise AssertionError(f"{name}: the narrowed and the full search disagree")
    for field_name, fn in fns.items():
        record[field_name] = time_call(fn, keys, batches_SxBx3, warmup=1, repeats=5)["median_ms"] / NEG_BATCHES
    record.update({"masked_fraction": float(1 - masks[0].mean()),
                   "speedup_vs_full_search": record["full_search_ms"] / record["jit_ms"]})
    return record


def workloads() -> list[Workload]:
    return [Workload("fede_round_umls_fed3", _fede_workload("fede_round_umls_fed3", "umls", 3, ROUNDS, validate=True),
                     group=GROUP),
            Workload("fede_round_fb15k237_fed3",
                     _fede_workload("fede_round_fb15k237_fed3", "fb15k237", 3, ROUNDS, validate=True), group=GROUP),
            Workload("fede_round_fb15k237_fed3_shared",
                     _fede_workload("fede_round_fb15k237_fed3_shared", "fb15k237", 3, ROUNDS, validate=False,
                                    settings={**FEDE_SETTINGS, "negatives": "batch"}), group=GROUP),
            Workload("fede_round_umls_fed3_shared",
                     _fede_workload("fede_round_umls_fed3_shared", "umls", 3, ROUNDS, validate=False,
                                    settings={**FEDE_SETTINGS, "negatives": "batch"}), group=GROUP),
            Workload("fede_round_fb15k237_fed10_memory",
                     _fede_workload("fede_round_fb15k237_fed10_memory", "fb15k237", 10, 1, validate=False),
                     group=GROUP),
            Workload("kge_epoch_fb15k237", _epoch_workload, group=GROUP),
            Workload("kge_eval_fb15k237", _eval_workload, group=GROUP),
            Workload("kge_negatives_fb15k237", _negatives_workload, group=GROUP)]
