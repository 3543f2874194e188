"""Decoder-only (causal LM) backbones: a tiny random Llama built from a config, offline.

What must hold: every method trains on it; a row scores the same alone and padded in a batch
(left or right) and behind a masked prompt slot; cached rank scores equal a full recomputation;
greedy decoding equals transformers' `generate`; the prompt goes after BOS when the tokenizer adds
one; the PEFT export gives the same logits; SmolLM2's counts are the paper's 3e.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from ept.backbones import PromptedModel, param_counts
from ept.batching import batches, collate
from ept.kinds import encode
from ept.kinds.causal import (ANSWER_CUE, greedy_generate, label_id_table, rank_scores, target_ids, target_loss)
from ept.heads import make_scorer
from ept.prompts import METHODS, method_config
from ept.tasks import get_task
from ept.tasks.spec import Example

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = ["a gem of a film", "dull , lifeless and far too long", "it works", "the plot is thin but the cast sparkles"]


def tiny_llama_config(tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def llama_tok(minilm_tokenizer):
    tok = copy.deepcopy(minilm_tokenizer)
    tok.eos_token = "[SEP]"  # the answer's end; WordPiece has no newline tokens
    return tok


@pytest.fixture(scope="module")
def tiny_llama(llama_tok):
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(tiny_llama_config(llama_tok))
    return model.eval().requires_grad_(False), llama_tok


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory, tiny_llama):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama[0].save_pretrained(path)
    tiny_llama[1].save_pretrained(path)
    return str(path)


def examples(spec, n=4):
    return [Example(source=f"sst2 sentence: {s}", target=spec.label_words[i % 2], label=i % 2, fields=(s,))
            for i, s in enumerate(SENTENCES[:n])]


def prompted(tiny_llama, method="ept", **options):
    backbone, tok = tiny_llama
    torch.manual_seed(0)
    return PromptedModel(copy.deepcopy(backbone), tok, method_config(method, **options))


def _batch(tok, feats):
    return collate(tok, feats)


# ------------------------------------------------------------------------------ kind and counts
def test_kind_is_causal_and_smollm2_counts_are_3e():
    from transformers import LlamaConfig

    from ept.backbones import backbone_kind

    assert backbone_kind(LlamaConfig()) == "causal"
    counts = param_counts("smollm2-135m", method_config("ept"))
    assert counts == {"trainable": 3 * 576, "inference": 576}
    assert param_counts("smollm2-135m", method_config("pt"))["trainable"] == 10 * 576
    # the frozen model, counted on the meta device from config facts (no weights needed)
    assert param_counts("smollm2-135m", method_config("ft"))["trainable"] == 134_515_008


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_a_step(tiny_llama, method):
    spec = get_task("sst2")
    model = prompted(tiny_llama, method)
    model.train()
    scorer = make_scorer(model, spec)
    batch = _batch(model.tokenizer, encode(model.tokenizer, examples(spec), "causal", 64).features)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    assert before, f"{method}: nothing to train"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = scorer.loss(batch)
    assert math.isfinite(float(loss.detach())) and float(loss.detach()) > 1.0  # random model: near log(vocab) = 10.3
    loss.backward()
    opt.step()
    changed = [k for k, v in model.named_parameters() if v.requires_grad and not torch.equal(v, before[k])]
    assert changed, f"{method}: no trainable parameter moved"
    frozen = [k for k, v in model.backbone.named_parameters() if not v.requires_grad]
    if METHODS.get(method).config_cls.trains_backbone:
        assert not frozen
    else:
        assert frozen


@pytest.mark.parametrize("init", ["vocab", "label", "text"])
def test_inits_copy_this_tokenizers_embeddings(tiny_llama, init):
    backbone, tok = tiny_llama
    options = {"init": init, "init_text": "classify the review"} if init == "text" else {"init": init}
    ids = tok(" ".join(get_task("sst2").label_words), add_special_tokens=False)["input_ids"] if init == "label" else None
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("pt", **options), init_token_ids=ids)
    table = backbone.get_input_embeddings().weight
    rows = model.encoder.prompt.detach()
    assert all(any(torch.equal(r, t) for t in table) for r in rows)


# ------------------------------------------------------------------------------ positions and padding
def _row_scores(model, spec, feats, side):
    model.tokenizer.padding_side = side
    try:
        return rank_scores(model, _batch(model.tokenizer, feats), label_id_table(model.tokenizer, spec.label_words))
    finally:
        model.tokenizer.padding_side = "right"


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_row_scores_the_same_alone_and_padded(tiny_llama, side):
    spec = get_task("sst2")
    model = prompted(tiny_llama, "pt").eval()
    feats = encode(model.tokenizer, examples(spec), "causal", 64).features
    assert len({len(f["input_ids"]) for f in feats}) > 1  # rows of different lengths: padding happens
    with torch.no_grad():
        together = _row_scores(model, spec, feats, side)
        alone = torch.cat([_row_scores(model, spec, [f], side) for f in feats])
        loss_alone = [target_loss(model, _batch(model.tokenizer, [f])) for f in feats]
        model.tokenizer.padding_side = side
        losses = [target_loss(model, _batch(model.tokenizer, [f, feats[-1]])) for f in feats[:-1]]
        model.tokenizer.padding_side = "right"
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
    # a pair's mean loss = the mean of its rows' losses when both targets have the same length
    for i, pair in enumerate(losses):
        torch.testing.assert_close(pair, (loss_alone[i] + loss_alone[-1]) / 2, atol=1e-4, rtol=1e-4)


def test_masked_prompt_slots_do_not_shift_positions(tiny_llama):
    """Mixed-task batches pad shorter prompts with masked slots: the row must not notice."""
    spec = get_task("sst2")
    model = prompted(tiny_llama, "pt").eval()
    feats = encode(model.tokenizer, examples(spec, 1), "causal", 64).features
    batch = _batch(model.tokenizer, feats)
    labels = label_id_table(model.tokenizer, spec.label_words)
    short = torch.randn(3, model.embed_dim)
    padded = torch.cat([short, torch.randn(2, model.embed_dim)]).unsqueeze(0)  # 2 junk slots after
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    with torch.no_grad():
        ref = rank_scores(model, batch, labels, prompt=short)
        got = rank_scores(model, batch, labels, prompt=padded, prompt_mask=mask)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ scoring
def test_cached_rank_scores_equal_full_recomputation(tiny_llama):
    spec = get_task("rte")  # two multi-token label strings
    model = prompted(tiny_llama, "ept_star").eval()
    tok = model.tokenizer
    exs = [Example(source=f"rte sentence1: {s} sentence2: {t}", target="entailment", label=0, fields=(s, t))
           for s, t in zip(SENTENCES, reversed(SENTENCES))]
    feats = encode(tok, exs, "causal", 64).features
    labels = label_id_table(tok, spec.label_words)
    assert labels.shape[1] > 2
    with torch.no_grad():
        cached = rank_scores(model, _batch(tok, feats), labels)
        prompt = model.prompt()
        for r, f in enumerate(feats):
            for c, word in enumerate(spec.label_words):
                tgt = target_ids(tok, word)
                ids = torch.tensor([f["input_ids"] + tgt])
                kw = model.build_inputs({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, prompt)
                logp = model.backbone(**kw).logits.float().log_softmax(-1)[0]
                T = len(tgt)
                full = logp[-T - 1:-1].gather(1, torch.tensor(tgt)[:, None]).sum()
                torch.testing.assert_close(cached[r, c], full, atol=1e-4, rtol=1e-4)


def test_greedy_generation_equals_transformers_generate(tiny_llama):
    backbone, tok = tiny_llama
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("pt")).eval()
    spec = get_task("sst2")
    feats = encode(tok, examples(spec), "causal", 64).features
    empty = torch.zeros(0, model.embed_dim)
    with torch.no_grad():
        ours = greedy_generate(model, _batch(tok, feats), 6, prompt=empty)
        for f, text in zip(feats, ours):
            ids = torch.tensor([f["input_ids"]])
            out = backbone.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                    do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            new = out[0, ids.shape[1]:].tolist()
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id)]
            assert text == tok.decode(new, skip_special_tokens=True).strip()


def test_prompt_goes_after_bos_when_the_tokenizer_adds_one(tiny_llama):
    backbone, tok = tiny_llama
    tok = copy.deepcopy(tok)
    tok.bos_token = "[CLS]"  # WordPiece starts every text with [CLS]: it now counts as BOS
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("ept"))
    assert model.uses_bos
    feats = encode(tok, examples(get_task("sst2"), 1), "causal", 64).features
    assert feats[0]["input_ids"][0] != tok.bos_token_id  # inputs come without special tokens
    kw = model.build_inputs(_batch(tok, feats))
    bos_embed = backbone.get_input_embeddings().weight[tok.bos_token_id]
    torch.testing.assert_close(kw["inputs_embeds"][0, 0], bos_embed)
    torch.testing.assert_close(kw["inputs_embeds"][0, 1], model.prompt()[0].detach())
    assert kw["position_ids"][0, :3].tolist() == [0, 1, 2]


def test_generation_and_regression_scorers(tiny_llama):
    model = prompted(tiny_llama, "pt").eval()
    tok = model.tokenizer
    spec = get_task("stsb")
    exs = [Example(source=f"stsb sentence1: {s} sentence2: {s}", target="5.0", label=5.0, fields=(s, s)) for s in SENTENCES]
    batch = _batch(tok, encode(tok, exs, "causal", 64).features)
    preds = make_scorer(model, spec).predict(batch)
    assert all(p in {float(w) for w in spec.label_words} for p in preds)
    texts = make_scorer(model, spec, "generate").predict(batch)
    assert len(texts) == len(exs) and all(isinstance(t, str) for t in texts)


def test_bad_input_is_named(tiny_llama):
    model = prompted(tiny_llama, "pt")
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        target_ids(model.tokenizer, "   ")
    with pytest.raises(ValueError, match="answer cue"):
        encode(model.tokenizer, examples(get_task("sst2")), "causal", 2)
    assert ANSWER_CUE.strip()


# ------------------------------------------------------------------------------ run folder and export
def test_train_run_and_peft_export_on_tiny_llama(tiny_llama_dir, data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ept.checkpoint import load_exported
    from ept.training.recipe import TrainConfig, run

    out = tmp_path / "run"
    res = run(TrainConfig(task="sst2", method="ept_star", backbone=tiny_llama_dir, steps=4, eval_every=2,
                          batch_size=4, max_eval_examples=8, max_length=32, data_dir=str(data_dir), out=str(out),
                          tensorboard=False), progress=False)
    assert res["status"] == "finished" and res["test"]["accuracy"] is not None
    assert res["trainable_params"] == 3 * 32
    prompt, meta = load_exported(out / "export")
    assert meta["stored_vectors"] == 1 and prompt.shape == (10, 32)
    import json

    assert json.loads((out / "export" / "peft" / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    peft_model = PeftModel.from_pretrained(base, str(out / "export" / "peft")).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1]:]
        ours = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
        emb = torch.cat([prompt.unsqueeze(0), ours.get_input_embeddings()(ids)], dim=1)
        mine = ours(inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2])).logits[:, -ids.shape[1]:]
    torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ the real model
@pytest.mark.slow
def test_ept_learns_sst2_on_real_smollm2(data_dir):
    """Real SmolLM2-135M (after `ept fetch smollm2-135m`), real SST-2: 30 EPT steps must cut the
    target loss clearly below its step-0 value."""
    from ept.backbones import load_backbone
    from ept.tasks import load_task

    try:
        backbone, tok = load_backbone("smollm2-135m")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    data = load_task("sst2", data_dir=str(data_dir))
    torch.manual_seed(0)
    model = PromptedModel(backbone, tok, method_config("ept")).train()
    scorer = make_scorer(model, data.spec)
    enc = encode(tok, data.train[:240], "causal", 64)
    probe = _batch(tok, enc.features[:16])
    with torch.no_grad():
        start = float(scorer.loss(probe))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3, weight_decay=0.01)
    for batch in list(batches(tok, enc, 8))[:30]:
        scorer.loss(batch).backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        end = float(scorer.loss(probe))
    assert end < 0.5 * start, (start, end)


# ------------------------------------------------------------------------------ sliding windows (Gemma 3)
def tiny_gemma3(tok, window: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, sliding_window=window, layer_types=["sliding_attention", "full_attention"] * 2,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("init", ["vocab", "text"])
def test_a_gemma_prompt_starts_at_the_scale_of_the_tokens_it_reads(llama_tok, init):
    """Gemma multiplies its embedding rows by sqrt(e) inside embed_tokens: a prompt copied from the
    raw table rows started sqrt(32) (on Gemma-3-270M, 25x) smaller than every token the model reads.
    It is initialised from the module's output, as PEFT does."""
    backbone = tiny_gemma3(llama_tok, window=4)
    options = {"init": init, "init_text": "classify the review"} if init == "text" else {"init": init}
    torch.manual_seed(0)
    model = PromptedModel(backbone, llama_tok, method_config("pt", num_tokens=4, **options))
    embed = backbone.get_input_embeddings()
    tokens = embed(torch.arange(embed.weight.shape[0]))
    rows = model.encoder.prompt.detach()
    assert all(any(torch.equal(r, t) for t in tokens) for r in rows)
    assert rows.norm(dim=1).mean() == pytest.approx(float(tokens.norm(dim=1).mean()), rel=0.5)
    assert not any(torch.equal(rows[0], t) for t in embed.weight)  # not the unscaled table rows


@pytest.mark.parametrize("side", ["right", "left"])
def test_sliding_window_counts_positions_not_padded_slots(llama_tok, side):
    """Issue 21: a sliding-window layer (Gemma 3) must see the same keys for a row in a padded batch
    as for the row alone. The window is counted in positions (which come from the mask), not in
    slots: counted in slots, the pads between a short row's prompt and its answer pushed BOS and
    the prompt out of a small window. Loss, rank scores and generation each equal the row alone."""
    tok = copy.deepcopy(llama_tok)
    tok.padding_side, tok.bos_token = side, "[CLS]"  # with BOS, as Gemma's tokenizer
    torch.manual_seed(0)
    model = PromptedModel(tiny_gemma3(tok, window=4), tok, method_config("pt", num_tokens=3)).eval()
    assert model.uses_bos
    spec = get_task("sst2")
    exs = examples(spec)
    feats = encode(tok, exs, "causal", 64).features
    assert len({len(f["input_ids"]) for f in feats}) > 1  # really padded
    scorer = make_scorer(model, spec)
    with torch.no_grad():
        batch = _batch(tok, feats)
        alone = [_batch(tok, [f]) for f in feats]
        torch.testing.assert_close(scorer.label_scores(batch), torch.cat([scorer.label_scores(b) for b in alone]),
                                   rtol=1e-5, atol=1e-5)
        sizes = torch.tensor([float((b["labels"] != -100).sum()) for b in alone])
        per_row = torch.stack([target_loss(model, b) for b in alone])
        torch.testing.assert_close(target_loss(model, batch), (per_row * sizes).sum() / sizes.sum(), rtol=1e-5, atol=1e-5)
        assert greedy_generate(model, batch, 5) == [greedy_generate(model, b, 5)[0] for b in alone]


@pytest.mark.parametrize("first", ["none", "bos", "sink"])
def test_peft_export_reproduces_ept_scores_with_and_without_bos(tiny_llama, tmp_path, first):
    """Issue 21: ept runs [BOS][P'][x] (or [sink][P'][x]); PEFT puts its virtual tokens before the
    tokenised input. Used as the README says (`PeftModel.from_pretrained(base, OUT/peft)`, inputs
    tokenised with add_special_tokens=False, as prompt.json records), the exported adapter must give
    ept's logits on every input position whether the tokenizer adds BOS or not: the adapter's first
    virtual token is then BOS's (or the sink token's) embedding."""
    from peft import PeftModel

    from ept.kinds.causal import _run, lm_logits
    from ept.checkpoint import export_prompt, load_exported

    backbone, tok = tiny_llama
    tok = copy.deepcopy(tok)
    if first == "bos":
        tok.bos_token = "[CLS]"  # WordPiece starts every text with [CLS]: a BOS tokenizer (Llama 3, Gemma)
    torch.manual_seed(0)
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("ept"),
                          sink_token="[CLS]" if first == "sink" else None).eval()
    assert model.uses_bos == (first == "bos")
    export_prompt(model, tmp_path, "tiny")
    _, meta = load_exported(tmp_path)
    assert meta["peft_add_special_tokens"] is False
    peft_model = PeftModel.from_pretrained(copy.deepcopy(backbone), str(tmp_path / "peft")).eval()
    text = "sst2 sentence: a gem of a film" + ANSWER_CUE
    ids = tok(text, add_special_tokens=meta["peft_add_special_tokens"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1]:]
        hidden, _ = _run(model, **model.build_inputs({"input_ids": ids, "attention_mask": torch.ones_like(ids)}))
        ours = lm_logits(model, hidden[:, -ids.shape[1]:])
    torch.testing.assert_close(theirs.float(), ours, atol=1e-5, rtol=1e-5)


def test_an_old_run_is_exported_and_served_with_its_template_and_label_scoring(tiny_llama_dir, data_dir, tmp_path):
    """A run whose best/method.json predates the template / label_score_eos fields is exported
    with its config's: it once fell back to label_score_eos true, so `ept serve` added an EOS term
    the run never scored (found by experiments/crosscheck/lm_eval_check.py, 2e-3 nats off lm-eval)."""
    import json

    from ept.cli import main
    from ept.training.recipe import TrainConfig, run

    out = tmp_path / "run"
    run(TrainConfig(task="sst2", method="pt", backbone=tiny_llama_dir, steps=2, eval_every=2, batch_size=4,
                    max_eval_examples=4, max_length=32, data_dir=str(data_dir), out=str(out), tensorboard=False,
                    template="natural", label_score_eos=False), progress=False)
    method_json = out / "best" / "method.json"
    meta = json.loads(method_json.read_text())
    assert meta["label_score_eos"] is False and meta["template"] == "natural"
    method_json.write_text(json.dumps({k: v for k, v in meta.items() if k not in ("template", "label_score_eos")}))
    assert main(["export", str(out), "--out", str(tmp_path / "old")]) == 0
    exported = json.loads((tmp_path / "old" / "prompt.json").read_text())
    assert exported["label_score_eos"] is False and exported["template"] == "natural"
    # RUN/export/ written by such a run: read with its run's settings, without exporting again
    from ept.checkpoint import load_exported

    in_run = out / "export" / "prompt.json"
    in_run.write_text(json.dumps({k: v for k, v in json.loads(in_run.read_text()).items()
                                  if k not in ("task", "template", "label_score_eos")}))
    _, meta = load_exported(out / "export")
    assert (meta["task"], meta["template"], meta["label_score_eos"]) == ("sst2", "natural", False)
    # ... copied away from its run folder, nothing can fill them: it is served with the defaults, and says so
    import shutil
    import warnings

    shutil.copytree(out / "export", tmp_path / "copied")
    copied = tmp_path / "copied" / "prompt.json"
    copied.write_text(json.dumps({**json.loads(copied.read_text()), "task": "sst2"}))  # as such exports were
    with pytest.warns(UserWarning, match=r"copied/prompt.json: records no template .*\(ept export RUN\)"):
        _, meta = load_exported(tmp_path / "copied")
    assert "template" not in meta and "label_score_eos" not in meta
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one that records its template loads silently, as does a task-less prompt
        load_exported(tmp_path / "old")
        copied.write_text(json.dumps({k: v for k, v in json.loads(copied.read_text()).items() if k != "task"}))
        load_exported(tmp_path / "copied")
