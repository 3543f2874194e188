"""ept's `ptuning` is PEFT's P-Tuning `PromptEncoder` (peft.tuners.p_tuning), checked in both directions:
the same parameter count for the same e, n and h, and, with the weights copied across, the same
prompt — alone and inside a whole prompted T5. Reference counts: paper Table 1 and peft `src/peft/tuners/p_tuning/model.py`.

Differences that are deliberate (not tested as equal): PEFT initialises the prompt embedding
N(0, 1), ept uses its own init schemes (default U[-0.5, 0.5]); PEFT gives a seq2seq model 2n
embedding rows by default (num_transformer_submodules=2, rows n..2n-1 unused), ept has n.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PromptEncoderConfig, get_peft_model
from peft.tuners.p_tuning import PromptEncoder

from ept.prompts import build_encoder, count_trainable, method_config

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def _peft_encoder(e: int, n: int, encoder: str = "mlp", h: int | None = None, layers: int = 2) -> PromptEncoder:
    config = PromptEncoderConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, token_dim=e,
                                 num_transformer_submodules=1, encoder_reparameterization_type=encoder.upper(),
                                 encoder_hidden_size=h or e, encoder_num_layers=layers)
    return PromptEncoder(config)


def _ept_encoder(e: int, n: int, encoder: str = "mlp", h: int | None = None, layers: int = 2):
    overrides = dict(num_tokens=n, encoder=encoder, hidden_size=h)
    if encoder == "lstm":
        overrides["lstm_layers"] = layers
    return build_encoder(method_config("ptuning", **overrides), e)


def _to_peft_key(key: str) -> str:
    """ept names -> PEFT names: the raw prompt is PEFT's embedding table, heads gain `_head`."""
    if key == "prompt":
        return "embedding.weight"
    return key.replace("mlp.", "mlp_head.", 1).replace("lstm.", "lstm_head.", 1)


def _copy_into_peft(ours, theirs) -> None:
    state = {_to_peft_key(k): v for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state, strict=True)  # every tensor has a partner, same shape


@pytest.mark.parametrize("e,n", [(512, 10), (768, 10), (1024, 10), (384, 10), (32, 1), (48, 7)])
def test_mlp_parameter_count_equals_peft(e, n):
    ours, theirs = _ept_encoder(e, n), _peft_encoder(e, n)
    assert count_trainable(ours) == count_trainable(theirs) == n * e + 3 * e * e + 3 * e
    reference = {512: 793_088, 768: 1_779_456, 1024: 3_159_040}  # paper Table 1
    if e in reference:
        assert count_trainable(ours) == reference[e]


@pytest.mark.parametrize("h", [1, 8, 100])
def test_mlp_hidden_size_count_equals_peft(h):
    assert count_trainable(_ept_encoder(64, 10, h=h)) == count_trainable(_peft_encoder(64, 10, h=h))


def test_lstm_parameter_count_equals_peft_reference():
    ours, theirs = _ept_encoder(512, 10, "lstm"), _peft_encoder(512, 10, "lstm")
    assert count_trainable(ours) == count_trainable(theirs) == 12_081_664  # peft's PromptEncoder, LSTM: paper Table 1's column


@pytest.mark.parametrize("encoder,h,layers", [("mlp", None, 2), ("mlp", 5, 2), ("lstm", None, 2), ("lstm", 6, 1)])
@pytest.mark.parametrize("n", [1, 10])
def test_same_output_with_copied_weights(encoder, h, layers, n):
    e = 24
    torch.manual_seed(0)
    ours, theirs = _ept_encoder(e, n, encoder, h, layers), _peft_encoder(e, n, encoder, h, layers)
    _copy_into_peft(ours, theirs)
    with torch.no_grad():
        expected = theirs(torch.arange(n).unsqueeze(0))  # (1, n, e): PEFT's prompt for one row
        torch.testing.assert_close(ours(), expected[0], rtol=1e-6, atol=1e-6)


def test_same_logits_inside_a_prompted_t5(tiny_t5):
    """The whole path: PEFT P_TUNING on the tiny T5 vs ept's PromptedModel, weights copied across."""
    from ept.backbones import PromptedModel

    backbone, tok = tiny_t5
    torch.manual_seed(0)
    ours = PromptedModel(backbone, tok, method_config("ptuning", num_tokens=4))
    config = PromptEncoderConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4, num_transformer_submodules=1)
    theirs = get_peft_model(copy.deepcopy(backbone), config)
    assert theirs.get_nb_trainable_parameters()[0] == ours.trainable_parameters()
    _copy_into_peft(ours.encoder, theirs.prompt_encoder["default"])
    batch = dict(tok(["a gripping, funny film", "dull"], padding=True, return_tensors="pt"))
    batch.pop("token_type_ids")
    labels = tok(["positive", "negative"], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = theirs(**batch, labels=labels).logits
        got = backbone(**ours.build_inputs(batch), labels=labels).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
