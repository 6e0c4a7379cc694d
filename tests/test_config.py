import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from jaxdl.config import TrainConfig, doc, parse_config
from jaxdl.errors import JaxdlError


@dataclass
class Cfg(TrainConfig):
    dataset: str = field(default="a", metadata=doc("d", choices=("a", "b")))
    frac: float = field(default=0.5, metadata=doc("f", gt=0, le=1))
    PRESETS: ClassVar = {"dataset": {"b": {"lr": 0.7, "max_epochs": 3}}}


def test_defaults_and_overrides():
    cfg = parse_config(Cfg, [], "p")
    assert cfg.lr == 0.1 and cfg.max_epochs == 10 and cfg.progress is True
    cfg = parse_config(Cfg, ["--max-epochs", "20", "--lr", "0.05", "--no-progress"], "p")
    assert (cfg.max_epochs, cfg.lr, cfg.progress) == (20, 0.05, False)


def test_presets_apply_unless_flag_given():
    cfg = parse_config(Cfg, ["--dataset", "b"], "p")
    assert (cfg.lr, cfg.max_epochs) == (0.7, 3)
    cfg = parse_config(Cfg, ["--dataset", "b", "--lr", "0.2"], "p")
    assert (cfg.lr, cfg.max_epochs) == (0.2, 3)


@pytest.mark.parametrize("argv,msg", [
    (["--lr", "-1"], "--lr: must be > 0"),
    (["--max-epochs", "0"], "--max-epochs: must be > 0"),
    (["--max-epochs", "2.5"], "expected int"),
    (["--lr", "abc"], "expected float"),
    (["--lr", "nan"], "must be a number"),
    (["--frac", "1.5"], "--frac: must be <= 1"),
    (["--dataset", "c"], "not one of a, b"),
    (["--bogus", "1"], "unknown flag --bogus"),
    (["--max-ep", "3"], "unknown flag --max-ep; did you mean --max-epochs"),
    (["--resume", "/nonexistent/run"], "not a run folder"),
])
def test_bad_values_are_one_clear_error(argv, msg):
    with pytest.raises(JaxdlError, match=msg.replace("(", r"\(")):
        parse_config(Cfg, argv, "p")


def test_resume_reads_saved_config_then_flags(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.3, "max_epochs": 4, "dataset": "b"}))
    cfg = parse_config(Cfg, ["--resume", str(tmp_path), "--max-epochs", "8"], "p")
    assert (cfg.lr, cfg.max_epochs, cfg.dataset, cfg.resume) == (0.3, 8, "b", str(tmp_path))
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(JaxdlError, match="corrupt"):
        parse_config(Cfg, ["--resume", str(tmp_path)], "p")
