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
    from ept.commands.train import _NOT_FLAGS  # method (--method), a task file's content (--task FILE)

    cases = [("train", TrainConfig, f.name) for f in fields(TrainConfig) if f.name not in _NOT_FLAGS]
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
    assert cfg.method.hidden_size == 5 and cfg.to_dict()["method_options"] == {"hidden_size": 5}
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


# ---------------------------------------------------------------- typed method configs (issue 12)
_PROMPT = {"num_tokens", "init", "init_text"}
OWN_FIELDS = {
    "pt": _PROMPT,
    "ptuning": _PROMPT | {"encoder", "hidden_size", "lstm_layers"},
    "resprompt": _PROMPT | {"bottleneck", "layer_norm", "residual"},
    "ept": _PROMPT | {"hidden_size", "bias", "layer_norm", "residual", "activation"},
    "ept_star": _PROMPT | {"hidden_size", "bias", "layer_norm", "residual", "activation"},
    "ft": set(),  # no prompt, no switches
    "lora": {"lora_r", "lora_alpha", "lora_dropout"},
    "ia3": set(),
}


def test_every_method_is_listed_here():
    assert sorted(OWN_FIELDS) == sorted(METHODS.names())


@pytest.mark.parametrize("name", sorted(OWN_FIELDS))
def test_method_config_has_exactly_its_own_fields(name):
    cls = METHODS.get(name).config_cls
    assert {f.name for f in fields(cls)} == OWN_FIELDS[name]
    assert cls.has_prompt == bool(OWN_FIELDS[name] & _PROMPT)
    if not cls.has_prompt:
        with pytest.raises(ValueError, match=f"{name} has no prompt.*num_tokens"):
            TrainConfig.from_dict({"method": name, "method_options": {"num_tokens": 3}})


def test_typed_method_config_round_trips_through_config_json():
    from ept.method_configs import EPTConfig, LoRAConfig

    cfg = TrainConfig(method=LoRAConfig(lora_r=4, lora_dropout=0.1), steps=20)
    d = cfg.to_dict()
    assert (d["method"], d["method_options"], d["lr"]) == ("lora", {"lora_r": 4, "lora_dropout": 0.1}, 1e-3)
    assert list(d)[:4] == ["task", "method", "backbone", "method_options"]  # config.json's order as before
    again = TrainConfig.from_dict(json.loads(json.dumps(d)))
    assert again == cfg and isinstance(again.method, LoRAConfig)
    # a name, an alias or a config object; an explicit default is the same run as none
    assert TrainConfig(method="ept*").method.num_tokens == 10
    assert TrainConfig.from_dict({"method_options": {"hidden_size": 1}}).to_dict() == TrainConfig().to_dict()
    assert TrainConfig.from_dict({"method": EPTConfig(hidden_size=3), "method_options": {"bias": True}}).method == \
        EPTConfig(hidden_size=3, bias=True)
    with pytest.raises(ValueError, match="method_options=.*expected a mapping"):
        TrainConfig.from_dict({"method_options": [1]})


def test_train_flags_build_the_typed_config():
    from ept.commands.train import config_from_args
    from ept.method_configs import LoRAConfig

    cfg = config_from_args(_subparser("train").parse_args(["--method", "lora", "--lora-r", "4"]))
    assert cfg.method == LoRAConfig(lora_r=4) and cfg.lr == 1e-3
    with pytest.raises(ValueError, match="lora has no prompt"):
        config_from_args(_subparser("train").parse_args(["--method", "lora", "--num-tokens", "4"]))
    assert main(["train", "--method", "lora", "--hidden-size", "4"]) == 2  # one line, exit 2


# config.json files as the code before typed method configs wrote them (asdict of TrainConfig with
# `method_options` = the switches given), and the identity hash that code computed for them.
_OLD = {"task": "sst2", "backbone": "minilm", "steps": 20, "weight_decay": 0.01, "batch_size": 16,
        "eval_every": 10, "eval_batch_size": 64, "max_eval_examples": None, "max_length": None, "few_shot": None,
        "seed": 0, "split_seed": 42, "eval_mode": None, "linear_head": False, "dtype": "float32",
        "data_dir": None, "out": "runs/x", "tensorboard": True, "lr_scheduler": "constant", "warmup_steps": 0,
        "max_grad_norm": None, "decay_norm_and_bias": True, "overwrite": False, "pair_encoding": "siamese",
        "pair_head": "trainable", "pair_fit_examples": 512}
OLD_RUNS = [  # (method, method_options, lr, config_hash computed by the old code)
    ("lora", {"lora_r": 4, "lora_dropout": 0.1}, 0.001, "0e8eab37be8bc9c4"),
    ("ept", {"hidden_size": 5, "activation": "relu"}, 0.3, "b71501f37bced66f"),
    ("ft", {}, 1e-05, "78298ac44f5b0492"),
]


@pytest.mark.parametrize("method,options,lr,old_hash", OLD_RUNS, ids=[r[0] for r in OLD_RUNS])
def test_old_config_json_keeps_its_identity(tmp_path, method, options, lr, old_hash):
    from ept.training.rundir import RunDir, config_hash, identity

    old = {**_OLD, "method": method, "method_options": options, "lr": lr, "out": str(tmp_path / "run")}
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_config(old)
    cfg = TrainConfig.from_dict(rd.read_config())  # loads (eval, sweep workers, resume)
    assert cfg.method.name == method and cfg.to_dict()["method_options"] == options
    assert config_hash(identity(cfg.to_dict())) == config_hash(identity({**old, "out": "runs/x"})) == old_hash
    assert rd.check_identity(cfg.to_dict()) == "same"  # resumes / skips, never "a different config"


@pytest.mark.parametrize("method,given", [("ept", {"hidden_size": 1}), ("ept_star", {"num_tokens": 10}),
                                          ("ft", {"num_tokens": 1}), ("lora", {"init": "uniform", "lora_r": 8})])
def test_old_config_json_with_explicit_defaults_is_the_same_run(tmp_path, method, given):
    """The old code recorded switches as given, defaults included (a sweep grid `hidden_size: [1, 10]`),
    and let ft/lora/ia3 carry num_tokens=1 / init=uniform; the same config today records none of them."""
    from ept.training.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_config({**_OLD, "method": method, "method_options": given, "lr": 0.1, "out": str(rd.path)})
    cfg = TrainConfig.from_dict(rd.read_config())
    assert cfg == TrainConfig.from_dict({**_OLD, "method": method, "lr": 0.1, "out": str(rd.path)})
    assert rd.check_identity(cfg.to_dict()) == "same"


def test_old_checkpoint_meta_of_a_no_prompt_method_loads():
    from ept.method_configs import FTConfig, LoRAConfig, config_from_dict

    old = {"num_tokens": 1, "init": "uniform", "init_text": None}  # what ft/lora/ia3 stored before
    assert config_from_dict({"method": "ft", **old}) == FTConfig()
    assert config_from_dict({"method": "lora", **old, "lora_r": 4}) == LoRAConfig(lora_r=4)
    with pytest.raises(ValueError, match="ft has no prompt"):
        config_from_dict({"method": "ft", **old, "num_tokens": 5})
