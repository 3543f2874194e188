"""Sentence pairs on an encoder: siamese (each side pooled apart, scored by cosine) and cross
(joint [SEP] encoding). Pooling recipes, the pair head's scalars, one batched backbone pass,
bad input, save/export round trips and the zero-shot reproduction on real data."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from ept.backbones import PromptedModel, param_counts
from ept.batching import batches, collate
from ept.kinds import encode
from ept.tasks.spec import PAIR_TASKS_BY_NAME, is_pair_task, pair_sides
from ept.tasks.templates import PAIR_SIDES, mark_word
from ept.checkpoint import export_prompt, load_exported, load_method, save_method, trainable_state
from ept.heads import (PairHead, SiameseScorer, best_threshold, cosent_loss, make_scorer, pair_head_params,
                       resolve_pair_encoding)
from ept.pooling import PoolingRecipe, pool, read_pooling
from ept.prompts import method_config
from ept.tasks import Example, get_task

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [("A man is playing a guitar.", "A man plays the guitar.", 4.8),
         ("A cat sleeps on the sofa.", "Stock markets fell sharply today.", 0.2),
         ("The child is reading a book.", "A kid reads.", 3.9)]


def _examples(rows=PAIRS):
    return [Example(source="", target="", label=y, fields=(a, b)) for a, b, y in rows]


def _model(minilm, method="ept"):
    backbone, tok = minilm
    return PromptedModel(copy.deepcopy(backbone), tok, method_config(method))


def _st_embed(backbone, tok, texts):
    """all-MiniLM-L6-v2 as sentence-transformers runs it: each text alone, mean pool, normalise."""
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt")
        with torch.no_grad():
            h = backbone(**enc).last_hidden_state
        out.append(torch.nn.functional.normalize(h.mean(1), dim=-1))
    return torch.cat(out)


# ----------------------------------------------------------------------------- pooling recipe
def test_pooling_read_from_sentence_transformers_files(minilm):
    from ept.backbones import embedded_minilm_path

    recipe = read_pooling(embedded_minilm_path())
    assert (recipe.mode, recipe.normalize) == ("mean", True)
    assert recipe.source.endswith("1_Pooling/config.json")
    assert _model(minilm).pooling == recipe


def test_pooling_default_is_stated(tiny_bert):
    recipe = read_pooling(tiny_bert)
    assert (recipe.mode, recipe.normalize) == ("mean", True)
    assert "default" in recipe.source and "1_Pooling/config.json" in recipe.source


def test_pooling_cls_and_unsupported(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    cfg = tmp_path / "1_Pooling" / "config.json"
    cfg.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert read_pooling(tmp_path) == PoolingRecipe("cls", False, str(cfg))  # no modules.json: no Normalize
    cfg.write_text(json.dumps({"pooling_mode_mean_tokens": False, "pooling_mode_lasttoken": True}))
    with pytest.raises(ValueError, match="lasttoken.*not supported"):
        read_pooling(tmp_path)


def test_pool_modes_ignore_padding():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask, PoolingRecipe("mean", False)), torch.tensor([[2.0, 1.0]]))
    assert torch.allclose(pool(hidden, mask, PoolingRecipe("max", False)), torch.tensor([[3.0, 2.0]]))
    assert torch.allclose(pool(hidden, mask, PoolingRecipe("cls", False)), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(pool(hidden, mask, PoolingRecipe("mean", True)).norm(dim=-1), torch.ones(1))


# ----------------------------------------------------------------------------- encoding
def test_siamese_encoding_stacks_both_sides(minilm_tokenizer):
    tok = minilm_tokenizer
    spec = get_task("stsb")
    enc = encode(tok, _examples(), "encoder", 64, "siamese", spec)
    batch = collate(tok, enc.features)
    assert batch["pair_rows"] == 3 and batch["input_ids"].shape[0] == 6
    for i, (a, b, _) in enumerate(PAIRS):  # row i = side A alone, row 3 + i = side B alone
        for row, text in ((i, a), (3 + i, b)):
            assert batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist() == tok(text)["input_ids"]
    assert int(batch["token_type_ids"].sum()) == 0  # no segment B anywhere
    assert batch["labels"].tolist() == pytest.approx([4.8, 0.2, 3.9])


def test_cross_encoding_is_still_joint(minilm_tokenizer):
    enc = encode(minilm_tokenizer, _examples(), "encoder", 64, "cross", get_task("stsb"))
    batch = collate(minilm_tokenizer, enc.features)
    assert "pair_rows" not in batch and batch["input_ids"].shape[0] == 3
    assert int(batch["token_type_ids"][0].sum()) > 0  # segment B typed 1


def test_pair_tasks_and_resolution():
    pair = {n for n in ("stsb", "mrpc", "qqp", "rte", "mnli", "qnli", "cb", "boolq", "wic", "paws", "scitail")}
    assert all(is_pair_task(get_task(n)) for n in pair)
    assert not any(is_pair_task(get_task(n)) for n in ("sst2", "cola", "multirc", "winogrande", "wsc"))
    assert resolve_pair_encoding("encoder", get_task("rte"), "siamese") == "siamese"
    assert resolve_pair_encoding("encoder", get_task("sst2"), "siamese") == "cross"
    assert resolve_pair_encoding("seq2seq", get_task("rte"), "siamese") == "cross"
    with pytest.raises(ValueError, match="pair_encoding='joint'.*cross, siamese"):
        resolve_pair_encoding("encoder", get_task("rte"), "joint")


def test_wic_word_is_marked():
    assert mark_word("He sat on the banks of the river.", "bank") == 'He sat on the "banks" of the river.'
    assert mark_word("She went home.", "go") == "She went home. (go)"
    ex = Example("", "", 1, ("The bank closed.", "A river bank.", "bank"))
    assert pair_sides(ex, get_task("wic")) == ('The "bank" closed.', 'A river "bank".')
    assert set(PAIR_SIDES) <= set(PAIR_TASKS_BY_NAME)  # a task's sides live with the task (ept.tasks)


@pytest.mark.parametrize("fields,needle", [
    (("only one side",), "a pair needs 2 fields"),
    (("a sentence", "   "), "side B is empty"),
    (("", "a sentence"), "side A is empty"),
])
def test_bad_pairs_are_clear_errors(minilm_tokenizer, fields, needle):
    ex = [Example("", "", 1, ("fine", "fine")), Example("", "", 0, fields)]
    with pytest.raises(ValueError, match=f"task 'mrpc', example 1: {needle}"):
        encode(minilm_tokenizer, ex, "encoder", 64, "siamese", get_task("mrpc"))


def test_siamese_needs_a_pair_task(minilm_tokenizer):
    with pytest.raises(ValueError, match="not a sentence-pair task"):
        encode(minilm_tokenizer, [Example("", "", 1, ("x",))], "encoder", 64, "siamese", get_task("sst2"))


# ----------------------------------------------------------------------------- the scorer
def test_one_backbone_pass_and_sentence_transformers_cosines(minilm):
    backbone, tok = minilm
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("ft")).eval()  # no prompt
    scorer = make_scorer(model, get_task("stsb"), pair_encoding="siamese")
    assert isinstance(scorer, SiameseScorer)
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    batch = collate(tok, scorer.encode(_examples(), 64).features)
    with torch.no_grad():
        cos = scorer.cosine(batch)
    assert len(calls) == 1  # both sides, all rows, one forward
    a = _st_embed(backbone, tok, [p[0] for p in PAIRS])
    b = _st_embed(backbone, tok, [p[1] for p in PAIRS])
    assert torch.allclose(cos, (a * b).sum(-1), atol=1e-5)  # padding together changes nothing
    assert cos[0] > 0.8 and cos[1] < 0.2


def test_prompt_reaches_both_sides_and_trains(minilm):
    model = _model(minilm, "ept").train()
    scorer = make_scorer(model, get_task("stsb"), pair_encoding="siamese")
    batch = collate(model.tokenizer, scorer.encode(_examples(), 64).features)
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    loss = scorer.loss(batch)
    loss.backward()
    assert len(calls) == 1
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.pair_head.kind == "regression" and sum(p.numel() for p in model.pair_head.parameters()) == 0


def test_cosent_loss_values():
    labels = torch.tensor([1.0, 3.0])
    assert float(cosent_loss(torch.tensor([0.4, 0.5]), labels)) == pytest.approx(math.log(1 + math.exp(20 * -0.1)), rel=1e-5)
    assert float(cosent_loss(torch.tensor([0.5, 0.4]), labels)) == pytest.approx(math.log(1 + math.exp(20 * 0.1)), rel=1e-5)
    assert float(cosent_loss(torch.tensor([0.5, 0.5]), torch.tensor([2.0, 2.0]))) == pytest.approx(0.0, abs=1e-6)  # ties: no pair


def test_best_threshold():
    cos = torch.tensor([0.1, 0.2, 0.6, 0.7, 0.9])
    t, acc = best_threshold(cos, torch.tensor([False, False, True, False, True]))
    assert acc == pytest.approx(0.8) and 0.2 < t < 0.6
    assert best_threshold(cos, torch.tensor([True] * 5)) == (pytest.approx(0.1 - 5e-4), 1.0)


def test_binary_head_fit_and_logits():
    head = PairHead.for_task(get_task("rte"))  # label 0 = entailment: the similar pairs
    cos, labels = torch.tensor([0.9, 0.8, 0.3, 0.2]), torch.tensor([0, 0, 1, 1])
    head.fit(cos, labels)
    assert int(head.positive) == 0 and 0.3 < head.threshold.item() < 0.8
    assert head.predict(cos) == [0, 0, 1, 1]
    assert {n for n, _ in head.named_parameters()} == {"threshold", "log_temperature"}
    fixed = PairHead.for_task(get_task("mrpc"), trainable=False)
    assert list(fixed.parameters()) == [] and {n for n, _ in fixed.named_buffers()} == {"threshold", "log_temperature", "positive"}


def test_three_way_head_is_lda_on_the_cosine():
    head = PairHead.for_task(get_task("cb"))
    assert head.kind == "anchors" and sum(p.numel() for p in head.parameters()) == 4
    cos = torch.tensor([0.9, 0.85, 0.1, 0.15, 0.5, 0.55])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    head.fit(cos, labels)
    assert head.anchors.tolist() == pytest.approx([0.875, 0.125, 0.525])
    assert head.predict(cos) == labels.tolist()


# ----------------------------------------------------------------------------- counted parameters
@pytest.mark.parametrize("task,expected", [("stsb", 0), ("mrpc", 2), ("rte", 2), ("cb", 4), ("mnli", 4), ("sst2", 0)])
def test_pair_head_params(task, expected):
    spec = get_task(task)
    assert pair_head_params(spec, "encoder") == expected
    assert pair_head_params(spec, "encoder", pair_head="fixed") == 0
    assert pair_head_params(spec, "encoder", pair_encoding="cross") == 0
    assert pair_head_params(spec, "seq2seq") == 0


def test_scalars_counted_in_model_and_param_counts(minilm):
    model = _model(minilm, "ept")
    make_scorer(model, get_task("mrpc"), pair_encoding="siamese")
    assert model.trainable_parameters() == 1152 + 2
    assert param_counts("minilm", method_config("ept"), pair_head=2) == {"trainable": 1154, "inference": 386}
    fixed = _model(minilm, "ept")
    make_scorer(fixed, get_task("mrpc"), pair_encoding="siamese", pair_head="fixed")
    assert fixed.trainable_parameters() == 1152


def test_cli_params_task(capsys):
    from ept.cli import main

    for argv, expected in ((["--task", "mrpc"], 1154), (["--task", "cb"], 1156), (["--task", "stsb"], 1152),
                           (["--task", "mrpc", "--pair-head", "fixed"], 1152),
                           (["--task", "mrpc", "--pair-encoding", "cross"], 1152)):
        assert main(["params", "--backbone", "minilm", "--method", "ept", "--json", *argv]) == 0
        assert json.loads(capsys.readouterr().out)["trainable"] == expected


# ----------------------------------------------------------------------------- save / export
def _fitted(minilm, task="rte", **kw):
    model = _model(minilm, "ept")
    scorer = make_scorer(model, get_task(task), pair_encoding="siamese", **kw)
    model.pair_head.fit(torch.tensor([0.9, 0.8, 0.3, 0.2, 0.7]), torch.tensor([0, 0, 1, 1, 1]))
    return model, scorer


@pytest.mark.parametrize("pair_head", ["trainable", "fixed"])
def test_save_load_round_trip(minilm, tmp_path, pair_head):
    model, _ = _fitted(minilm, pair_head=pair_head)
    assert "pair_head.positive" in trainable_state(model) and "pair_head.threshold" in trainable_state(model)
    save_method(model, tmp_path, "minilm")
    meta = json.loads((tmp_path / "method.json").read_text())
    assert meta["pair_encoding"] == "siamese" and meta["pair_head"]["trainable"] == (pair_head == "trainable")
    back = load_method(tmp_path, copy.deepcopy(minilm[0]), minilm[1])
    for k, v in model.pair_head.state_dict().items():
        assert torch.equal(back.pair_head.state_dict()[k], v)
    assert int(back.pair_head.positive) == 0


def test_export_round_trip(minilm, tmp_path):
    model, _ = _fitted(minilm)
    export_prompt(model, tmp_path, "minilm")
    prompt, meta = load_exported(tmp_path)
    assert meta["pair_encoding"] == "siamese"
    assert meta["pair_head"] == {"kind": "binary", "num_labels": 2, "trainable": True, "value_range": [0.0, 1.0]}
    assert meta["pooling"]["mode"] == "mean" and meta["pooling"]["normalize"] is True
    assert meta["inference_params"] == 384 + 2  # the prompt vector and the two scalars
    head = PairHead.from_meta(meta["pair_head"])
    head.load_state_dict(meta["pair_head_state"])
    for k, v in model.pair_head.state_dict().items():
        assert torch.equal(head.state_dict()[k], v)


def test_cross_export_says_so(minilm, tmp_path):
    model = _model(minilm, "ept")
    export_prompt(model, tmp_path, "minilm")
    assert load_exported(tmp_path)[1]["pair_encoding"] == "cross"


# ----------------------------------------------------------------------------- runs on real data
@pytest.mark.parametrize("pair_encoding", ["siamese", "cross"])
def test_train_run_both_encodings(tiny_bert, data_dir, tmp_path, pair_encoding):
    from ept.evaluation import evaluate_run
    from ept.training.recipe import TrainConfig, run

    cfg = TrainConfig(task="mrpc", method="ept", backbone=tiny_bert, steps=2, eval_every=2, batch_size=4,
                      max_eval_examples=8, max_length=32, data_dir=str(data_dir), out=str(tmp_path / "r"),
                      tensorboard=False, pair_encoding=pair_encoding, pair_fit_examples=16)
    res = run(cfg, progress=False)
    assert res["status"] == "finished"
    siamese = pair_encoding == "siamese"
    assert res["trainable_params"] == 3 * 32 + (2 if siamese else 0)
    assert res["inference_params"] == 32 + (2 if siamese else 0)
    assert load_exported(tmp_path / "r" / "export")[1]["pair_encoding"] == pair_encoding
    again = evaluate_run(tmp_path / "r")
    assert again["accuracy"] == pytest.approx(res["test"]["accuracy"])
    assert ("best_threshold_accuracy" in again) == siamese
    # siamese: the init is validated too (step 0), so the best state is never below it
    steps = [json.loads(line)["step"] for line in (tmp_path / "r" / "eval.jsonl").read_text().splitlines()]
    assert steps == ([0, 2] if siamese else [2])
    assert res["best_step"] in steps


def test_pair_prompt_lr_default(tiny_bert):
    """Unset lr: PAIR_PROMPT_LR for a prompt on a siamese pair task on an encoder, the method's
    own default everywhere else; an explicit lr always wins."""
    from ept.config import PAIR_PROMPT_LR, TrainConfig

    assert PAIR_PROMPT_LR < 0.3
    for kw in (dict(task="stsb"), dict(task="mrpc", method="pt"), dict(task="cb", backbone=tiny_bert)):
        assert TrainConfig(**kw).lr == PAIR_PROMPT_LR, kw
    for kw, lr in ((dict(task="sst2"), 0.3), (dict(task="stsb", pair_encoding="cross"), 0.3),
                   (dict(task="rte", backbone="t5-base"), 0.3), (dict(task="stsb", method="ft"), 1e-5),
                   (dict(task="stsb", lr=0.3), 0.3)):
        assert TrainConfig(**kw).lr == lr, kw
    assert TrainConfig(task="stsb", backbone="all-MiniLM-L6-v2").lr == PAIR_PROMPT_LR  # the alias


def test_zero_shot_matches_sentence_transformers_on_real_data(minilm, data_dir):
    """`ept eval --no-prompt` on 48 STS-B dev pairs equals the Pearson of sentence-transformers-
    style embeddings (each sentence alone) on the same rows."""
    from scipy.stats import pearsonr

    from ept.evaluation import evaluate_zero_shot
    from ept.tasks import load_task

    out = evaluate_zero_shot("stsb", split="dev", data_dir=data_dir, max_examples=48)
    rows = (load_task("stsb", data_dir=data_dir).validation + load_task("stsb", data_dir=data_dir).test)[:48]
    a = _st_embed(*minilm, [r.fields[0] for r in rows])
    b = _st_embed(*minilm, [r.fields[1] for r in rows])
    cos = (a * b).sum(-1).clamp(0, 1).numpy()
    assert out["examples"] == 48 and out["pair_encoding"] == "siamese"
    assert out["pearson"] == pytest.approx(100 * pearsonr(cos, [r.label for r in rows])[0], abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("task,metric,expected", [("stsb", "pearson", 87.0), ("mrpc", "best_threshold_accuracy", 75.0),
                                                  ("rte", "best_threshold_accuracy", 63.5)])
def test_zero_shot_table_full_dev(data_dir, task, metric, expected):
    """The issue's zero-shot table (issue 15) on the whole official dev sets, within 1 point."""
    from ept.evaluation import evaluate_zero_shot

    out = evaluate_zero_shot(task, split="dev", data_dir=data_dir)
    assert out[metric] == pytest.approx(expected, abs=1.0)


def _eval_predictions(run_dir, examples):
    """What `ept eval RUN` computes for these rows: the run's best state, its own scorer."""
    from ept.evaluation import load_run
    from ept.training.recipe import evaluate  # noqa: F401  (the same loop; here the predictions, not the metric)

    cfg, model = load_run(run_dir)
    model.eval()
    spec = get_task(cfg.task)
    scorer = make_scorer(model, spec, pair_encoding=cfg.pair_encoding, pair_head=cfg.pair_head)
    enc = scorer.encode(examples, cfg.max_length)
    with torch.no_grad():
        return [p for b in batches(model.tokenizer, enc, 5) for p in scorer.predict(b)]


def test_serving_a_siamese_export_equals_ept_eval_in_mixed_batches(tiny_bert, data_dir, tmp_path):
    """Siamese exports (a binary and a regression pair head) served with a single-sentence task in
    ONE pass: every pair row's prediction is `ept eval`'s for that row, the metric over the rows
    is `ept eval`'s metric, and the single-sentence rows score as they do alone."""
    from ept.evaluation import evaluate_run
    from ept.serving.server import build_server, load_prompts
    from ept.tasks import load_task, score
    from ept.training.recipe import TrainConfig, run

    folders, rows, origin = {}, [], []
    for task in ("mrpc", "stsb"):
        out = tmp_path / task
        run(TrainConfig(task=task, method="ept", backbone=tiny_bert, steps=2, eval_every=2, batch_size=4,
                        max_eval_examples=12, max_length=32, data_dir=str(data_dir), out=str(out),
                        tensorboard=False, pair_fit_examples=32), progress=False)
        folders[task] = out / "export"
    loaded = load_prompts(folders)
    server = build_server(loaded, max_length=32)
    solo = torch.randn(3, server.model.embed_dim)
    server.add_task("mood", solo, label_words=("sad", "happy"))
    tests = {t: load_task(t, data_dir=data_dir).test[:12] for t in folders}
    for j in range(12):  # interleaved: pair rows of two tasks beside single sentences
        for t in folders:
            rows.append({"task": t, "fields": list(tests[t][j].fields)})
            origin.append(t)
        rows.append({"task": "mood", "text": tests["mrpc"][j].fields[0]})
        origin.append("mood")
    mixed = server.score(rows, batch_size=len(rows))
    assert server.tasks["mrpc"].mode == server.tasks["stsb"].mode == "siamese"
    for t in folders:
        got = [r for r, o in zip(mixed, origin) if o == t]
        want = _eval_predictions(tmp_path / t, tests[t])
        preds = [r["prediction"] for r in got]
        if t == "stsb":
            assert preds == pytest.approx(want, abs=1e-5)
            assert all(len(r["scores"]) == 1 and -1 <= r["scores"][0] <= 1 for r in got)  # the cosine
        else:
            assert preds == want and {r["label"] for r in got} <= {"not_equivalent", "equivalent"}
        metric = get_task(t).main_metric
        assert score(get_task(t), preds, tests[t])[metric] == pytest.approx(evaluate_run(tmp_path / t)[metric], abs=1e-3)
    alone = server.score([r for r in rows if r["task"] == "mood"])
    assert [r["prediction"] for r in alone] == [r["prediction"] for r, o in zip(mixed, origin) if o == "mood"]
    torch.testing.assert_close(torch.tensor([r["scores"] for r in alone]),
                               torch.tensor([r["scores"] for r, o in zip(mixed, origin) if o == "mood"]), rtol=1e-4, atol=1e-4)
    chunked = server.score(rows, batch_size=7)  # sorted passes still mixing tasks: same predictions
    assert [r["prediction"] for r in chunked] == pytest.approx([r["prediction"] for r in mixed], abs=1e-5)


def test_serving_siamese_rows_need_two_sides(tiny_bert, data_dir, tmp_path):
    from ept.serving.server import MultiTaskServer, RowError
    from ept.training.recipe import TrainConfig, run

    out = tmp_path / "mrpc"
    run(TrainConfig(task="mrpc", method="ept", backbone=tiny_bert, steps=1, eval_every=1, batch_size=4,
                    max_eval_examples=4, max_length=32, data_dir=str(data_dir), out=str(out), tensorboard=False,
                    pair_fit_examples=16), progress=False)
    from ept.backbones import load_backbone

    server = MultiTaskServer(*load_backbone(tiny_bert))
    server.add_task("mrpc", out / "export", get_task("mrpc"))
    with pytest.raises(RowError, match="row 0: .*'sentence2' is empty"):  # rendered as training does: named
        server.score([{"task": "mrpc", "fields": ["A man sleeps.", " "]}])
    with pytest.raises(RowError, match="row 1: .*\"fields\" must list 2 string"):
        server.score([{"task": "mrpc", "fields": ["a", "b"]}, {"task": "mrpc", "fields": ["only one"]}])
    with pytest.raises(RowError, match="row 0: .*has 2 input fields .*give \"inputs\""):
        server.score([{"task": "mrpc", "text": "only one"}])
    with pytest.raises(RowError, match="row 0: .*scores sentence pairs: give its two sides"):
        server.score([{"task": "mrpc", "source": "mrpc sentence1: a sentence2: b"}])
    with pytest.raises(ValueError, match="pair head scores 2 labels, the task has 3"):
        server.add_task("cb", out / "export", get_task("cb"))


def test_http_upload_of_a_siamese_prompt_file_names_the_fix():
    """Raw prompt.safetensors bytes carry no pair head kind or pooling: refused, naming the way
    that works (the export folder)."""
    pytest.importorskip("fastapi")
    from safetensors.torch import save

    from ept.serving.http_app import _uploaded

    body = save({"prompt": torch.zeros(1, 8), "pair_head.threshold": torch.zeros(1)})
    with pytest.raises(ValueError, match="siamese pair head: load its export folder"):
        _uploaded(body, {})
    assert _uploaded(save({"prompt": torch.zeros(1, 8)}), {})[0].shape == (1, 8)
