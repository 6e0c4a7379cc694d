"""Experiment configs as dataclasses, and their command line.

Every field of an experiment's `Config` becomes a flag (`max_epochs` -> `--max-epochs`);
`metadata` documents it and bounds it:

    lr: float = field(default=0.1, metadata=doc("learning rate (the book: 0.1)", gt=0))

Precedence, lowest first: field defaults < the experiment's PRESETS for a chosen value
(e.g. `--dataset fashion_mnist` brings the book's lr/batch/epochs) < the saved config of
a run being resumed < flags given on the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from jaxdl.errors import JaxdlError


# Settings of one invocation, not of the run: a resumed run does not take them from config.json.
PER_INVOCATION = frozenset({"resume", "debug_nans", "progress"})


def doc(help: str, *, gt=None, ge=None, le=None, lt=None, choices=None) -> dict:
    """Field metadata: a help line and optional bounds/choices checked on parse."""
    return {"help": help, "gt": gt, "ge": ge, "le": le, "lt": lt, "choices": choices}


@dataclass
class TrainConfig:
    """Fields every training experiment has."""

    seed: int = field(default=0, metadata=doc("the run's one seed; every key derives from it", ge=0))
    max_epochs: int = field(default=10, metadata=doc("epochs to train (resume with a larger value to extend)", gt=0))
    lr: float = field(default=0.1, metadata=doc("learning rate", gt=0))
    batch_size: int = field(default=256, metadata=doc("global minibatch size", gt=0))
    out: str = field(default="", metadata=doc("run folder (default runs/<experiment>/<timestamp>)"))
    resume: str = field(default="", metadata=doc("continue the run in this folder"))
    ckpt_every: int = field(default=5, metadata=doc("checkpoint every N epochs (and on SIGINT/SIGTERM)", gt=0))
    devices: str = field(default="all", metadata=doc("'all', a count, or indices like 0,2,3"))
    parallel: str = field(default="pmap", metadata=doc("data-parallel form", choices=("pmap", "shard_map")))
    debug_nans: bool = field(default=False, metadata=doc("turn on jax_debug_nans to find the op that made a NaN"))
    progress: bool = field(default=True, metadata=doc("show a progress bar"))

    PRESETS: ClassVar[dict[str, dict[Any, dict[str, Any]]]] = {}

    def validate(self) -> None:
        """Cross-field checks; raise JaxdlError. Experiments extend this."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit 2; we want one line
        raise JaxdlError(message)


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
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
        help_ = f"{meta.get('help', '')} (default: {default!r})"
        if tp is bool:
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(_flag(f.name), dest=f.name, type=_converter(f.name, tp), help=help_,
                                metavar=tp.__name__.upper())
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
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise JaxdlError(f"{flag}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
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
    hints = typing.get_type_hints(type(cfg))
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
    given = vars(build_parser(cls, prog).parse_args(argv))
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
        values.update({k: v for k, v in saved_values.items() if k not in PER_INVOCATION})
    values.update(given)
    cfg = from_dict(cls, values)
    check_field_types(cfg)
    check_field_bounds(cfg)
    cfg.validate()
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)

