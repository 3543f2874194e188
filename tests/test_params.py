"""Parameter counts (paper Table 1 "Param/task", Table 4 inference) and `ept params`.

The three T5 sizes are facts the toolkit carries (e = 512 / 768 / 1024): no weights are loaded.
"""

from __future__ import annotations

import json

import pytest

from ept.backbones import backbone_num_params, param_counts
from ept.cli import main
from ept.prompts import METHODS, method_config

ALL_METHODS = METHODS.names()
T5 = ("t5-small", "t5-base", "t5-large")
E = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "minilm": 384}

# Paper Table 1, trainable parameters per task, T5-small / base / large.
# ft: the whole backbone as HF counts it (tied embedding counted once).
TABLE1 = {
    "pt": (5_120, 7_680, 10_240),
    "ptuning": (793_088, 1_779_456, 3_159_040),
    "resprompt": (416_656, 624_784, 832_912),
    "ept": (1_536, 2_304, 3_072),
    "ept_star": (1_536, 2_304, 3_072),
    "ft": (60_506_624, 222_903_552, 737_668_096),
    # LoRA r=8 on q and v (PEFT's T5 default): 36/72/144 modules x 2*e*8.
    "lora": (294_912, 884_736, 2_359_296),
    # (IA)^3 on k, v, wo (PEFT's T5 default): encoder (2*e + d_ff) + decoder (4*e + d_ff) per layer.
    "ia3": (43_008, 129_024, 344_064),
}
# Floats stored per task at inference (Table 4): n*e, or e for EPT/EPT* (one vector broadcast).
INFERENCE = {
    "pt": lambda e: 10 * e,
    "ptuning": lambda e: 10 * e,
    "resprompt": lambda e: 10 * e,
    "ept": lambda e: e,
    "ept_star": lambda e: e,
    "ft": None,  # = trainable: the whole backbone
    "lora": None,  # = trainable: the injected weights (unmerged)
    "ia3": None,
}


def test_every_method_has_a_table_row():
    assert set(TABLE1) == set(ALL_METHODS) == set(INFERENCE), "add the new method to TABLE1 and INFERENCE"


@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("size", range(3), ids=T5)
def test_table1_counts_exact(name, size):
    backbone = T5[size]
    counts = param_counts(backbone, method_config(name))
    assert counts["trainable"] == TABLE1[name][size]
    expected_inference = INFERENCE[name](E[backbone]) if INFERENCE[name] else TABLE1[name][size]
    assert counts["inference"] == expected_inference


@pytest.mark.parametrize("name", ALL_METHODS)
def test_minilm_counts(name):
    counts = param_counts("minilm", method_config(name))
    if name == "ft":
        assert counts["trainable"] == counts["inference"] == backbone_num_params("minilm") == 22_713_216
    elif name in ("lora", "ia3"):  # BERT: lora on query/value (6 layers x 2 x 2*384*8); ia3 on key/value/output.dense
        assert counts["trainable"] == counts["inference"] == {"lora": 73_728, "ia3": 16_128}[name]
    else:
        assert counts["inference"] == INFERENCE[name](384)
        assert counts["trainable"] == {"pt": 3_840, "ptuning": 447_360, "resprompt": 312_592,
                                       "ept": 1_152, "ept_star": 1_152}[name]


# ----------------------------------------------------------------------------- CLI, in-process
@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("size", range(3), ids=T5)
def test_cli_params_json(name, size, capsys):
    assert main(["params", "--backbone", T5[size], "--method", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"trainable", "inference"}
    assert out["trainable"] == TABLE1[name][size]


def test_cli_params_alias_and_text(capsys):
    assert main(["params", "--backbone", "t5-base", "--method", "ept*"]) == 0
    text = capsys.readouterr().out
    assert "ept_star on t5-base" in text and "2,304" in text and "768" in text


def test_cli_params_table(capsys):
    assert main(["params", "--table", "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(ALL_METHODS)
    for name in ALL_METHODS:
        assert tuple(rows[name][b]["trainable"] for b in T5) == TABLE1[name]


@pytest.mark.parametrize("flags,expected", [
    (["--method", "ept", "--hidden-size", "5"], 512 + 2 * 512 * 5),
    (["--method", "ept", "--bias", "true"], 3 * 512 + 1 + 512),
    (["--method", "ept", "--layer-norm", "true"], 3 * 512 + 2 * 512),
    (["--method", "ept", "--num-tokens", "7"], 3 * 512),
    (["--method", "pt", "--num-tokens", "100"], 51_200),
    (["--method", "ptuning", "--encoder", "lstm"], 12_081_664),  # peft's PromptEncoder, LSTM (paper Table 1)
    (["--method", "ept", "--linear-head", "2"], 3 * 512 + 2 * 513),
])
def test_cli_params_switches(flags, expected, capsys):
    assert main(["params", "--backbone", "t5-small", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["trainable"] == expected


@pytest.mark.parametrize("argv,needles", [
    (["--method", "eptt"], ["eptt", "ept_star", "resprompt", "ft"]),
    (["--backbone", "t5-smal", "--method", "ept"], ["t5-smal", "t5-small", "t5-base", "t5-large", "minilm"]),
    (["--method", "ept", "--activation", "swish"], ["swish", "none, relu, gelu, tanh, sigmoid"]),
    (["--method", "ept", "--hidden-size", "0"], ["hidden_size", ">= 1"]),
    (["--method", "ptuning", "--hidden-size", "0"], ["hidden_size", ">= 1"]),
    (["--method", "ept", "--num-tokens", "0"], ["num_tokens", ">= 1"]),
    (["--method", "pt", "--hidden-size", "4"], ["hidden_size", "allowed", "num_tokens"]),
])
def test_cli_params_bad_input(argv, needles, capsys):
    if "--backbone" not in argv:
        argv = ["--backbone", "t5-small", *argv]
    assert main(["params", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ept params: error:") and "Traceback" not in err
    for needle in needles:
        assert needle in err


# ----------------------------------------------------------------------------- ablation arithmetic
@pytest.mark.parametrize("h", [1, 5, 10, 50, 100, 500, 1000])  # paper Fig. 5 sweep
def test_ept_hidden_size_sweep(h):
    e = 512
    assert param_counts("t5-small", method_config("ept", hidden_size=h))["trainable"] == e + 2 * e * h


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "tanh", "sigmoid"])
def test_ept_ablation_switch_counts(bias, layer_norm, residual, activation):
    """Paper Fig. 9: biases add h + e, LayerNorm adds 2e, residual and activations add nothing."""
    e, h = 768, 3
    config = method_config("ept", hidden_size=h, bias=bias, layer_norm=layer_norm, residual=residual,
                           activation=activation)
    expected = e + 2 * e * h + (h + e if bias else 0) + (2 * e if layer_norm else 0)
    counts = param_counts("t5-base", config)
    assert counts["trainable"] == expected
    assert counts["inference"] == e  # the network is discarded whatever it contained


@pytest.mark.parametrize("n", [1, 2, 5, 10])  # paper Fig. 7: broadcast length costs nothing
def test_ept_num_tokens_counts(n):
    counts = param_counts("t5-large", method_config("ept", num_tokens=n))
    assert counts == {"trainable": 3 * 1024, "inference": 1024}


@pytest.mark.parametrize("n", [1, 10, 100])
def test_reparameterized_num_tokens_counts(n):
    e = 512
    assert param_counts("t5-small", method_config("pt", num_tokens=n))["trainable"] == n * e
    assert param_counts("t5-small", method_config("ptuning", num_tokens=n))["trainable"] == n * e + 3 * e * e + 3 * e
    resprompt = n * e + 2 * 400 * e + 400 + e + 2 * e
    assert param_counts("t5-small", method_config("resprompt", num_tokens=n))["trainable"] == resprompt
    for name in ("pt", "ptuning", "resprompt"):
        assert param_counts("t5-small", method_config(name, num_tokens=n))["inference"] == n * e


@pytest.mark.parametrize("h", [1, 64, 512])
def test_ptuning_hidden_size_counts(h):
    e = 512
    expected = 10 * e + (e * h + h) + (h * h + h) + (h * e + e)
    assert param_counts("t5-small", method_config("ptuning", hidden_size=h))["trainable"] == expected


@pytest.mark.parametrize("layers", [1, 2])
def test_ptuning_lstm_counts(layers):
    e, h = 512, 512
    lstm = 2 * (4 * (e * h + h * h + 2 * h))  # bidirectional first layer: input e
    lstm += (layers - 1) * 2 * (4 * (2 * h * h + h * h + 2 * h))  # later layers read 2h
    expected = 10 * e + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * e + e)
    counts = param_counts("t5-small", method_config("ptuning", encoder="lstm", lstm_layers=layers))
    assert counts["trainable"] == expected


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("b", [1, 400])
def test_resprompt_switch_counts(layer_norm, b):
    e = 1024
    config = method_config("resprompt", bottleneck=b, layer_norm=layer_norm, residual=False)
    expected = 10 * e + e * b + b + b * e + e + (2 * e if layer_norm else 0)
    assert param_counts("t5-large", config)["trainable"] == expected


# ---------------------------------------------------------------- analytic counts, no torch (issue 12)
_VARIANTS = [("pt", {}), ("pt", {"num_tokens": 3}), ("ptuning", {}), ("ptuning", {"hidden_size": 7}),
             ("ptuning", {"encoder": "lstm"}), ("ptuning", {"encoder": "lstm", "lstm_layers": 3, "hidden_size": 5}),
             ("resprompt", {}), ("resprompt", {"bottleneck": 9, "layer_norm": False, "num_tokens": 4}),
             ("ept", {}), ("ept", {"hidden_size": 6, "bias": True, "layer_norm": True, "residual": True}),
             ("ept_star", {"activation": "relu", "bias": True}), ("ept", {"num_tokens": 50})]


@pytest.mark.parametrize("name,options", _VARIANTS, ids=[f"{n}-{o}" for n, o in _VARIANTS])
@pytest.mark.parametrize("e", [32, 384])
def test_encoder_params_formula_equals_the_torch_module(name, options, e):
    from ept.prompts import build_encoder

    config = method_config(name, **options)
    assert config.encoder_params(e) == sum(p.numel() for p in build_encoder(config, e).parameters())


@pytest.mark.parametrize("name", ["ft", "lora", "ia3"])
def test_no_prompt_methods_have_no_analytic_count(name):
    assert method_config(name).encoder_params(384) is None  # they depend on the backbone's layers


@pytest.mark.parametrize("name", [n for n in ALL_METHODS if n not in ("ft", "lora", "ia3")])
@pytest.mark.parametrize("backbone", ["t5-small", "minilm", "smollm2-135m"])
def test_cli_counts_equal_param_counts(name, backbone):
    from ept.commands.params import count_params

    config = method_config(name)
    assert count_params(backbone, config, 3, 2) == param_counts(backbone, config, 3, 2)


def test_cli_counts_a_local_folder_from_its_config_json(tiny_t5_dir, tiny_bert):
    from ept.backbone_specs import offline_embed_dim
    from ept.commands.params import count_params

    assert offline_embed_dim(tiny_t5_dir) == offline_embed_dim(tiny_bert) == 32
    assert offline_embed_dim("google/t5-v1_1-base") is None  # a hub id: only transformers can tell
    for folder in (tiny_t5_dir, tiny_bert):
        for name in ("ept", "ptuning", "ft", "lora"):
            assert count_params(folder, method_config(name)) == param_counts(folder, method_config(name))


_NO_TORCH_PARAMS = """
import json, sys
from ept.cli import main
assert main(['params', '--backbone', 'minilm', '--method', 'ept', '--json']) == 0
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
"""


def test_params_of_a_prompt_method_does_not_import_torch():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _NO_TORCH_PARAMS], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {"trainable": 3 * 384, "inference": 384}  # EPT on MiniLM: e + 2eh, h = 1
