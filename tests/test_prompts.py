"""Prompt methods (ept.prompts): configs, encoders, trainability, init schemes, bad input.

Every test that can apply to all methods is parametrized over the registry itself
(`METHODS.names()`), so a new method is tested the moment it is registered; the one per-method
table here (`NON_DEFAULT`) must gain a row, and a test fails until it does.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ept.backbones import PromptedModel, embed_dim_of
from ept.prompts import (METHODS, Activation, EPTEncoder, Init, build_encoder, config_from_dict, count_trainable,
                         method_config)

ALL_METHODS = METHODS.names()
PROMPT_METHODS = [m for m in ALL_METHODS if METHODS.get(m).config_cls.has_prompt]
E = 16  # a small embedding dim for encoder-only tests

# A non-default setting of every switch a method has: proves the round-trip carries each one.
NON_DEFAULT = {
    "pt": dict(num_tokens=7, init="text", init_text="a great movie"),
    "ptuning": dict(num_tokens=4, encoder="lstm", hidden_size=8, lstm_layers=1, init="vocab"),
    "resprompt": dict(num_tokens=3, bottleneck=16, layer_norm=False, residual=False, init="label"),
    "ept": dict(num_tokens=3, hidden_size=5, bias=True, layer_norm=True, residual=True, activation="gelu"),
    "ept_star": dict(hidden_size=2, activation="tanh", init="vocab"),
    "ft": dict(),
    "lora": dict(lora_r=4, lora_alpha=8, lora_dropout=0.1),
    "ia3": dict(),
}


def test_every_method_has_a_non_default_row():
    assert set(NON_DEFAULT) == set(ALL_METHODS), "add the new method to NON_DEFAULT"


# ----------------------------------------------------------------------------- config round-trip
@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("overrides", ["default", "non_default"])
def test_config_round_trip(name, overrides):
    config = method_config(name, **({} if overrides == "default" else NON_DEFAULT[name]))
    d = config.to_dict()
    assert d["method"] == name
    assert json.loads(json.dumps(d)) == d  # plain JSON types only (enums as their string)
    again = config_from_dict(d)
    assert again == config and type(again) is type(config)
    assert again.to_dict() == d


def test_alias_resolves_to_canonical_name():
    assert method_config("ept*").method == "ept_star"
    assert method_config("EPT*").to_dict() == method_config("ept_star").to_dict()
    assert method_config("p-tuning").method == "ptuning"


def test_enums_compare_to_strings():
    config = method_config("ept", activation="relu", init="uniform")
    assert config.activation is Activation.RELU and config.activation == "relu"
    assert config.init is Init.UNIFORM


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", ALL_METHODS)
def test_output_shape(name):
    config = method_config(name)
    encoder = build_encoder(config, E)
    out = encoder()
    if not config.has_prompt:
        assert out is None and encoder.num_tokens == 0
        return
    assert out.shape == (config.num_tokens, E) and out.dtype == torch.float32
    assert encoder.num_tokens == config.num_tokens


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_output_shape_with_non_default_switches(name):
    config = method_config(name, **{k: v for k, v in NON_DEFAULT[name].items() if k not in ("init", "init_text")})
    assert build_encoder(config, E)().shape == (config.num_tokens, E)


# ----------------------------------------------------------------------------- trainability
@pytest.mark.parametrize("name", ALL_METHODS)
def test_trainable_and_frozen(name, tiny_t5):
    backbone, tok = tiny_t5
    config = method_config(name)
    if not config.has_prompt:  # ft / lora / ia3 change the backbone itself: keep the shared one intact
        backbone = copy.deepcopy(backbone)
    model = PromptedModel(backbone, tok, config)
    encoder_params = list(model.encoder.parameters())
    assert all(p.requires_grad for p in encoder_params)
    if config.trains_backbone:
        assert not encoder_params and model.prompt() is None and model.num_prompt_tokens() == 0
        assert all(p.requires_grad for p in model.backbone.parameters())
        assert model.trainable_parameters() == backbone.num_parameters()
    elif not config.has_prompt:  # PEFT-injected: only the injected weights train
        trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
        assert trainable and all(config.method in n for n in trainable) and model.prompt() is None
    else:
        assert not any(p.requires_grad for p in model.backbone.parameters())
        assert model.trainable_parameters() == count_trainable(model.encoder) == sum(p.numel() for p in encoder_params)
        assert model.prompt().shape == (config.num_tokens, model.embed_dim)


def test_ft_has_no_prompt_and_no_init(tiny_t5):
    backbone, tok = tiny_t5
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("ft"))
    batch = dict(tok(["hello world"], return_tensors="pt"))
    kwargs = model.build_inputs(batch)
    assert kwargs["inputs_embeds"].shape[1] == batch["input_ids"].shape[1]  # nothing prepended
    with pytest.raises(ValueError, match="ft has no prompt"):
        method_config("ft", num_tokens=10)
    with pytest.raises(ValueError, match="ft has no prompt"):
        method_config("ft", init="vocab")


def test_linear_head_is_trainable_and_counted(minilm):
    backbone, tok = minilm
    model = PromptedModel(backbone, tok, method_config("ept"), linear_head_labels=3)
    assert model.head.weight.requires_grad
    assert model.trainable_parameters() == 3 * 384 + (384 + 1) * 3


# ----------------------------------------------------------------------------- EPT specifics
def test_ept_broadcast_rows_identical_and_gradients_reach_p1_and_phi():
    encoder = build_encoder(method_config("ept_star"), E)
    assert isinstance(encoder, EPTEncoder) and encoder.prompt.shape == (1, E)  # ONE vector P1
    out = encoder()  # (n, e) = (10, E)
    assert out.shape == (10, E)
    assert torch.equal(out, out[:1].expand(10, -1))
    weights = torch.randn(10, E, generator=torch.Generator().manual_seed(0))
    (out * weights).sum().backward()  # a different signal per row: all of it reaches the one vector
    assert encoder.prompt.grad is not None and encoder.prompt.grad.abs().sum() > 0
    for name, p in encoder.phi.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_ept_is_linear_down_up_without_extras():
    encoder = build_encoder(method_config("ept"), E)
    down, act, up = encoder.phi
    assert (down.in_features, down.out_features, up.out_features) == (E, 1, E)
    assert down.bias is None and up.bias is None and isinstance(act, torch.nn.Identity)
    p1 = encoder.prompt  # (1, e)
    assert torch.allclose(encoder(), (p1 @ down.weight.T) @ up.weight.T, atol=1e-6)  # W_up(W_down P1)


@pytest.mark.parametrize("activation,module", [("none", torch.nn.Identity), ("relu", torch.nn.ReLU),
                                               ("gelu", torch.nn.GELU), ("tanh", torch.nn.Tanh),
                                               ("sigmoid", torch.nn.Sigmoid)])
def test_ept_activation_switch(activation, module):
    encoder = build_encoder(method_config("ept", activation=activation, hidden_size=4), E)
    assert isinstance(encoder.phi[1], module)
    down, act, up = encoder.phi
    expected = up(act(down(encoder.prompt)))
    assert torch.allclose(encoder(), expected)


def test_ept_residual_and_layer_norm_switches():
    torch.manual_seed(0)
    res = build_encoder(method_config("ept", residual=True, hidden_size=3), E)
    assert torch.allclose(res(), res.phi(res.prompt) + res.prompt)
    ln = build_encoder(method_config("ept", layer_norm=True), E)
    assert isinstance(ln.phi[-1], torch.nn.LayerNorm)
    out = ln()[0]
    assert abs(out.mean().item()) < 1e-5 and abs(out.std(unbiased=False).item() - 1) < 1e-3


def test_resprompt_residual_branch():
    enc = build_encoder(method_config("resprompt", bottleneck=8), E)
    assert torch.allclose(enc(), enc.mlp(enc.prompt) + enc.prompt)
    no_res = build_encoder(method_config("resprompt", bottleneck=8, residual=False), E)
    assert torch.allclose(no_res(), no_res.mlp(no_res.prompt))


# ----------------------------------------------------------------------------- init schemes
def _rows_in_table(rows: torch.Tensor, table: torch.Tensor) -> bool:
    return bool((rows[:, None, :] == table[None, :, :]).all(-1).any(-1).all())


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_init_uniform(name):
    torch.manual_seed(0)
    raw = build_encoder(method_config(name, num_tokens=50 if name != "ept" else 1), 64).prompt
    assert raw.min() >= -0.5 and raw.max() <= 0.5
    if raw.numel() > 1000:  # U[-0.5, 0.5] has std 1/sqrt(12) = 0.289, not N(0, 1)'s 1.0
        assert abs(raw.std().item() - 0.2887) < 0.02


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_init_vocab_copies_real_embedding_rows(name, tiny_t5):
    backbone, tok = tiny_t5
    torch.manual_seed(0)
    model = PromptedModel(backbone, tok, method_config(name, init="vocab"))
    table = backbone.get_input_embeddings().weight
    assert _rows_in_table(model.encoder.prompt.detach(), table)
    torch.manual_seed(0)
    again = PromptedModel(backbone, tok, method_config(name, init="vocab"))
    assert torch.equal(model.encoder.prompt, again.encoder.prompt)  # deterministic given the seed
    if model.encoder.prompt.shape[0] > 1:
        torch.manual_seed(1)  # the run's seed picks the rows (PEFT samples from the global RNG too)
        other = PromptedModel(backbone, tok, method_config(name, init="vocab"))
        assert not torch.equal(model.encoder.prompt, other.encoder.prompt)


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_init_label_copies_label_word_rows_tiled(name, tiny_t5):
    backbone, tok = tiny_t5
    ids = tok.convert_tokens_to_ids(["positive", "negative"])
    model = PromptedModel(backbone, tok, method_config(name, init="label"), init_token_ids=ids)
    table = backbone.get_input_embeddings().weight
    raw = model.encoder.prompt.detach()
    expected = table[torch.tensor(ids)].repeat(raw.shape[0], 1)[: raw.shape[0]]
    assert torch.equal(raw, expected)
    with pytest.raises(ValueError, match="label words"):
        PromptedModel(backbone, tok, method_config(name, init="label"))


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_init_text_copies_text_rows(name, tiny_t5):
    backbone, tok = tiny_t5
    model = PromptedModel(backbone, tok, method_config(name, init="text", init_text="classify the sentiment"))
    ids = tok("classify the sentiment", add_special_tokens=False)["input_ids"]
    table = backbone.get_input_embeddings().weight
    raw = model.encoder.prompt.detach()
    reps = -(-raw.shape[0] // len(ids))
    assert torch.equal(raw, table[torch.tensor(ids * reps)][: raw.shape[0]])


# ----------------------------------------------------------------------------- bad input
def test_unknown_method_lists_allowed():
    with pytest.raises(ValueError) as err:
        method_config("eptt")
    msg = str(err.value)
    assert "eptt" in msg and "Did you mean" in msg
    for name in ALL_METHODS:
        assert name in msg


def test_unknown_backbone_lists_allowed():
    with pytest.raises(ValueError) as err:
        embed_dim_of("t5-smal")
    assert "t5-smal" in str(err.value) and all(b in str(err.value) for b in ("t5-small", "t5-base", "minilm"))


@pytest.mark.parametrize("field,value,allowed", [
    ("activation", "swish", "none, relu, gelu, tanh, sigmoid"),
    ("init", "zeros", "uniform, vocab, label, text"),
])
def test_bad_switch_value_lists_allowed(field, value, allowed):
    with pytest.raises(ValueError) as err:
        method_config("ept", **{field: value})
    assert repr(value) in str(err.value) and allowed in str(err.value)


def test_bad_ptuning_encoder_lists_allowed():
    with pytest.raises(ValueError, match="allowed: mlp, lstm"):
        method_config("ptuning", encoder="gru")
    with pytest.raises(ValueError, match="lstm_layers is only used with encoder=lstm"):
        method_config("ptuning", lstm_layers=3)  # PEFT would ignore it with a warning; we refuse


@pytest.mark.parametrize("name", ["ept", "ept_star", "ptuning"])
@pytest.mark.parametrize("h", [0, -1])
def test_hidden_size_below_one(name, h):
    with pytest.raises(ValueError, match="hidden_size"):
        method_config(name, hidden_size=h)


@pytest.mark.parametrize("name", PROMPT_METHODS)
@pytest.mark.parametrize("n", [0, -3])
def test_num_tokens_below_one(name, n):
    with pytest.raises(ValueError, match="num_tokens"):
        method_config(name, num_tokens=n)


@pytest.mark.parametrize("name,switch", [("pt", "hidden_size"), ("pt", "activation"), ("ptuning", "bias"),
                                         ("resprompt", "hidden_size"), ("ept", "bottleneck"), ("ft", "layer_norm")])
def test_switch_the_method_does_not_have(name, switch):
    with pytest.raises(ValueError) as err:
        method_config(name, **{switch: 1})
    msg = str(err.value)
    # names the options it does have (ft has none: no prompt fields since they stopped being inherited)
    assert switch in msg and ("num_tokens" in msg if name != "ft" else "allowed: none" in msg)


def test_init_text_rules():
    with pytest.raises(ValueError, match="init=text needs init_text"):
        method_config("pt", init="text")
    with pytest.raises(ValueError, match="init_text is only used with init=text"):
        method_config("pt", init_text="hello")


def test_backbone_without_input_embeddings(tiny_t5):
    class NoEmbeddings(torch.nn.Module):
        config = tiny_t5[0].config

        def get_input_embeddings(self):
            return None

    with pytest.raises(ValueError, match="no input embeddings"):
        PromptedModel(NoEmbeddings(), tiny_t5[1], method_config("ept"))
