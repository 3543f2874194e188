"""Issue 19's switches: named task templates, rank scoring with or without EOS, a sink token
before the prompt, and prompt tuning with one token (the controls of the SmolLM2 experiment).

What must hold: `--template natural` changes the rendered input (its own line breaks and cue, its
label words) and nothing else of the task; an unknown template is refused naming the allowed
ones; the switches are part of a run's identity only when set (old hashes unchanged); the EOS
term is exactly log p(EOS | label); the sink token sits before P' and survives save/load; PT with
one token has e trainable parameters.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ept.backbones import PromptedModel
from ept.batching import collate
from ept.kinds import encode
from ept.kinds.causal import label_id_table, rank_scores
from ept.checkpoint import load_method, save_method
from ept.config import TrainConfig
from ept.prompts import method_config
from ept.training.rundir import identity
from ept.tasks import TASKS, get_task, load_task
from ept.tasks.spec import Example

from test_causal import SENTENCES, tiny_llama, llama_tok  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ templates
def test_every_task_has_a_natural_template_with_matching_label_words():
    for name in TASKS.names():
        spec = get_task(name)
        natural = spec.with_template("natural")
        assert natural.template_name == "natural" and spec.template_names == ("t5", "natural")
        assert len(natural.label_words) == len(spec.label_words)
        assert (natural.local_train, natural.local_eval, natural.hub) == (spec.local_train, spec.local_eval, spec.hub)
        assert (natural.metrics, natural.max_length, natural.train_size) == (spec.metrics, spec.max_length, spec.train_size)


def test_natural_template_renders_lines_cue_and_label_words():
    rte = get_task("rte")
    record = {"sentence1": "A  cat\nsat.", "sentence2": "A cat sat.", "label": 0}
    t5, natural = rte.to_example(record), rte.with_template("natural").to_example(record)
    assert t5.source == "rte sentence1: A cat sat. sentence2: A cat sat." and t5.target == "entailment"
    assert natural.source == "A cat sat.\nQuestion: A cat sat. True or False?\nAnswer:"
    assert natural.target == "true" and natural.label == 0 and natural.fields == t5.fields
    assert rte.answer_cue == "\nAnswer:" and rte.with_template("natural").answer_cue == ""


def test_unknown_template_is_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"no template 'chatty'; allowed: t5, natural"):
        get_task("sst2").with_template("chatty")
    with pytest.raises(ValueError, match=r"no template 'chatty'"):
        TrainConfig(task="sst2", template="chatty")


def test_load_task_with_a_template_keeps_the_splits(data_dir):
    t5 = load_task("rte", data_dir=data_dir)
    natural = load_task("rte", data_dir=data_dir, template="natural")
    assert natural.sizes() == t5.sizes() and natural.spec.template_name == "natural"
    assert [x.label for x in natural.test] == [x.label for x in t5.test]
    assert [x.fields for x in natural.validation] == [x.fields for x in t5.validation]
    assert all(x.source.endswith("True or False?\nAnswer:") for x in natural.test)


def test_causal_encoding_uses_the_templates_cue(tiny_llama):
    _, tok = tiny_llama
    spec = get_task("sst2")
    ex = Example(source="sst2 sentence: it works", target="positive", label=1, fields=("it works",))
    t5 = encode(tok, [ex], "causal", 64, spec=spec).features[0]["input_ids"]
    natural = encode(tok, [ex], "causal", 64, spec=spec.with_template("natural")).features[0]["input_ids"]
    cue = tok("\nAnswer:", add_special_tokens=False)["input_ids"]
    assert t5[-len(cue):] == cue and natural == t5[:-len(cue)]


def test_switches_enter_the_identity_only_when_set():
    base = TrainConfig(task="sst2").to_dict()
    old = {k: v for k, v in base.items() if k not in ("template", "label_score_eos", "sink_token")}
    assert identity(old, base) == identity(base, base)  # a config.json from before the switches
    for key, value in (("template", "natural"), ("label_score_eos", False), ("sink_token", "<s>")):
        assert identity({**base, key: value}, base) != identity(base, base), key


# ------------------------------------------------------------------------------ label scoring
def test_the_eos_term_is_log_p_eos_given_the_label(tiny_llama):
    backbone, tok = tiny_llama
    torch.manual_seed(0)
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("pt")).eval()
    words = ["negative", "positive"]
    with_eos, without = label_id_table(tok, words), label_id_table(tok, words, eos=False)
    assert (with_eos == tok.eos_token_id).sum() == 2 and (without == tok.eos_token_id).sum() == 0
    exs = [Example(source=f"sst2 sentence: {s}", target="", label=0, fields=(s,)) for s in SENTENCES]
    batch = collate(tok, encode(tok, exs, "causal", 64).features)
    with torch.no_grad():
        a, b = rank_scores(model, batch, with_eos), rank_scores(model, batch, without)
        # log p(EOS | source, label) computed directly from a full pass over source + label
        for row, ex in enumerate(exs):
            for c, w in enumerate(words):
                label = tok(" " + w, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist() + label])
                kw = model.build_inputs({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
                logp = model.backbone(**kw).logits[0, -1].float().log_softmax(-1)[tok.eos_token_id]
                torch.testing.assert_close(a[row, c] - b[row, c], logp, rtol=1e-4, atol=1e-4)


def test_label_score_eos_false_is_only_for_decoder_only(minilm):
    from ept.heads import make_scorer

    model = PromptedModel(*minilm, method_config("ept"))
    with pytest.raises(ValueError, match="label_score_eos=false is for decoder-only"):
        make_scorer(model, get_task("sst2"), label_score_eos=False)


# ------------------------------------------------------------------------------ sink token
def test_sink_token_sits_before_the_prompt_and_is_saved(tiny_llama, tmp_path):
    backbone, tok = tiny_llama
    torch.manual_seed(0)
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("ept"), sink_token="[CLS]")
    assert not model.uses_bos and model.sink_token_id == tok.cls_token_id
    feats = encode(tok, [Example(source="it works", target="positive", label=1, fields=("it works",))],
                   "causal", 64).features
    kw = model.build_inputs(collate(tok, feats))
    torch.testing.assert_close(kw["inputs_embeds"][0, 0], backbone.get_input_embeddings().weight[tok.cls_token_id])
    torch.testing.assert_close(kw["inputs_embeds"][0, 1], model.prompt()[0].detach())
    assert kw["inputs_embeds"].shape[1] == 1 + 1 + len(feats[0]["input_ids"])
    save_method(model, tmp_path, "tiny")
    again = load_method(tmp_path, copy.deepcopy(backbone), tok)
    assert again.sink_token == "[CLS]"
    torch.testing.assert_close(again.build_inputs(collate(tok, feats))["inputs_embeds"], kw["inputs_embeds"])


def test_sink_token_refusals(tiny_llama, minilm):
    backbone, tok = tiny_llama
    with pytest.raises(ValueError, match="not one token of this tokenizer's vocabulary"):
        PromptedModel(copy.deepcopy(backbone), tok, method_config("ept"), sink_token="<|nope|>")
    bos_tok = copy.deepcopy(tok)
    bos_tok.bos_token = "[CLS]"
    with pytest.raises(ValueError, match="already starts every row with BOS"):
        PromptedModel(copy.deepcopy(backbone), bos_tok, method_config("ept"), sink_token="[SEP]")
    with pytest.raises(ValueError, match="for decoder-only"):
        PromptedModel(*minilm, method_config("ept"), sink_token="[CLS]")


# ------------------------------------------------------------------------------ one-token PT
def test_pt_with_one_token_has_e_trainable_parameters(tiny_llama):
    backbone, tok = tiny_llama
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("pt", num_tokens=1))
    e = backbone.get_input_embeddings().embedding_dim
    assert model.trainable_parameters() == e and model.prompt().shape == (1, e)


# ------------------------------------------------------------------------------ residual analysis
def test_residual_norms_by_position_kind(tiny_llama):
    from ept.analysis.residual import layer_list, residual_norms

    backbone, tok = tiny_llama
    torch.manual_seed(0)
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("pt", num_tokens=3), sink_token="[CLS]").eval()
    with torch.no_grad():
        model.encoder.prompt.mul_(1e3)  # an "explosive" prompt
    exs = [Example(source=s, target="", label=0, fields=(s,)) for s in SENTENCES]
    batch = collate(tok, encode(tok, exs, "causal", 64).features)
    stats = residual_norms(model, batch)
    layers = len(layer_list(model.backbone))
    assert set(stats) == {"sink", "prompt", "input", "slot0", "prompt_rest"} and stats["prompt"].shape == (layers + 1, 2)
    torch.testing.assert_close(stats["slot0"], stats["sink"], equal_nan=True)  # the sink token holds the first slot
    torch.testing.assert_close(stats["prompt_rest"], stats["prompt"], equal_nan=True)
    # entering layer 0 the residual is the embedding: the prompt's own norm, the sink token's row
    torch.testing.assert_close(stats["prompt"][0, 0], model.prompt().norm(dim=-1).mean().detach())
    torch.testing.assert_close(stats["sink"][0, 0], backbone.get_input_embeddings().weight[tok.cls_token_id].norm())
    assert stats["prompt"][0, 0] > 100 * stats["input"][0, 0]
    assert torch.isnan(stats["input"][-1, 1]) and torch.isfinite(stats["input"][:-1]).all()
    # without the sink token P'_0 is the first slot: slot0 is its row, prompt_rest the other two
    bare = PromptedModel(copy.deepcopy(backbone), tok, method_config("pt", num_tokens=3)).eval()
    bare.load_state_dict(model.state_dict())
    stats = residual_norms(bare, batch)
    rows = bare.prompt().norm(dim=-1).detach()
    assert "sink" not in stats
    torch.testing.assert_close(stats["slot0"][0, 0], rows[0])
    torch.testing.assert_close(stats["prompt_rest"][0, 0], rows[1:].mean())
    torch.testing.assert_close(stats["prompt"][0, 0], rows.mean())
