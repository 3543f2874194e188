"""Save / load / export (ept.checkpoint, `ept export`) and loading the export with PEFT.

Known PEFT behaviour pinned here (see docs/adding_a_method.md and checkpoint.export_prompt):
PEFT's FEATURE_EXTRACTION (and SEQ_2_SEQ_LM) prompt-tuning forward DROPS `token_type_ids` with a
warning, so on a BERT-family backbone a sentence PAIR scores differently under PEFT than under ept
(which keeps segment B's type 1). Single sentences (all type 0) agree exactly.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from ept.backbones import PromptedModel
from ept.checkpoint import (CONFIG_FILE, EXPORT_CONFIG, EXPORT_FILE, STATE_FILE, export_prompt, load_exported,
                            load_method, save_method)
from ept.cli import main
from ept.prompts import METHODS, method_config

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

ALL_METHODS = METHODS.names()
TEXTS = ["a gripping, funny film", "dull"]


@pytest.fixture(scope="module")
def t5_dir(tiny_t5, tmp_path_factory):
    """The tiny T5 (+ tokenizer) as a local model folder, so `ept export` can load it by path."""
    backbone, tok = tiny_t5
    path = tmp_path_factory.mktemp("tiny-t5")
    backbone.save_pretrained(path)  # safetensors
    tok.save_pretrained(path)
    return str(path)


def _trained(backbone, tok, name, seed=0, **overrides):
    """A PromptedModel whose trainable weights moved away from their init, as after training."""
    model = PromptedModel(backbone, tok, method_config(name, **overrides))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _t5_logits(model, tok, prompt=None):
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    labels = tok(["positive", "negative"], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.backbone(**model.build_inputs(batch, prompt=prompt), labels=labels).logits


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("name", ALL_METHODS)
def test_save_load_round_trip(name, tiny_t5, t5_dir, tmp_path):
    backbone, tok = tiny_t5
    model = _trained(copy.deepcopy(backbone), tok, name)  # ft moves the backbone itself
    save_method(model, tmp_path, backbone=t5_dir)
    assert (tmp_path / STATE_FILE).is_file() and not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["prompt"]["method"] == name and meta["ept_version"] and meta["embed_dim"] == 32
    loaded = load_method(tmp_path, copy.deepcopy(backbone), tok)  # a clean copy of the frozen backbone
    assert loaded.prompt_config == model.prompt_config
    if model.prompt_config.has_prompt:
        assert torch.equal(loaded.prompt(), model.prompt())
    assert torch.equal(_t5_logits(loaded, tok), _t5_logits(model, tok))


def test_load_method_loads_backbone_by_path(tiny_t5, t5_dir, tmp_path):
    backbone, tok = tiny_t5
    model = _trained(backbone, tok, "ept")
    save_method(model, tmp_path, backbone=t5_dir)
    loaded = load_method(tmp_path)
    assert torch.equal(_t5_logits(loaded, loaded.tokenizer), _t5_logits(model, tok))


def test_save_load_linear_head(minilm, tmp_path):
    backbone, tok = minilm
    model = _trained(backbone, tok, "ept")
    model.head = torch.nn.Linear(384, 3)
    save_method(model, tmp_path, backbone="minilm")
    loaded = load_method(tmp_path, backbone, tok)
    assert torch.equal(loaded.head.weight, model.head.weight) and torch.equal(loaded.prompt(), model.prompt())


def test_load_method_errors(tiny_t5, t5_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_method(tmp_path, *tiny_t5)
    backbone, tok = tiny_t5
    save_method(_trained(backbone, tok, "pt"), tmp_path, backbone=t5_dir)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["prompt"] = method_config("resprompt").to_dict()  # tensors no longer match the config
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not fit the model.*missing"):
        load_method(tmp_path, backbone, tok)


# ----------------------------------------------------------------------------- ept export
def test_cli_export_ept_star_stores_one_vector(tiny_t5, t5_dir, tmp_path, capsys):
    backbone, tok = tiny_t5
    model = _trained(backbone, tok, "ept_star")
    run = tmp_path / "run"
    save_method(model, run / "best", backbone=t5_dir)  # a training run keeps its best method here
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "1 x 32 floats" in capsys.readouterr().out
    tensors = load_file(str(out / EXPORT_FILE))
    assert list(tensors) == ["prompt"] and tensors["prompt"].shape == (1, 32)  # ONE vector of e floats
    meta = json.loads((out / EXPORT_CONFIG).read_text())
    assert meta["method"] == "ept_star" and meta["num_tokens"] == 10 and meta["broadcast"] is True
    assert meta["inference_params"] == 32
    prompt, _ = load_exported(out)
    assert prompt.shape == (10, 32) and torch.equal(prompt, model.prompt().detach())
    # The PEFT folder: two files, no pickles, the full n x e matrix under PEFT's single key.
    assert sorted(p.name for p in (out / "peft").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    peft_state = load_file(str(out / "peft" / "adapter_model.safetensors"))
    assert list(peft_state) == ["prompt_embeddings"] and peft_state["prompt_embeddings"].shape == (10, 32)
    cfg = json.loads((out / "peft" / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["task_type"], cfg["num_virtual_tokens"], cfg["num_transformer_submodules"],
            cfg["token_dim"]) == ("PROMPT_TUNING", "SEQ_2_SEQ_LM", 10, 1, 32)


def test_cli_export_method_dir_and_pt(tiny_t5, t5_dir, tmp_path):
    backbone, tok = tiny_t5
    model = _trained(backbone, tok, "pt")
    save_method(model, tmp_path / "m", backbone=t5_dir)
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "out")]) == 0
    assert load_file(str(tmp_path / "out" / EXPORT_FILE))["prompt"].shape == (10, 32)  # PT: n distinct rows
    prompt, meta = load_exported(tmp_path / "out")
    assert torch.equal(prompt, model.prompt().detach()) and meta["inference_params"] == 320


def test_cli_export_errors(tiny_t5, t5_dir, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no saved method" in capsys.readouterr().err
    backbone, tok = tiny_t5
    save_method(PromptedModel(copy.deepcopy(backbone), tok, method_config("ft")), tmp_path / "ft", backbone=t5_dir)
    assert main(["export", str(tmp_path / "ft"), "--out", str(tmp_path / "o")]) == 2
    assert "no prompt to export" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_exported_prompt_reproduces_the_model(tiny_t5, tmp_path):
    """Serving from the artifact alone (network discarded) gives the trained model's output."""
    backbone, tok = tiny_t5
    model = _trained(backbone, tok, "ept", hidden_size=4, activation="relu", layer_norm=True)
    export_prompt(model, tmp_path, backbone="tiny")
    prompt, meta = load_exported(tmp_path)
    assert meta["stored_vectors"] == 1 and prompt.shape == (1, 32)
    assert torch.equal(_t5_logits(model, tok, prompt=prompt), _t5_logits(model, tok))


# ----------------------------------------------------------------------------- PEFT loads it
@pytest.mark.parametrize("name", ["pt", "ept_star", "resprompt"])
def test_peft_loads_export_seq2seq(name, tiny_t5, tmp_path):
    from peft import PeftModel, PeftModelForSeq2SeqLM

    backbone, tok = tiny_t5
    model = _trained(backbone, tok, name)
    export_prompt(model, tmp_path, backbone="tiny-t5")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(backbone), str(tmp_path / "peft"))
    assert isinstance(peft_model, PeftModelForSeq2SeqLM)
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    batch.pop("token_type_ids")
    labels = tok(["positive", "negative"], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        theirs = peft_model(**batch, labels=labels).logits  # decoder logits, labels given
        ours = _t5_logits(model, tok)
        assert torch.equal(theirs, ours)
        peft_ids = peft_model.generate(**batch, max_new_tokens=3, do_sample=False, num_beams=1)
    assert [s.strip() for s in tok.batch_decode(peft_ids, skip_special_tokens=True)] == model.kind_ops.generate(batch, 3)


def test_peft_loads_export_feature_extraction(minilm, tmp_path):
    from peft import PeftModel, PeftModelForFeatureExtraction

    backbone, tok = minilm
    model = _trained(backbone, tok, "ept_star")
    export_prompt(model, tmp_path, backbone="minilm")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["task_type"] == "FEATURE_EXTRACTION"
    peft_model = PeftModel.from_pretrained(copy.deepcopy(backbone), str(tmp_path / "peft"))
    assert isinstance(peft_model, PeftModelForFeatureExtraction)
    n = 10
    single = dict(tok(TEXTS, padding=True, return_tensors="pt"))  # token_type_ids all 0
    pair = dict(tok(["a man eats", "a dog"], ["someone is eating", "a cat runs"], padding=True, return_tensors="pt"))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT warns that it ignores token_type_ids
        ours = backbone(**model.build_inputs(single)).last_hidden_state[:, n:]
        theirs = peft_model(**single).last_hidden_state[:, n:]  # the input positions
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
        # Caveat, pinned: PEFT drops token_type_ids, so a pair scores as if every token were type 0.
        ours_pair = backbone(**model.build_inputs(pair)).last_hidden_state[:, n:]
        theirs_pair = peft_model(**pair).last_hidden_state[:, n:]
        no_types = backbone(**model.build_inputs({**pair, "token_type_ids": torch.zeros_like(pair["token_type_ids"])})
                            ).last_hidden_state[:, n:]
    assert not torch.allclose(theirs_pair, ours_pair, atol=1e-4)
    torch.testing.assert_close(theirs_pair, no_types, rtol=1e-5, atol=1e-5)
