"""Experiment configs as dataclasses, and their command line.

Every field of an experiment's `Config` becomes a flag (`max_epochs` -> `--max-epochs`);
`metadata` documents it and bounds it:

    lr: float = field(default=0.1, metadata=doc("learning rate", gt=0))

Fields are declared once, in option groups that experiments compose by inheritance:
`RunOptions` (seed, run folder, progress), `TrainOptions` (epochs, optimizer, batch),
`DeviceOptions` (`--devices`, `--parallel`) -- together `TrainConfig` -- and `KGEOptions`
(score function, negatives, evaluation cadence; transe and fede). An experiment changes an
inherited default with `@defaults(lr=(0.03, "the book"))`, which keeps the field's help
and bounds and names where the value comes from. Enumerated options are `Literal` types
built from the code that implements them, so `--help` lists them and they cannot drift.

Precedence, lowest first: field defaults < the experiment's PRESETS for a chosen value
(e.g. `--dataset fashion_mnist` brings the book's lr/batch/epochs) < the saved config of
a run being resumed < flags given on the command line. A config class's RESUME_DEFAULTS
name the values of fields a saved config may predate (the behaviour it was trained with,
where today's default differs).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from jaxdl.data.classification import DATASETS
from jaxdl.devices.data_parallel import MODES
from jaxdl.errors import JaxdlError
from jaxdl.losses.kge import LOSSES, REGULARIZERS
from jaxdl.models.init import WEIGHT_INITS
from jaxdl.models.kge import ENTITY_CONSTRAINTS, MODELS
from jaxdl.runs.run import PER_INVOCATION  # noqa: F401  (re-exported: the one list, kept with the run folder)
from jaxdl.train.optim import OPTIMIZERS

# The choices of enumerated options, taken from the code that implements them (so they cannot drift).
Optimizer = Literal[OPTIMIZERS]
Parallel = Literal[MODES]
KGEModel = Literal[MODELS]
EntityNorm = Literal[ENTITY_CONSTRAINTS]
KGELoss = Literal[LOSSES]
KGERegularizer = Literal[REGULARIZERS]
WeightInit = Literal[tuple(WEIGHT_INITS)]


def doc(help: str, *, gt=None, ge=None, le=None, lt=None, choices=None) -> dict:
    """Field metadata: a help line and optional bounds/choices checked on parse."""
    return {"help": help, "gt": gt, "ge": ge, "le": le, "lt": lt, "choices": choices}


@dataclass
class RunOptions:
    """Fields every experiment has: its seed and its run folder."""

    seed: int = field(default=0, metadata=doc("the run's one seed, 0..2^32-1; every key derives from it", ge=0,
                                              le=2**32 - 1))
    out: str = field(default="", metadata=doc("run folder (default runs/<experiment>/<timestamp>)"))
    resume: str = field(default="", metadata=doc("continue the run in this folder"))
    progress: bool = field(default=True, metadata=doc(
        "show progress: a bar on a terminal, one plain line per epoch in a log file or pipe"))
    compile_cache: bool = field(default=True, metadata=doc(
        "read and keep compiled programs in $JAXDL_DATA/compile (JAX's persistent compilation cache)"))

    PRESETS: ClassVar[dict[str, dict[Any, dict[str, Any]]]] = {}

    def validate(self) -> None:
        """Cross-field checks; raise JaxdlError. Experiments extend this."""


@dataclass
class TrainOptions(RunOptions):
    """Fields of every experiment that trains with the harness."""

    max_epochs: int = field(default=10, metadata=doc(
        "epochs to train, at most 10^6 (resume with a larger value to extend)", gt=0, le=1_000_000))
    lr: float = field(default=0.1, metadata=doc("learning rate", gt=0))
    batch_size: int = field(default=256, metadata=doc("global minibatch size", gt=0))
    optimizer: Optimizer = field(default="sgd", metadata=doc("optimizer ('sgd' is written from scratch)"))
    ckpt_every: int = field(default=5, metadata=doc("checkpoint every N epochs (and on SIGINT/SIGTERM)", gt=0,
                                                    le=1_000_000))
    tensorboard: bool = field(default=True, metadata=doc("write TensorBoard scalars to <run>/tensorboard"))
    debug_nans: bool = field(default=False, metadata=doc("turn on jax_debug_nans to find the op that made a NaN"))


@dataclass
class DeviceOptions:
    """Which devices a run uses, and the form of data parallelism over them."""

    devices: str = field(default="all", metadata=doc(
        "'all', an index (2: device 2 alone), indices (0,2,3), or a count (:2: the first two)"))
    parallel: Parallel = field(default=MODES[0], metadata=doc("data-parallel form"))


@dataclass
class TrainConfig(DeviceOptions, TrainOptions):
    """Training on devices: the options of every harness experiment."""




@dataclass
class DataOptions:
    """Where a data set's files are."""

    data_dir: str = field(default="", metadata=doc(
        "folder holding the data set's files (else $JAXDL_DATA, default ~/.cache/jaxdl; else a checksummed "
        "download)"))


@dataclass
class KGEOptions(DataOptions):
    """Knowledge-graph embedding: the graph, the score function, its loss and negatives, and
    the validation that drives early stopping."""

    data: str = field(default="", metadata=doc(
        "a named graph (nations, umls, kinships, wn18rr, fb15k237), a folder with train.txt, valid.txt, test.txt, "
        "or empty: the synthetic grid graph"))
    model: KGEModel = field(default="transe", metadata=doc("score function"))
    dim: int = field(default=50, metadata=doc("embedding size (complex size for RotatE and ComplEx), at most 2^20",
                                                gt=0, le=1 << 20))
    gamma: float = field(default=9.0, metadata=doc("margin gamma in the TransE/RotatE score gamma - distance "
                                                   "(PyKEEN's NSSA margin: 9)", gt=0))
    norm: int = field(default=1, metadata=doc("TransE distance norm", choices=(1, 2)))
    entity_norm: EntityNorm = field(default="ball", metadata=doc(
        "after each step keep entity vectors in the unit ball (||e|| <= 1), on the sphere (||e|| = 1, "
        "PyKEEN's TransE), or unconstrained"))
    loss: KGELoss = field(default="nssa", metadata=doc("self-adversarial (nssa) or uniform (ns) negative "
                                                       "sampling, or margin ranking"))
    adversarial_temperature: float = field(default=1.0, metadata=doc(
        "alpha of the self-adversarial weights softmax(alpha * score)", ge=0))
    margin: float = field(default=1.0, metadata=doc("margin of --loss margin", gt=0))
    regularizer: KGERegularizer = field(default="none", metadata=doc(
        "none, or n3: + weight * batch mean of |h|^3 + |r|^3 + |t|^3 summed over (complex) entries, Lacroix et "
        "al. 2018 (for ComplEx/DistMult on large graphs)"))
    regularizer_weight: float = field(default=0.0, metadata=doc("weight of --regularizer n3", ge=0))
    neg: int = field(default=16, metadata=doc("negatives per positive, at most 65536", gt=0, le=65536))
    negatives: str = field(default="pair", metadata=doc(
        "draw each positive's negatives (pair), or one set for the whole batch that every positive scores "
        "against (batch; each positive still sees K uniform draws, and the scoring becomes one product or "
        "distance table)", choices=("pair", "batch")))
    eval_every: int = field(default=5, metadata=doc("validation MRR every N epochs (rounds)", gt=0, le=1_000_000))
    patience: int = field(default=20, metadata=doc("stop after N validations without a better MRR", gt=0,
                                                       le=1_000_000))
    min_delta: float = field(default=0.0, metadata=doc(
        "a validation MRR is better only when it beats the best by more than this (0: any gain)", ge=0, lt=1))

    def validate(self) -> None:
        if self.model != "transe" and self.norm != 1:
            raise JaxdlError(f"--norm applies to TransE only (got --model {self.model})")
        if self.regularizer == "none" and self.regularizer_weight > 0:
            raise JaxdlError(f"--regularizer-weight {self.regularizer_weight} needs --regularizer n3")
        if self.regularizer != "none" and self.regularizer_weight == 0:
            raise JaxdlError(f"--regularizer {self.regularizer} needs a positive --regularizer-weight")




@dataclass
class ClassifierOptions(DataOptions):
    """The dense classifiers' data, loss and initialisation (softmax regression, the MLP)."""

    dataset: str = field(default="digits", metadata=doc(
        f"{', '.join(DATASETS)}, or a CSV file (a header row; numeric columns; --target names the label)"))
    target: str = field(default="", metadata=doc("the label column of a CSV --dataset (default: the last)"))
    loss: Literal["ce", "mse"] = field(default="ce", metadata=doc("cross-entropy or squared loss on one-hot targets"))
    sigma: float = field(default=0.01, metadata=doc("weight init N(0, sigma^2) (the book: 0.01)", ge=0))
    weight_init: WeightInit = field(default="normal", metadata=doc("weight initialiser"))

    # With --dataset fashion_mnist the book's settings apply (D2L's softmax regression and MLP).
    PRESETS: ClassVar = {"dataset": {"fashion_mnist": {"lr": 0.1, "batch_size": 256, "max_epochs": 10}}}

    def validate(self) -> None:
        if self.dataset not in DATASETS and not self.dataset.endswith(".csv"):
            raise JaxdlError(f"--dataset {self.dataset!r}: not one of {', '.join(DATASETS)}, nor a .csv file"
                             f"{did_you_mean(self.dataset, DATASETS)}")


def defaults(**values):
    """`@dataclass` for a config that also gives inherited fields new defaults, keeping their
    help and bounds: `@defaults(lr=(0.03, "the book"), batch_size=10)` -- a value, or
    (value, where it comes from), which `--help` shows. Use it instead of `@dataclass`."""

    def wrap(cls):
        if "__dataclass_fields__" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: use @defaults(...) instead of @dataclass, not both")
        inherited = {}
        for base in reversed(cls.__mro__[1:]):  # as dataclass collects them: later bases first
            inherited.update(base.__dict__.get("__dataclass_fields__", {}))
        hints = typing.get_type_hints(cls)
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for name, value in values.items():
            if name not in inherited:
                raise TypeError(f"{cls.__name__}: no inherited field {name!r} to give a default")
            value, source = value if isinstance(value, tuple) else (value, "")
            old = inherited[name]
            meta = dict(old.metadata or {})
            if source:
                meta["source"] = source
            annotations.setdefault(name, hints[name])
            setattr(cls, name, field(default=value, metadata=meta))
        cls.__annotations__ = annotations
        return dataclass(cls)

    return wrap


def did_you_mean(word: str, known) -> str:
    """'; did you mean X?' for the closest of `known`, or ''."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit 2; we want one line
        if message.startswith("unrecognized arguments:"):
            flags = [w for w in message.split(":", 1)[1].split() if w.startswith("--")]
            if flags:
                known = [o for a in self._actions for o in a.option_strings if o not in ("-h", "--help")]
                raise JaxdlError(f"unknown flag {flags[0].split('=')[0]}{did_you_mean(flags[0].split('=')[0], known)} "
                                 f"(all flags: {self.prog} --help)")
        raise JaxdlError(message)


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is Literal:
        return type(typing.get_args(tp)[0])
    return tp


@functools.cache
def _type_hints(cls) -> dict[str, Any]:
    """typing.get_type_hints(cls), evaluated once per config class (it parses every annotation)."""
    return typing.get_type_hints(cls)


def choices_of(cls, name: str) -> tuple | None:
    """The allowed values of field `name`: its Literal type's, else its metadata's."""
    tp = _type_hints(cls)[name]
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name) or {}
    return tuple(meta["choices"]) if meta.get("choices") is not None else None


def _field_types(cls) -> dict[str, type]:
    hints = _type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(cls, prog: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=(cls.__doc__ or "").strip(), argument_default=argparse.SUPPRESS,
                     allow_abbrev=False)
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata or {}
        tp = types_[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        source = f", {meta['source']}" if meta.get("source") else ""
        help_ = f"{meta.get('help', '')} (default: {default!r}{source})"
        choices = choices_of(cls, f.name)
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else tp.__name__.upper()
        if tp is bool:
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(_flag(f.name), dest=f.name, type=_converter(f.name, tp), help=help_,
                                metavar=metavar)
    return parser


def _converter(name, tp):
    def convert(text: str):
        try:
            return tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {tp.__name__}, got {text!r}") from None

    convert.__name__ = tp.__name__
    return convert


def check_field_bounds(cfg) -> None:
    """Check every field's metadata bounds and choices; raise JaxdlError naming the flag."""
    for f in dataclasses.fields(cfg):
        meta = f.metadata or {}
        value = getattr(cfg, f.name)
        flag = _flag(f.name)
        choices = choices_of(type(cfg), f.name)
        if choices is not None and value not in choices:
            raise JaxdlError(f"{flag}: {value!r} is not one of {', '.join(map(str, choices))}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value != value:  # NaN
            raise JaxdlError(f"{flag}: must be a number, got nan")
        if value in (float("inf"), float("-inf")) and any(meta.get(k) is not None for k in ("gt", "ge", "lt", "le")):
            raise JaxdlError(f"{flag}: must be finite, got {value}")
        for key, ok, word in (("gt", lambda v, b: v > b, ">"), ("ge", lambda v, b: v >= b, ">="),
                              ("lt", lambda v, b: v < b, "<"), ("le", lambda v, b: v <= b, "<=")):
            bound = meta.get(key)
            if bound is not None and not ok(value, bound):
                raise JaxdlError(f"{flag}: must be {word} {bound}, got {value}")


def check_field_types(cfg) -> None:
    """Every bool/int/float/str field holds a value of its type (a resumed run's config.json
    may not); ints are accepted for floats. Raise JaxdlError naming the flag."""
    hints = _type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        tp, value = _base_type(hints[f.name]), getattr(cfg, f.name)
        if tp not in (bool, int, float, str) or (value is None and type(None) in typing.get_args(hints[f.name])):
            continue
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, f.name, float(value))
        elif not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise JaxdlError(f"{_flag(f.name)}: expected {tp.__name__}, got {value!r}")


def from_dict(cls, values: dict):
    """Build a config from a (saved) dict, ignoring keys the class no longer has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def parse_config(cls, argv: list[str], prog: str):
    """argv -> validated config (see the module docstring for precedence)."""
    return make_config(cls, vars(build_parser(cls, prog).parse_args(argv)))


def make_config(cls, given: dict):
    """The validated config from the options `given` (field name -> value; the rest from the
    defaults, presets and a resumed run's config.json, as on the command line)."""
    names = {f.name for f in dataclasses.fields(cls)}
    for name in given:
        if name not in names:
            raise JaxdlError(f"unknown option {name!r}{did_you_mean(name, names)}")
    values = dataclasses.asdict(cls())
    for name, presets in cls.PRESETS.items():
        chosen = given.get(name, values[name])
        values.update(presets.get(chosen, {}))
    if given.get("resume"):
        saved = Path(given["resume"]) / "config.json"
        if not saved.is_file():
            raise JaxdlError(f"--resume {given['resume']}: not a run folder (no config.json)")
        try:
            saved_values = json.loads(saved.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
            raise JaxdlError(f"--resume {given['resume']}: config.json is corrupt ({e})") from None
        if not isinstance(saved_values, dict):
            raise JaxdlError(f"--resume {given['resume']}: config.json is corrupt (not a JSON object)")
        # a field the saved run predates takes the value that run was trained with, not today's default
        values.update({k: v for k, v in getattr(cls, "RESUME_DEFAULTS", {}).items() if k not in saved_values})
        values.update({k: v for k, v in saved_values.items() if k not in PER_INVOCATION})
    values.update(given)
    cfg = from_dict(cls, values)
    check_field_types(cfg)
    check_field_bounds(cfg)
    cfg.validate()
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)

