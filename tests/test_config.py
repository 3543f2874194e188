"""Typed configs: flags generated from annotations, precedence defaults < --config < flags, and
config handling that never imports torch."""

from __future__ import annotations

import enum
import functools
import json
import os
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from ept.cli import build_parser, main
from ept.config import TrainConfig
from ept.flags import field_types, unwrap
from ept.method_configs import METHODS

SRC = str(Path(__file__).resolve().parents[1] / "src")


@functools.lru_cache(maxsize=None)
def _subparser(name: str):
    return build_parser()._subparsers._group_actions[0].choices[name]


def _flag_cases():
    """(command, config class, field name) for every field that has a generated flag."""
    cases = [("train", TrainConfig, f.name) for f in fields(TrainConfig) if f.name not in ("method", "method_options")]
    for command in ("train", "params"):
        for _, method in METHODS.items():
            cases += [(command, method.config_cls, f.name) for f in fields(method.config_cls)]
    return cases


def _sample(tp) -> tuple[str, str]:
    """(a string the annotation accepts, one it must refuse)."""
    base, _ = unwrap(tp)
    if typing.get_origin(base) is typing.Literal:
        return str(typing.get_args(base)[-1]), "not-a-choice"
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return str(list(base)[-1].value), "not-a-choice"
    return {bool: ("false", "maybe"), int: ("3", "ten"), float: ("0.25", "abc"), str: ("x", None)}[base]


@pytest.mark.parametrize("command,cls,name", _flag_cases(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_flag_type_matches_annotation(command, cls, name):
    actions = {a.dest: a for a in _subparser(command)._actions}
    tp = field_types(cls)[name]
    base, _ = unwrap(tp)
    if name == "method":  # chosen by --method, not a switch
        assert actions["method"].type is None
        return
    good, bad = _sample(tp)
    value = actions[name].type(good)
    if typing.get_origin(base) is typing.Literal:
        assert value == good
    else:
        assert type(value) is base, f"--{name} gave {type(value).__name__}, annotation says {tp}"
    assert actions[name].default is None  # None = not given: the file or the default decides
    if bad is not None:
        with pytest.raises(Exception) as err:
            actions[name].type(bad)
        assert name in str(err.value) and repr(bad) in str(err.value)


def test_lora_dropout_flag(capsys):
    assert main(["params", "--backbone", "minilm", "--method", "lora", "--lora-dropout", "0.1", "--json"]) == 0
    # dropout adds no parameters: r=8 A (8 x 384) and B (384 x 8) on query and value of 6 layers
    assert json.loads(capsys.readouterr().out)["trainable"] == 6 * 2 * (8 * 384 + 384 * 8)
    args = _subparser("params").parse_args(["--method", "lora", "--lora-dropout", "0.1"])
    from ept.commands.common import method_from_args

    assert method_from_args(args).peft_config().lora_dropout == 0.1


def test_precedence_defaults_file_flags(tmp_path):
    from ept.commands.train import config_from_args

    spec = tmp_path / "c.yaml"
    spec.write_text("steps: 7\nlr: 1e-3\nbatch_size: 4\nmethod: ept\nmethod_options: {hidden_size: 3}\n")
    args = _subparser("train").parse_args(["--config", str(spec), "--lr", "0.2", "--hidden-size", "5"])
    cfg = config_from_args(args)
    assert (cfg.steps, cfg.lr, cfg.batch_size) == (7, 0.2, 4)  # file over defaults, flag over file
    assert cfg.method_options == {"hidden_size": 5}
    assert cfg.eval_every == TrainConfig().eval_every  # neither: the default
    assert isinstance(cfg.lr, float) and cfg.lr == 0.2  # YAML's `1e-3` is a string; parsed by type


_NO_TORCH = """
import sys
from ept.cli import build_parser, main
build_parser()
{extra}
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
print("ok")
"""


@pytest.mark.parametrize("extra", [
    "",
    "import contextlib\nwith contextlib.suppress(SystemExit): main(['--help'])",
    "import contextlib\nwith contextlib.suppress(SystemExit): main(['train', '--help'])",
    "from ept.config import TrainConfig\nTrainConfig.from_dict({'task': 'CB', 'method': 'ept*', 'steps': '10', "
    "'method_options': {'hidden_size': 4}})",
    "from ept.method_configs import method_config\nmethod_config('lora', lora_dropout='0.1')",
    "assert main(['params', '--method', 'ept', '--hidden-size', '0']) == 2",
])
def test_help_and_configs_do_not_import_torch(extra):
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _NO_TORCH.format(extra=extra)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
