"""The prompted backbone wrapper (ept.backbones.PromptedModel) on a tiny T5 and on MiniLM.

The strongest check of "prepended to the input embeddings": a prompt made of the embeddings of
some real tokens must give exactly what the backbone gives on those tokens written in front of
the input.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ept.backbones import PromptedModel, backbone_kind, prepend_prompt
from ept.prompts import method_config

TEXTS = ["a gripping, funny film", "dull"]
LABELS = ["positive", "negative", "not sure"]


def _label_loglik(model, batch, label_ids, prompt=None, prompt_mask=None):
    """(B, C): every row against one label table, through the kind's rank scoring."""
    from ept.kinds import Labels

    return model.kind_ops.rank_scores(batch, Labels.one(label_ids, batch["input_ids"].shape[0]), prompt, prompt_mask)


def _batch(tok, texts=TEXTS, pairs=None):
    return dict(tok(list(texts), pairs, padding=True, return_tensors="pt"))


def _label_ids(tok, labels=LABELS):
    enc = tok(list(labels), padding=True, return_tensors="pt")
    return enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)  # (C, T)


def _prompt_from_tokens(backbone, tok, text):
    """A 'prompt' that is the embedding of real tokens: prompting must equal writing them."""
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    return ids, backbone.get_input_embeddings().weight[ids].detach().clone()  # (n,), (n, e)


# ----------------------------------------------------------------------------- tiny T5
def test_t5_prompt_on_encoder_only(tiny_t5):
    backbone, tok = tiny_t5
    model = PromptedModel(backbone, tok, method_config("pt", num_tokens=4))
    batch = _batch(tok)
    batch["labels"] = _label_ids(tok, ["positive", "negative"])
    before = {k: v.clone() for k, v in batch.items()}
    kwargs = model.build_inputs(batch)
    B, L = batch["input_ids"].shape
    assert kwargs["inputs_embeds"].shape == (B, 4 + L, 32)
    assert torch.equal(kwargs["inputs_embeds"][:, :4], model.prompt().detach().expand(B, -1, -1))
    assert torch.equal(kwargs["inputs_embeds"][:, 4:], backbone.get_input_embeddings()(batch["input_ids"]))
    assert torch.equal(kwargs["attention_mask"], torch.cat([torch.ones(B, 4, dtype=torch.long), batch["attention_mask"]], 1))
    assert "token_type_ids" not in kwargs and "labels" not in kwargs and "decoder_input_ids" not in kwargs
    out = backbone(**kwargs, labels=batch["labels"])
    assert out.logits.shape[:2] == batch["labels"].shape  # decoder length = label length, no prompt slots
    assert torch.equal(model.kind_ops.loss(batch), out.loss)
    assert all(torch.equal(batch[k], before[k]) for k in before)  # the caller's batch is not modified


def test_t5_prompt_equals_writing_the_tokens(tiny_t5):
    backbone, tok = tiny_t5
    ids, rows = _prompt_from_tokens(backbone, tok, "review :")
    model = PromptedModel(backbone, tok, method_config("pt", num_tokens=len(ids)))
    batch = _batch(tok)
    labels = _label_ids(tok, ["positive", "negative"])
    B = batch["input_ids"].shape[0]
    with torch.no_grad():
        ours = backbone(**model.build_inputs(batch, prompt=rows), labels=labels).logits
        plain = backbone(input_ids=torch.cat([ids.expand(B, -1), batch["input_ids"]], 1),
                         attention_mask=torch.cat([torch.ones(B, len(ids), dtype=torch.long), batch["attention_mask"]], 1),
                         labels=labels).logits
    torch.testing.assert_close(ours, plain)


def test_t5_prompt_changes_the_output(tiny_t5):
    backbone, tok = tiny_t5
    model = PromptedModel(backbone, tok, method_config("ept"))
    batch = _batch(tok)
    labels = _label_ids(tok, ["positive", "negative"])
    with torch.no_grad():
        prompted = backbone(**model.build_inputs(batch), labels=labels).logits
        plain = backbone(**batch, labels=labels).logits
    assert not torch.allclose(prompted, plain)


def test_t5_generate_with_prompt(tiny_t5):
    backbone, tok = tiny_t5
    torch.manual_seed(0)
    model = PromptedModel(backbone, tok, method_config("ept_star"))
    batch = _batch(tok)
    texts = model.kind_ops.generate(batch, max_new_tokens=4)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # The generated ids are the greedy continuation under the prompt, step by step.
    with torch.no_grad():
        kwargs = model.build_inputs(batch)
        ids = backbone.generate(**kwargs, max_new_tokens=4, do_sample=False, num_beams=1)
        assert [s.strip() for s in tok.batch_decode(ids, skip_special_tokens=True)] == texts
        logits = backbone(**kwargs, decoder_input_ids=ids[:, :-1]).logits
    steps = ids.shape[1] - 1
    for b in range(2):  # rows that stopped early are padded after eos; compare up to it
        for t in range(steps):
            assert logits[b, t].argmax() == ids[b, t + 1]
            if ids[b, t + 1] == tok.sep_token_id:
                break


def test_label_loglik_matches_teacher_forced_loss(tiny_t5):
    backbone, tok = tiny_t5
    torch.manual_seed(0)
    model = PromptedModel(backbone, tok, method_config("resprompt", bottleneck=8))
    batch, label_ids = _batch(tok), _label_ids(tok)
    with torch.no_grad():
        scores = _label_loglik(model, batch, label_ids)  # (B, C)
        assert scores.shape == (2, 3)
        kwargs = model.build_inputs(batch)
        for c in range(3):
            labels = label_ids[c:c + 1]
            n_valid = int((labels != -100).sum())
            for b in range(2):
                row = {k: v[b:b + 1] for k, v in kwargs.items()}
                loss = backbone(**row, labels=labels).loss  # mean NLL over the label's tokens
                torch.testing.assert_close(scores[b, c], -loss * n_valid, rtol=1e-5, atol=1e-5)


def test_t5_per_row_prompts_with_prompt_mask(tiny_t5):
    """Mixed-task serving: rows with prompts of different lengths, left-padded, in one batch."""
    backbone, tok = tiny_t5
    torch.manual_seed(0)
    model = PromptedModel(backbone, tok, method_config("pt", num_tokens=3))
    long, short = model.prompt().detach(), torch.randn(1, 32) * 0.3  # n = 3 and n = 1
    prompts = torch.zeros(2, 3, 32)
    prompts[0], prompts[1, 2:] = long, short
    prompt_mask = torch.tensor([[1, 1, 1], [0, 0, 1]])
    batch, label_ids = _batch(tok), _label_ids(tok)
    with torch.no_grad():
        mixed = _label_loglik(model, batch, label_ids, prompt=prompts, prompt_mask=prompt_mask)
        alone0 = _label_loglik(model, {k: v[:1] for k, v in batch.items()}, label_ids, prompt=long)
        row1 = {"input_ids": batch["input_ids"][1:, :3], "attention_mask": batch["attention_mask"][1:, :3]}
        assert row1["attention_mask"].all()  # "dull" is [CLS] dull [SEP]: no input padding alone
        alone1 = _label_loglik(model, row1, label_ids, prompt=short)
        mixed_gen = model.kind_ops.generate(batch, 3, prompt=prompts, prompt_mask=prompt_mask)
        alone_gen = model.kind_ops.generate(row1, 3, prompt=short)
    torch.testing.assert_close(mixed[0], alone0[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1], alone1[0], rtol=1e-5, atol=1e-5)
    assert mixed_gen[1] == alone_gen[0]


def test_t5_bf16_backbone_with_fp32_prompt(tiny_t5):
    backbone, tok = tiny_t5
    backbone = copy.deepcopy(backbone).to(torch.bfloat16)
    model = PromptedModel(backbone, tok, method_config("ept_star"))
    assert model.encoder.prompt.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.encoder.parameters())
    batch = _batch(tok)
    batch["labels"] = _label_ids(tok, ["positive", "negative"])
    assert model.build_inputs(batch)["inputs_embeds"].dtype == torch.bfloat16
    loss = model.kind_ops.loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.encoder.prompt.grad.dtype == torch.float32 and model.encoder.prompt.grad.abs().sum() > 0
    scores = _label_loglik(model, batch, _label_ids(tok))
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert len(model.kind_ops.generate(batch, 2)) == 2


# ----------------------------------------------------------------------------- MiniLM (BERT)
def test_minilm_prompt_before_cls_and_token_types_padded(minilm):
    backbone, tok = minilm
    model = PromptedModel(backbone, tok, method_config("pt", num_tokens=5))
    batch = _batch(tok, ["a man is eating", "a dog"], ["someone eats food", "a cat runs"])
    assert batch["token_type_ids"].max() == 1  # a real pair
    kwargs = model.build_inputs(batch)
    B, L = batch["input_ids"].shape
    assert kwargs["inputs_embeds"].shape == (B, 5 + L, 384)
    assert torch.equal(kwargs["token_type_ids"], torch.cat([torch.zeros(B, 5, dtype=torch.long), batch["token_type_ids"]], 1))
    assert torch.equal(kwargs["attention_mask"][:, :5], torch.ones(B, 5, dtype=torch.long))
    assert "position_ids" not in kwargs  # default positions 0..n+L-1, as PEFT and HF use


def test_minilm_prompt_equals_writing_the_tokens(minilm):
    backbone, tok = minilm
    ids, rows = _prompt_from_tokens(backbone, tok, "sentiment of")
    n = len(ids)
    model = PromptedModel(backbone, tok, method_config("pt", num_tokens=n))
    batch = _batch(tok, ["a man is eating", "a dog"], ["someone eats food", "a cat runs"])
    B = batch["input_ids"].shape[0]
    with torch.no_grad():
        ours = backbone(**model.build_inputs(batch, prompt=rows)).last_hidden_state
        plain = backbone(input_ids=torch.cat([ids.expand(B, -1), batch["input_ids"]], 1),
                         attention_mask=torch.cat([torch.ones(B, n, dtype=torch.long), batch["attention_mask"]], 1),
                         token_type_ids=torch.cat([torch.zeros(B, n, dtype=torch.long), batch["token_type_ids"]], 1)
                         ).last_hidden_state
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)


def test_minilm_pooled_ignores_prompt_positions(minilm):
    backbone, tok = minilm
    model = PromptedModel(backbone, tok, method_config("ept"))
    batch = _batch(tok)
    with torch.no_grad():
        pooled = model.kind_ops.pooled(batch)
        hidden = backbone(**model.build_inputs(batch)).last_hidden_state[:, 1:]  # drop the n=1 prompt slot
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(pooled, expected, rtol=1e-4, atol=1e-4)  # kernels differ with padding (MKL, GPU)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(2))


def test_minilm_per_row_prompts_with_prompt_mask(minilm):
    backbone, tok = minilm
    torch.manual_seed(0)
    model = PromptedModel(backbone, tok, method_config("pt", num_tokens=3))
    long, short = model.prompt().detach(), torch.randn(2, 384) * 0.3
    prompts = torch.zeros(2, 3, 384)
    prompts[0], prompts[1, 1:] = long, short
    prompt_mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    batch = _batch(tok)
    with torch.no_grad():
        mixed = model.kind_ops.pooled(batch, prompt=prompts, prompt_mask=prompt_mask)
        alone0 = model.kind_ops.pooled({k: v[:1] for k, v in batch.items()}, prompt=long)
        length1 = int(batch["attention_mask"][1].sum())
        alone1 = model.kind_ops.pooled({k: v[1:, :length1] for k, v in batch.items()}, prompt=short)
    torch.testing.assert_close(mixed[0], alone0[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1], alone1[0], rtol=1e-5, atol=1e-5)


def test_minilm_bf16_backbone_with_fp32_prompt(minilm):
    backbone, tok = minilm
    backbone = copy.deepcopy(backbone).to(torch.bfloat16)
    model = PromptedModel(backbone, tok, method_config("ept"))
    pooled = model.kind_ops.pooled(_batch(tok))
    assert pooled.dtype == torch.float32 and torch.isfinite(pooled).all()
    pooled.sum().backward()
    assert model.encoder.prompt.grad.dtype == torch.float32 and model.encoder.prompt.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- helpers
def test_prepend_prompt_shapes():
    embeds, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.long)
    tti = torch.ones(2, 5, dtype=torch.long)
    out, out_mask, out_tti = prepend_prompt(embeds, mask, torch.randn(3, 8), token_type_ids=tti)
    assert out.shape == (2, 8, 8) and out_mask.shape == (2, 8) and out_tti[:, :3].sum() == 0
    per_row, _, none = prepend_prompt(embeds, mask, torch.randn(2, 4, 8), torch.ones(2, 4))
    assert per_row.shape == (2, 9, 8) and none is None


def test_unsupported_backbone_kind_is_named():
    from transformers import GPT2Config, ViTConfig

    assert backbone_kind(GPT2Config()) == "causal"
    with pytest.raises(ValueError, match="vit"):
        backbone_kind(ViTConfig())
