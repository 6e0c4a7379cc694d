"""Knowledge-graph embedding (TransE, RotatE, DistMult, ComplEx) with self-adversarial negative
sampling, early stopping on filtered validation MRR, and filtered link prediction.

    make exp NAME=transe                                        # synthetic grid graph, offline
    make exp NAME=transe ARGS="--data ../shared/data/kg/umls"   # a folder of train/valid/test.txt
    make exp NAME=transe ARGS="--data DIR --model rotate"       # RotatE (or distmult)

Defaults are PyKEEN's comparison settings in `make bench`: TransE with the L1 norm, dim 50,
gamma 9 (PyKEEN's NSSA margin), Adam lr 0.01, batch 256, up to 100 epochs, 16 negatives per
positive (head or tail replaced, uniform over the other entities), self-adversarial weights
with alpha = 1, entity vectors kept in the unit ball (||e|| <= 1, a form of TransE's norm
constraint, Bordes et al. 2013; `--entity-norm sphere` is PyKEEN's ||e|| = 1). Every triple
is used once per epoch (the last batch padded and masked). Validation MRR every 5 epochs
drives early stopping (patience 20 evaluations: on small graphs such as Nations validation
MRR is flat and noisy after a few epochs, and a short patience stops on noise); test
metrics are those of the best validation epoch (`test_mrr_last_epoch` in summary.json: the
last epoch's, the protocol PyKEEN is run with).

On the default synthetic graph (100 entities on a 10x10 grid, 8 "move by (dx, dy)"
relations; see `jaxdl.data.kg.synthetic_kg`) the preset is batch 64, gamma 4, no entity
constraint: TransE and RotatE recover the planted grid; DistMult, whose score is symmetric
in h and t, cannot tell a move from its reverse. README: real runs on these and on Nations
and UMLS.

Output (run folder): summary.json (test_mrr, test_mr, test_hits@1/3/10, epoch_seconds =
median training epoch, evaluation excluded; graph counts and dropped triples),
entity_embeddings.npy / relation_embeddings.npy (rows = ids) with entities.tsv /
relations.tsv (id<TAB>name), metrics.jsonl, curves.png, checkpoints/.
"""
from __future__ import annotations

from dataclasses import field
from functools import partial
from pathlib import Path
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import harness
from jaxdl.config import KGEOptions, TrainConfig, defaults, doc
from jaxdl.data.kg import (CORRUPT_MODES, KG, epoch_batches, id_maps, load_kg, subsampling_weights, synthetic_kg,
                           triple_set)
from jaxdl.data.named import graph_folder
from jaxdl.errors import JaxdlError
from jaxdl.eval.link_prediction import make_evaluator
from jaxdl.losses.kge import make_loss_fn
from jaxdl.models import kge
from jaxdl.train.epoch import make_scan_epoch
from jaxdl.train.optim import make_optimizer
from jaxdl.train.step import init_state, make_train_step

SMOKE_ARGS = ["--max-epochs", "3", "--eval-every", "1", "--dim", "8"]


@defaults(max_epochs=100, lr=0.01, batch_size=256, optimizer="adam", ckpt_every=25)
class Config(KGEOptions, TrainConfig):
    """Knowledge-graph embedding with filtered link prediction."""

    corrupt: str = field(default="both", metadata=doc(
        "which side negatives replace: one side per positive (both; PyKEEN and Sun et al.), one per "
        "negative (mixed), head or tail", choices=CORRUPT_MODES))
    filter_negatives: bool = field(default=False, metadata=doc("mask negatives that are training triples"))
    eval_batch_size: int = field(default=0, metadata=doc("queries per ranking chunk (0: sized to the graph)", ge=0))
    subsampling_weight: bool = field(default=False, metadata=doc(
        "weight each triple by 1/sqrt(c(h, r) + c(t, r^-1)), the counts of triples sharing its head and "
        "relation or tail and inverse relation (the RotatE code's subsampling weight)"))
    lr_decay_epoch: int = field(default=0, metadata=doc(
        "divide the learning rate by 10 from this epoch on, as the RotatE code does half-way (0: constant)", ge=0))

    def validate(self) -> None:
        super().validate()
        if self.lr_decay_epoch and self.optimizer == "sgd":
            raise JaxdlError("--lr-decay-epoch needs an optax optimizer (--optimizer optax_sgd, momentum, adam "
                             "or adamw); --optimizer sgd keeps a constant rate")

    PRESETS: ClassVar = {"data": {"": {"batch_size": 64, "gamma": 4.0, "entity_norm": "none"}},
                         "model": {"rotate": {"entity_norm": "none"}, "distmult": {"entity_norm": "none"},
                                   "complex": {"entity_norm": "none"}}}


class Setup(NamedTuple):
    kg: KG
    model: kge.KGEModel
    params: dict
    optimizer: object
    loss_fn: object  # (params, batch, key) -> (loss, metrics)
    run_epoch: object  # jitted (state, data, key) -> (state, metrics), one device
    data: dict


def load_graph(cfg: Config) -> KG:
    return load_kg(graph_folder(cfg.data, cfg.data_dir)) if cfg.data else synthetic_kg(cfg.seed)


def build(cfg: Config, kg: KG | None = None) -> Setup:
    """Graph, model, initial params, optimizer, loss and the jitted one-device epoch for `cfg`."""
    kg = load_graph(cfg) if kg is None else kg
    if cfg.batch_size > len(kg.train):
        raise JaxdlError(f"--batch-size {cfg.batch_size}: larger than the {len(kg.train)} training triples")
    if kg.num_entities < 2:
        raise JaxdlError("the training split names fewer than 2 entities: nothing to rank")
    model = kge.KGEModel(cfg.model, dim=cfg.dim, gamma=cfg.gamma, p=cfg.norm)
    params = kge.init(jax.random.key(cfg.seed), model, kg.num_entities, kg.num_relations)
    optimizer = kge.with_entity_constraint(make_optimizer(cfg.optimizer, learning_rate(cfg, len(kg.train))),
                                           cfg.entity_norm)
    params = kge.constrain_entities(params, cfg.entity_norm)
    known = triple_set(kg.train, kg.num_entities, kg.num_relations) if cfg.filter_negatives else None
    loss_fn = make_loss_fn(model, num_entities=kg.num_entities, num_negatives=cfg.neg, loss=cfg.loss,
                           temperature=cfg.adversarial_temperature, margin=cfg.margin, corrupt_mode=cfg.corrupt,
                           known=known, regularizer=cfg.regularizer, regularizer_weight=cfg.regularizer_weight,
                           shared_negatives=cfg.negatives == "batch")
    run_epoch = make_scan_epoch(make_train_step(loss_fn, optimizer), partial(epoch_batches, batch_size=cfg.batch_size))
    data = {"triples": jnp.asarray(kg.train)}
    if cfg.subsampling_weight:
        data["weight"] = jnp.asarray(subsampling_weights(kg.train, kg.num_relations))
    return Setup(kg, model, params, optimizer, loss_fn, run_epoch, data)


def learning_rate(cfg: Config, num_train: int):
    """--lr, or with --lr-decay-epoch E a schedule of optimizer steps: lr for E epochs'
    steps (ceil(train / batch) each, on any number of devices), lr / 10 after."""
    if not cfg.lr_decay_epoch:
        return cfg.lr
    steps_per_epoch = -(-num_train // cfg.batch_size)
    return optax.piecewise_constant_schedule(cfg.lr, {cfg.lr_decay_epoch * steps_per_epoch: 0.1})


def task(cfg: Config, s: Setup) -> harness.Task:
    """Train with early stopping on validation MRR; test the best validation epoch's params.
    On several devices each takes its columns of every (padded, masked) global batch; the
    loss is then a mean of per-device means, equal to the one-device loss except in an
    epoch's last, padded batch."""
    kg, model = s.kg, s.model
    evaluate = make_evaluator(model, kg, splits=("valid", "test"), batch_size=cfg.eval_batch_size or None)

    def report(run, result: harness.Result) -> dict:
        final, last = evaluate(result.best_params), evaluate(result.params)
        if run.is_writer:
            run.save_array("entity_embeddings.npy", result.best_params["entity"])
            run.save_array("relation_embeddings.npy", result.best_params["relation"])
            for name, text in id_maps(kg).items():
                run.write_text(name, text)
        print(f"test MRR {final['test_mrr']:.4f}  MR {final['test_mr']:.2f}  Hits@1 {final['test_hits@1']:.4f}  "
              f"Hits@3 {final['test_hits@3']:.4f}  Hits@10 {final['test_hits@10']:.4f}  "
              f"(best validation epoch {result.best_epoch})", flush=True)
        return {"model": cfg.model, "data": cfg.data or "synthetic", **kg.counts(), **final,
                "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
                "test_mrr_last_epoch": last["test_mrr"], "test_hits@10_last_epoch": last["test_hits@10"],
                "epoch_seconds": float(np.median(result.epoch_seconds)) if result.epoch_seconds else None}

    return harness.Task(
        state=init_state(s.params, s.optimizer), loss_fn=s.loss_fn, optimizer=s.optimizer,
        epoch=harness.Batches(s.data, partial(epoch_batches, batch_size=cfg.batch_size), batch_size=cfg.batch_size),
        evaluate=make_evaluator(model, kg, splits=("valid",), batch_size=cfg.eval_batch_size or None),
        eval_every=cfg.eval_every, monitor=("valid_mrr", "max"), patience=cfg.patience, min_delta=cfg.min_delta,
        report=report,
        title=f"{cfg.model} dim {cfg.dim} on {Path(cfg.data).name if cfg.data else 'the synthetic grid'} "
              f"({cfg.loss}, {cfg.neg} negatives, {cfg.optimizer} lr {cfg.lr})")


def main(cfg: Config):
    s = build(cfg)
    print(f"{s.kg.source}: {s.kg.num_entities} entities, {s.kg.num_relations} relations, "
          f"{len(s.kg.train)}/{len(s.kg.valid)}/{len(s.kg.test)} train/valid/test triples "
          f"(dropped {s.kg.dropped['valid']} valid, {s.kg.dropped['test']} test)", flush=True)
    return harness.run(cfg, "transe", lambda: task(cfg, s))
