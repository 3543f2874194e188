"""Mixed-task serving (ept.serving.server, `ept serve`): one batch mixing tasks, prompt lengths and label
sets must score every row exactly as that task's own scorer does on a single-task batch."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from ept.backbones import PromptedModel
from ept.batching import collate
from ept.kinds import encode
from ept.heads import make_scorer
from ept.prompts import PTConfig
from ept.serving.server import LabelSpec, MultiTaskServer

SENTENCES = [
    "a gripping , funny and moving film .",
    "dull",
    "the plot goes nowhere and the actors seem to know it , which makes the two hours feel like four .",
    "an utterly charming surprise",
    "not worth the ticket",
    "it 's a mess , but an ambitious one , and i kept watching .",
]
PAIRS = [
    ("A man is sleeping on the couch.", "The man is awake."),
    ("The company reported record profits this year, beating every analyst's forecast.", "Profits rose."),
    ("Cats purr.", "Some animals make sounds when they are content, for example cats purr loudly."),
    ("Paris is the capital of France.", "France has a capital."),
]


def _backbone(request, name):
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:  # running without the shared conftest
        from ept.backbones import load_backbone

        if name == "minilm":
            model, tok = load_backbone("minilm")
        else:
            from transformers import T5Config, T5ForConditionalGeneration

            _, tok = load_backbone("minilm")
            torch.manual_seed(0)
            model = T5ForConditionalGeneration(T5Config(
                vocab_size=tok.vocab_size, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
                decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))
        return model.eval().requires_grad_(False), tok


@pytest.fixture(scope="module")
def mini_bb(request):
    return _backbone(request, "minilm")


@pytest.fixture(scope="module")
def t5_bb(request):
    return _backbone(request, "tiny_t5")


def _prompt(n, e, seed, broadcast=False):
    g = torch.Generator().manual_seed(seed)
    p = torch.empty(1 if broadcast else n, e).uniform_(-0.5, 0.5, generator=g)
    return p.expand(n, -1) if broadcast else p


def _example(fields, label=0, target=""):
    source = " ".join(fields)
    return SimpleNamespace(source=source, target=target, label=label, fields=tuple(fields))


def _task(name, words, prompt, examples, eval_mode=None) -> dict:
    """One task of a mixed-batch test: its label spec, P' and rows (and generate mode if asked)."""
    task = dict(spec=LabelSpec(name, label_words=words), prompt=prompt, examples=examples)
    return {**task, "eval_mode": eval_mode} if eval_mode else task


def _solo(model, tok, spec, prompt, examples, kind, eval_mode=None):
    """Reference: the task's own scorer on a batch of its rows only, through ept.batching."""
    wrapped = PromptedModel(model, tok, PTConfig(num_tokens=prompt.shape[0])).eval()
    scorer = make_scorer(wrapped, spec, eval_mode)
    batch = collate(tok, encode(tok, examples, kind, 256).features)
    with torch.no_grad():
        # one backbone pass each: classification predictions are the argmax of these scores in
        # EncoderLabelScorer.predict and TextScorer.predict (rank) alike
        if kind == "encoder" and spec.kind == "classification":
            scores = scorer.logits(batch, prompt)
            return scores, scores.argmax(-1).tolist()
        if kind == "encoder":
            return scorer.logits(batch, prompt), scorer.predict(batch, prompt)
        if scorer.eval_mode == "rank":
            scores = scorer.label_scores(batch, prompt)
            return scores, scores.argmax(-1).tolist()
        return None, scorer.predict(batch, prompt)


def _mixed_rows(tasks):
    """Interleave the tasks' rows so that neighbours differ in task, prompt length and label set."""
    rows, origin = [], []
    longest = max(len(t["examples"]) for t in tasks.values())
    for j in range(longest):
        for name, t in tasks.items():
            if j < len(t["examples"]):
                ex = t["examples"][j]
                rows.append({"task": name, "fields": list(ex.fields)} if len(ex.fields) > 1 else {"task": name, "text": ex.fields[0]})
                origin.append((name, j))
    return rows, origin


def _check_equal(server, model, tok, tasks, kind):
    rows, origin = _mixed_rows(tasks)
    results = server.score(rows, batch_size=len(rows))  # ONE batch of every task
    assert len({server.tasks[r["task"]].prompt.shape[0] for r in rows}) > 1  # prompt lengths really differ
    for name, t in tasks.items():
        scores, preds = _solo(model, tok, t["spec"], t["prompt"], t["examples"], kind, t.get("eval_mode"))
        got = [results[i] for i, (task, _) in enumerate(origin) if task == name]
        assert [r["task"] for r in got] == [name] * len(t["examples"])
        predictions = [r["prediction"] for r in got]
        if predictions and isinstance(predictions[0], float):  # regression: a number, equal up to rounding
            assert predictions == pytest.approx(preds, rel=1e-5), name
        else:
            assert predictions == preds, name
        if scores is not None:
            mixed = torch.tensor([r["scores"] for r in got])
            torch.testing.assert_close(mixed, scores.float(), rtol=1e-4, atol=1e-4, msg=name)
    # passes of 8 rows sorted by prompt and input length (still mixing tasks): same, in input order
    chunked = server.score(rows, batch_size=8)
    assert [r["task"] for r in chunked] == [r["task"] for r in results]
    for a, b in zip(chunked, results):  # numbers up to rounding; labels and generated text exactly
        want = b["prediction"]
        assert a["prediction"] == (pytest.approx(want, rel=1e-5) if isinstance(want, float) else want)


def test_mixed_batch_equals_each_task_alone_minilm(mini_bb):
    model, tok = mini_bb
    e = model.config.hidden_size
    tasks = {
        "sst2_ept": _task("sst2_ept", ("negative", "positive"), _prompt(1, e, 1),
                    [_example([s]) for s in SENTENCES]),
        "rte_pt": _task("rte_pt", ("entailment", "not_entailment"), _prompt(10, e, 2),
                    [_example(list(p)) for p in PAIRS]),
        "cb_eptstar": _task("cb_eptstar", ("entailment", "contradiction", "neutral"), _prompt(10, e, 3, broadcast=True),
                    [_example(list(p)) for p in PAIRS[::-1]]),
        "mood_n4": dict(spec=SimpleNamespace(name="mood_n4", kind="classification", label_words=("sad", "happy", "angry", "calm")),
                        prompt=_prompt(4, e, 4), examples=[_example([s]) for s in SENTENCES[2:]]),
        "stsb_ept": dict(spec=LabelSpec("stsb_ept", "regression", anchor_words=("unrelated", "identical"), value_range=(0.0, 5.0)),
                         prompt=_prompt(1, e, 5), examples=[_example(list(p)) for p in PAIRS]),
    }
    server = MultiTaskServer(model, tok)
    for name, t in tasks.items():
        server.add_task(name, t["prompt"], t["spec"])
    _check_equal(server, model, tok, tasks, "encoder")


def test_mixed_batch_equals_each_task_alone_tiny_t5(t5_bb):
    model, tok = t5_bb
    e = model.config.d_model
    tasks = {
        "sst2_ept": _task("sst2_ept", ("negative", "positive"), _prompt(1, e, 1),
                    [_example([s]) for s in SENTENCES]),
        "rte_pt": _task("rte_pt", ("entailment", "not_entailment"), _prompt(10, e, 2),
                    [_example(list(p)) for p in PAIRS]),  # not_entailment: several word pieces
        "cb_eptstar": _task("cb_eptstar", ("entailment", "contradiction", "neutral"), _prompt(10, e, 3, broadcast=True),
                    [_example([s]) for s in SENTENCES[::-1]]),
        "gen_n3": _task("gen_n3", ("no", "yes"), _prompt(3, e, 4),
                    [_example([s]) for s in SENTENCES[:4]], eval_mode="generate"),
    }
    server = MultiTaskServer(model, tok)
    for name, t in tasks.items():
        server.add_task(name, t["prompt"], t["spec"], eval_mode=t.get("eval_mode"))
    _check_equal(server, model, tok, tasks, "seq2seq")


def _tiny_llama(minilm_tokenizer, padding_side="right", bos=False):
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    tok = copy.deepcopy(minilm_tokenizer)
    tok.eos_token = "[SEP]"
    tok.padding_side = padding_side
    if bos:  # [CLS] opens every text: PromptedModel puts BOS before the prompt
        tok.bos_token = "[CLS]"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))
    return model.eval().requires_grad_(False), tok


def test_mixed_batch_equals_each_task_alone_tiny_llama(minilm_tokenizer):
    """Decoder-only: prompts of 1, 10 and 3 rows in one pass (masked slots never at position 0),
    rank over multi-token labels and greedy generation, each equal to the task's own scorer."""
    model, tok = _tiny_llama(minilm_tokenizer)
    e = model.config.hidden_size
    tasks = {
        "sst2_ept": _task("sst2_ept", ("negative", "positive"), _prompt(1, e, 1),
                    [_example([s]) for s in SENTENCES]),
        "rte_pt": _task("rte_pt", ("entailment", "not_entailment"), _prompt(10, e, 2),
                    [_example([" ".join(p)]) for p in PAIRS]),
        "gen_n3": _task("gen_n3", ("no", "yes"), _prompt(3, e, 4),
                    [_example([s]) for s in SENTENCES[:4]], eval_mode="generate"),
    }
    server = MultiTaskServer(model, tok)
    for name, t in tasks.items():
        server.add_task(name, t["prompt"], t["spec"], eval_mode=t.get("eval_mode"))
    _check_equal(server, model, tok, tasks, "causal")


# ---------------------------------------------------------------------- causal prompt KV cache
def _causal_tasks(e):
    return {  # EPT n=1, PT n=10, EPT* n=10 (one row broadcast), greedy generation behind n=3
        "sst2_ept": dict(spec=LabelSpec("sst2_ept", label_words=("negative", "positive")), prompt=_prompt(1, e, 1)),
        "rte_pt": dict(spec=LabelSpec("rte_pt", label_words=("entailment", "not_entailment")), prompt=_prompt(10, e, 2)),
        "cb_eptstar": dict(spec=LabelSpec("cb_eptstar", label_words=("entailment", "contradiction", "neutral")),
                           prompt=_prompt(10, e, 3, broadcast=True)),
        "gen_n3": dict(spec=LabelSpec("gen_n3", label_words=("no", "yes")), prompt=_prompt(3, e, 4), eval_mode="generate"),
    }


def _causal_server(model, tok, tasks, **options):
    server = MultiTaskServer(model, tok, **options)
    for name, t in tasks.items():
        server.add_task(name, t["prompt"], t["spec"], eval_mode=t.get("eval_mode"))
    return server


def _causal_rows(tasks, k=len(SENTENCES)):
    return [{"task": name, "text": SENTENCES[(i + j) % len(SENTENCES)]} for i in range(k) for j, name in enumerate(tasks)]


def _assert_same_results(got, want):
    assert [r["task"] for r in got] == [r["task"] for r in want]
    assert [r["prediction"] for r in got] == [r["prediction"] for r in want]
    assert [r.get("label") for r in got] == [r.get("label") for r in want]
    for a, b in zip(got, want):
        if "scores" in b:
            torch.testing.assert_close(torch.tensor(a["scores"]), torch.tensor(b["scores"]), rtol=1e-5, atol=1e-6)


def _input_widths(model):
    """Record the sequence length of every base-model call (prompt + input, or input alone)."""
    widths = []
    handle = model.base_model.register_forward_pre_hook(
        lambda mod, args, kwargs: widths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    return widths, handle


@pytest.mark.parametrize("padding_side, bos", [("right", False), ("left", True)])
def test_causal_prefix_cache_equals_uncached(minilm_tokenizer, padding_side, bos):
    """Prompt keys/values computed once per task give the uncached pass's scores, predictions and
    generated text, for a batch mixing prompt lengths 1, 10, 10 (broadcast) and 3, left- or
    right-padded inputs, with and without BOS; and a cached pass runs the inputs only."""
    model, tok = _tiny_llama(minilm_tokenizer, padding_side, bos)
    tasks = _causal_tasks(model.config.hidden_size)
    cached, plain = _causal_server(model, tok, tasks), _causal_server(model, tok, tasks, prefix_cache=False)
    for name, t in tasks.items():  # (layers, K/V, kv heads, [BOS] + n, head dim), once per task
        assert cached.tasks[name].prefix_kv.shape == (2, 2, 2, t["prompt"].shape[0] + bos, 8)
        assert plain.tasks[name].prefix_kv is None
    rows = _causal_rows(tasks)
    features = cached.prepare(rows)
    widths, handle = _input_widths(model)
    try:
        want = plain.predict(features)  # ONE pass of every task, as wide as the longest prompt + input
        uncached_width = widths[0]
        widths.clear()
        got = cached.predict(features)
    finally:
        handle.remove()
    longest_input = max(len(f["input_ids"]) for f in features)
    assert uncached_width == longest_input + 10 + bos and widths[0] == longest_input  # the prompt is not rerun
    _assert_same_results(got, want)
    assert {r["task"] for r in got if isinstance(r["prediction"], str)} == {"gen_n3"}
    _assert_same_results(cached.score(rows, batch_size=3), plain.score(rows, batch_size=3))  # sorted passes of 3


@pytest.mark.parametrize("window", [12, 4])
def test_causal_prefix_cache_with_sliding_window_layers(minilm_tokenizer, window):
    """Gemma 3 mixes sliding-window and full layers: with a window longer than every prompt but
    shorter than prompt + input (12), or shorter than a prompt (4 < 10), every task keeps its cache
    (the window is applied by the masks, in positions: `ept.kinds.causal.window_masks`) and the cached
    passes give the uncached scores."""
    import copy

    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = copy.deepcopy(minilm_tokenizer)
    tok.eos_token = "[SEP]"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, sliding_window=window, layer_types=["sliding_attention", "full_attention"] * 2,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))
    model.eval().requires_grad_(False)
    tasks = _causal_tasks(model.config.hidden_size)
    cached, plain = _causal_server(model, tok, tasks), _causal_server(model, tok, tasks, prefix_cache=False)
    kept = {name for name, t in cached.tasks.items() if t.prefix_kv is not None}
    assert kept == set(tasks)
    rows = _causal_rows(tasks)
    assert max(len(f["input_ids"]) for f in cached.prepare(rows)) + 10 > window
    _assert_same_results(cached.score(rows, batch_size=len(rows)), plain.score(rows, batch_size=len(rows)))
    _assert_same_results(cached.score(rows, batch_size=3), plain.score(rows, batch_size=3))


def test_causal_prefix_cache_follows_replace_and_delete(minilm_tokenizer):
    """Replacing a prompt recomputes its cache (scores equal a fresh server's with the new prompt)
    and drops the old one; deleting a task frees its cache and leaves the others' scores as they were."""
    import gc
    import weakref

    from ept.serving.server import RowError

    model, tok = _tiny_llama(minilm_tokenizer, "left")
    e = model.config.hidden_size
    tasks = _causal_tasks(e)
    server = _causal_server(model, tok, tasks)
    rows = _causal_rows(tasks, k=3)
    before = server.score(rows, batch_size=len(rows))
    old = weakref.ref(server.tasks["rte_pt"].prefix_kv)
    new_prompt = _prompt(4, e, 9)  # a different length, too
    server.add_task("rte_pt", new_prompt, tasks["rte_pt"]["spec"], replace=True)
    gc.collect()
    assert old() is None and server.tasks["rte_pt"].prefix_kv.shape[3] == 4
    after = server.score(rows, batch_size=len(rows))
    fresh = _causal_server(model, tok, {**tasks, "rte_pt": {**tasks["rte_pt"], "prompt": new_prompt}})
    _assert_same_results(after, fresh.score(rows, batch_size=len(rows)))
    changed = [a["scores"] != b["scores"] for a, b in zip(after, before) if a["task"] == "rte_pt"]
    assert changed and all(changed)  # the old cache is really gone from the passes
    _assert_same_results([r for r in after if r["task"] != "rte_pt"], [r for r in before if r["task"] != "rte_pt"])

    gone = weakref.ref(server.tasks["cb_eptstar"].prefix_kv)
    server.remove_task("cb_eptstar")
    gc.collect()
    assert gone() is None
    with pytest.raises(RowError, match="cb_eptstar"):
        server.score([{"task": "cb_eptstar", "text": "a gem"}])
    kept = [r for r in rows if r["task"] != "cb_eptstar"]
    _assert_same_results(server.score(kept, batch_size=len(kept)), [r for r in after if r["task"] != "cb_eptstar"])


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_prompt_trained_behind_a_sink_token_is_served_as_trained(minilm_tokenizer, tmp_path, prefix_cache):
    """Issue 19's sink token: an export trained as [sink][P'][x] is served in one batch beside a
    task without one, with its own model's scores (that model places the sink token itself); the
    same P' served without its sink token scores differently, so the test sees the token."""
    from ept.checkpoint import export_prompt
    from ept.prompts import method_config

    model, tok = _tiny_llama(minilm_tokenizer)
    torch.manual_seed(5)
    trained = PromptedModel(model, tok, method_config("pt", num_tokens=3), sink_token="[CLS]").eval()
    export_prompt(trained, tmp_path / "sunk", "tiny-llama")
    spec = LabelSpec("sunk", label_words=("negative", "positive"))
    server = MultiTaskServer(model, tok, prefix_cache=prefix_cache)
    server.add_task("sunk", tmp_path / "sunk", spec)
    server.add_task("plain", _prompt(10, model.config.hidden_size, 2), LabelSpec("plain", label_words=("no", "yes")))
    server.add_task("bare", trained.prompt().detach(), spec)  # the same P', no sink token
    assert {k: server.describe("sunk")[k] for k in ("num_tokens", "sink_token")} == {"num_tokens": 3, "sink_token": "[CLS]"}
    rows = [{"task": name, "text": s} for s in SENTENCES for name in ("sunk", "plain", "bare")]
    results = server.score(rows, batch_size=len(rows))  # ONE pass mixing the three layouts
    served = {name: torch.tensor([r["scores"] for r in results if r["task"] == name]) for name in ("sunk", "bare")}
    batch = collate(tok, encode(tok, [_example([s]) for s in SENTENCES], "causal", 256).features)
    with torch.no_grad():
        want = make_scorer(trained, spec).label_scores(batch)
    torch.testing.assert_close(served["sunk"], want, rtol=1e-4, atol=1e-4)
    assert (served["bare"] - want).abs().max() > 1e-2
    assert [r["prediction"] for r in results if r["task"] == "sunk"] == want.argmax(-1).tolist()

    bos_model, bos_tok = _tiny_llama(minilm_tokenizer, bos=True)  # BOS already sits before P': no sink token
    with pytest.raises(ValueError, match=r"'sunk'.*sink token.*already starts every row with BOS"):
        MultiTaskServer(bos_model, bos_tok).add_task("sunk", tmp_path / "sunk", spec)


def _export(model, tok, method, folder, seed):
    from ept.checkpoint import export_prompt
    from ept.prompts import method_config

    torch.manual_seed(seed)
    wrapped = PromptedModel(model, tok, method_config(method))
    return export_prompt(wrapped, folder, "minilm"), wrapped.prompt().detach()


def test_exports_and_cli(mini_bb, tmp_path, capsys):
    from ept.cli import main

    model, tok = mini_bb
    a, pa = _export(model, tok, "ept", tmp_path / "a", 0)  # n=1, stored as one vector
    b, pb = _export(model, tok, "pt", tmp_path / "b", 1)  # n=10
    server = MultiTaskServer(model, tok)
    server.add_task("a", a, label_words=("negative", "positive"))
    server.add_task("b", b, label_words=("entailment", "not_entailment"))
    torch.testing.assert_close(server.tasks["b"].prompt, pb)
    rows = [{"task": "a", "text": SENTENCES[0]}, {"task": "b", "fields": list(PAIRS[0])},
            {"task": "a", "text": SENTENCES[1]}, {"task": "b", "fields": list(PAIRS[1])}]
    expected = server.score(rows)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    code = main(["serve", "--prompt", f"a={a}", "--prompt", f"b={b}", "--labels", "a=negative,positive",
                 "--labels", "b=entailment,not_entailment", "--input", str(tmp_path / "rows.jsonl")])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [(r["task"], r["prediction"], r["label"]) for r in out] == [(r["task"], r["prediction"], r["label"]) for r in expected]
    torch.testing.assert_close(torch.tensor([r["scores"] for r in out]), torch.tensor([r["scores"] for r in expected]))

    # a prompt named after a registered task takes that task's label words
    pytest.importorskip("ept.tasks")
    (tmp_path / "sst2.jsonl").write_text(json.dumps({"task": "sst2", "text": SENTENCES[0]}) + "\n")
    assert main(["serve", "--prompt", f"sst2={a}", "--input", str(tmp_path / "sst2.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("negative", "positive")

    # a prompt with no label words fails before any weights load, naming the fix
    code = main(["serve", "--prompt", f"nosuchtask={a}", "--input", str(tmp_path / "rows.jsonl")])
    assert code == 2 and "--labels nosuchtask=" in capsys.readouterr().err


def test_errors_name_the_bad_value(mini_bb):
    model, tok = mini_bb
    server = MultiTaskServer(model, tok)
    server.add_task("a", _prompt(1, model.config.hidden_size, 0), label_words=("no", "yes"))
    with pytest.raises(ValueError, match="task 'b' is not served; served: a"):
        server.score([{"task": "b", "text": "x"}])
    with pytest.raises(ValueError, match="row 0: give exactly one of \"inputs\""):
        server.score([{"task": "a"}])
    with pytest.raises(ValueError, match=r"needs \(n, 384\)"):
        server.add_task("c", torch.zeros(1, 32), label_words=("no", "yes"))
    with pytest.raises(ValueError, match="already served"):
        server.add_task("a", _prompt(1, model.config.hidden_size, 0), label_words=("no", "yes"))


def test_cli_seq2seq_rank_from_a_local_backbone_folder(t5_bb, tmp_path, capsys):
    """Exports of two prompt lengths on a seq2seq backbone saved as a folder (--backbone DIR)."""
    from ept.checkpoint import export_prompt
    from ept.cli import main
    from ept.prompts import method_config

    model, tok = t5_bb
    model.save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    server = MultiTaskServer(model, tok)
    for name, method in (("short", "ept"), ("long", "pt")):
        torch.manual_seed(len(name))
        export_prompt(PromptedModel(model, tok, method_config(method)), tmp_path / name, str(tmp_path / "t5"))
        server.add_task(name, tmp_path / name, label_words=("no", "maybe not", "yes"))
    rows = [{"task": "short", "text": SENTENCES[1]}, {"task": "long", "text": SENTENCES[2]}, {"task": "short", "text": SENTENCES[3]}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["serve", "--prompt", f"short={tmp_path / 'short'}", "--prompt", f"long={tmp_path / 'long'}",
                 "--labels", "short=no,maybe not,yes", "--labels", "long=no,maybe not,yes",
                 "--input", str(tmp_path / "rows.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    assert code == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = server.score(rows)
    assert [(r["task"], r["prediction"], r["label"]) for r in out] == [(r["task"], r["prediction"], r["label"]) for r in expected]
    torch.testing.assert_close(torch.tensor([r["scores"] for r in out]), torch.tensor([r["scores"] for r in expected]))


def test_bad_serving_input_is_refused_naming_it(mini_bb, tmp_path, capsys):
    """Issue 14 item 6: non-string text, NaN prompts, label counts, empty label words, BOMs."""
    from safetensors.torch import save_file

    from ept.cli import main

    model, tok = mini_bb
    e = model.config.hidden_size
    server = MultiTaskServer(model, tok)
    server.add_task("a", _prompt(1, e, 0), label_words=("no", "yes"))
    for bad, kind in ((None, "NoneType"), (["x"], "list"), ({"a": 1}, "dict"), (3, "int")):
        with pytest.raises(ValueError, match=f"row 1: \"text\" must be a string, got {kind}"):
            server.score([{"task": "a", "text": "fine"}, {"task": "a", "text": bad}])
    with pytest.raises(ValueError, match=r"row 0: \"fields\"\[1\] must be a string, got NoneType"):
        server.score([{"task": "a", "fields": ["x", None]}])
    nan = _prompt(1, e, 0)
    nan[0, 3] = float("nan")
    with pytest.raises(ValueError, match="'b' has 1 NaN/inf values"):
        server.add_task("b", nan, label_words=("no", "yes"))
    assert list(server.tasks) == ["a"]
    with pytest.raises(ValueError, match="label words must be non-empty"):
        LabelSpec("c", label_words=("good", ""))

    a, _ = _export(model, tok, "ept", tmp_path / "a", 0)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes("\ufeff".encode() + b'{"task": "a", "text": "a gem"}\n')  # a UTF-8 BOM, as Windows editors write
    assert main(["serve", "--prompt", f"a={a}", "--labels", "a=negative,positive", "--input", str(rows)]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("negative", "positive")

    def fails(args, words):
        try:
            code = main(["serve", "--prompt", f"a={a}", *args])
        except SystemExit as stop:  # argparse's own range errors
            code = stop.code
        assert code == 2
        assert words in capsys.readouterr().err

    rows.write_text('{"task": "a", "text": null}\n')
    fails(["--labels", "a=negative,positive", "--input", str(rows)], 'row 0: "text" must be a string, got NoneType')
    rows.write_text('{"task": "a", "text": "ok"}\n')
    fails(["--labels", "a=negative,", "--input", str(rows)], "an empty label word")
    fails(["--labels", "a=negative,positive", "--input", str(rows), "--batch-size", "0"], ">= 1, got '0'")
    # an export that records its task (sst2: 2 labels) refuses a 3-label --labels
    meta = json.loads((a / "prompt.json").read_text())
    (a / "prompt.json").write_text(json.dumps({**meta, "task": "sst2", "template": None}))
    pytest.importorskip("ept.tasks")
    fails(["--labels", "a=x,y,z", "--input", str(rows)], "3 label words ['x', 'y', 'z'], but the export was trained with 2 labels (sst2)")
    # a NaN in an export: refused at load, before any output
    save_file({"prompt": torch.full((1, e), float("nan"))}, str(a / "prompt.safetensors"))
    fails(["--labels", "a=negative,positive", "--input", str(rows)], "NaN/inf")


def _llama_pt_export(minilm_tokenizer, tmp_path, n_rows: int):
    """A tiny Llama saved to tmp_path/llama, a 4-token PT export of it in tmp_path/a, and the first
    `n_rows` SENTENCES as task-"a" rows in tmp_path/rows.jsonl: (model, tokenizer, rows)."""
    from ept.checkpoint import export_prompt
    from ept.prompts import method_config

    model, tok = _tiny_llama(minilm_tokenizer)
    model.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    torch.manual_seed(3)
    export_prompt(PromptedModel(model, tok, method_config("pt", num_tokens=4)), tmp_path / "a", str(tmp_path / "llama"))
    rows = [{"task": "a", "text": s} for s in SENTENCES[:n_rows]]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, tok, rows


def test_serve_cli_no_prefix_cache_gives_the_cached_results(minilm_tokenizer, tmp_path, monkeypatch):
    """`ept serve --no-prefix-cache` on a decoder-only backbone folder: the flag reaches the server
    (its tasks hold no prompt cache) and the predictions and scores equal the default cached mode."""
    from ept.cli import main

    model, tok, rows = _llama_pt_export(minilm_tokenizer, tmp_path, 4)
    caches = []
    add_task = MultiTaskServer.add_task

    def recording_add_task(self, *args, **kwargs):
        task = add_task(self, *args, **kwargs)
        caches.append(task.prefix_kv is not None)
        return task

    monkeypatch.setattr(MultiTaskServer, "add_task", recording_add_task)
    outs = {}
    for flags in ((), ("--no-prefix-cache",)):
        out = tmp_path / f"out{len(flags)}.jsonl"
        assert main(["serve", "--prompt", f"a={tmp_path / 'a'}", "--labels", "a=no,yes", *flags,
                     "--input", str(tmp_path / "rows.jsonl"), "--output", str(out)]) == 0
        outs[flags] = [json.loads(line) for line in out.read_text().splitlines()]
    assert caches == [True, False]
    cached, plain = outs[()], outs[("--no-prefix-cache",)]
    assert [r["prediction"] for r in cached] == [r["prediction"] for r in plain]
    torch.testing.assert_close(torch.tensor([r["scores"] for r in cached]), torch.tensor([r["scores"] for r in plain]))


def test_serve_eval_mode_generate_reaches_a_causal_backbone(minilm_tokenizer, tmp_path, capsys):
    """Issue 21: `ept serve --eval-mode generate` on a decoder-only export generates text (as the
    task's own scorer in generate mode), over the CLI and an HTTP PUT; it used to reach seq2seq only
    and a causal backbone silently ranked labels."""
    from ept.cli import main
    from ept.serving.http_app import ServeConfig, Service

    model, tok, rows = _llama_pt_export(minilm_tokenizer, tmp_path, 3)
    assert main(["serve", "--prompt", f"a={tmp_path / 'a'}", "--labels", "a=no,yes", "--eval-mode", "generate",
                 "--input", str(tmp_path / "rows.jsonl")]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    spec = LabelSpec("a", label_words=("no", "yes"))
    _, want = _solo(model, tok, spec, MultiTaskServer(model, tok).add_task("a", tmp_path / "a", spec).prompt,
                    [_example([r["text"]]) for r in rows], "causal", "generate")
    assert [r["prediction"] for r in out] == want and all(isinstance(p, str) and "scores" not in r for p, r in zip(want, out))

    service = Service(MultiTaskServer(model, tok), ServeConfig(eval_mode="generate"))
    try:
        from ept.checkpoint import load_exported

        prompt, meta = load_exported(tmp_path / "a")
        assert service.put_prompt("a", prompt, ["no", "yes"], "generate", meta)["mode"] == "generate"
    finally:
        service.batcher.close()


KV_BYTES_PER_POSITION = 2 * 2 * 2 * 8 * 4  # tiny Llama: layers x (K, V) x kv heads x head dim x fp32


def test_causal_prefix_cache_cap_evicts_and_recomputes_without_changing_a_score(minilm_tokenizer):
    """--prefix-cache-mb: room for any two of the four tasks' caches (1 + 10 + 10 + 3 positions),
    passes of two rows of changing pairs of tasks, so caches are hit, evicted and recomputed: every score equals the uncapped server's exactly (the same computation) and the
    uncached server's to float rounding; size and hit counts are tracked."""
    model, tok = _tiny_llama(minilm_tokenizer, "left")
    tasks = _causal_tasks(model.config.hidden_size)
    cap = 20 * KV_BYTES_PER_POSITION
    capped = _causal_server(model, tok, tasks, prefix_cache_mb=cap / 2**20)
    full, plain = _causal_server(model, tok, tasks), _causal_server(model, tok, tasks, prefix_cache=False)
    assert capped.prefix_cache.nbytes <= cap < full.prefix_cache.nbytes
    pairs = [("sst2_ept", "rte_pt")] * 2 + [("cb_eptstar", "gen_n3")] * 2 + [("rte_pt", "cb_eptstar"), ("gen_n3", "sst2_ept")]
    rows = [{"task": name, "text": SENTENCES[i % len(SENTENCES)]} for i, name in enumerate(n for pair in pairs for n in pair)]
    for _ in range(2):
        got = capped.score(rows, batch_size=2, sort_by_length=False)
        assert got == full.score(rows, batch_size=2, sort_by_length=False)
        _assert_same_results(got, plain.score(rows, batch_size=2, sort_by_length=False))
        assert capped.prefix_cache.nbytes <= cap
    cache = capped.prefix_cache
    assert cache.evictions > 0 and cache.misses > 0 and cache.hits > 0, (cache.evictions, cache.misses, cache.hits)
    assert full.prefix_cache.evictions == full.prefix_cache.misses == 0
    states = {name: t.cache_state for name, t in capped.tasks.items()}
    assert set(states.values()) <= {"cached", "evicted"} and "evicted" in states.values(), states
    assert all((t.prefix_kv is None) == (t.cache_state == "evicted") for t in capped.tasks.values())
    assert capped.describe("rte_pt")["cache"] in ("cached", "evicted")


def test_causal_task_whose_cache_is_over_the_cap_is_served_uncached(minilm_tokenizer):
    model, tok = _tiny_llama(minilm_tokenizer, "left")
    tasks = _causal_tasks(model.config.hidden_size)
    with pytest.warns(UserWarning, match="over --prefix-cache-mb") as caught:
        capped = _causal_server(model, tok, tasks, prefix_cache_mb=5 * KV_BYTES_PER_POSITION / 2**20)
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["cb_eptstar", "rte_pt"]
    assert {n: t.cache_state for n, t in capped.tasks.items()} == \
        {"sst2_ept": "cached", "rte_pt": "over cap", "cb_eptstar": "over cap", "gen_n3": "cached"}
    plain = _causal_server(model, tok, tasks, prefix_cache=False)
    rows = _causal_rows(tasks)
    _assert_same_results(capped.score(rows, batch_size=2, sort_by_length=False),
                         plain.score(rows, batch_size=2, sort_by_length=False))
    assert capped.prefix_cache.evictions == 0  # an over-cap task never pushes the others out
    assert plain.describe("rte_pt")["cache"] is None



# ---------------------------------------------------------------------- serving precision (issue 22 item 2)
def test_serve_computes_in_the_precision_the_export_records(minilm_tokenizer, tmp_path, monkeypatch, capsys):
    """An export that records bf16 (the run trained and validated in it) is served in bf16 and
    says so at start; its scores are the task's own scorer's on a bf16 backbone, as the run's
    evaluation computed them. `--precision fp32` overrides (and gives the fp32 scorer's scores);
    an export without a recorded precision is served in fp32, as before; exports that disagree
    need --precision."""
    import copy

    from ept.checkpoint import export_prompt
    from ept.cli import main
    from ept.prompts import method_config

    monkeypatch.setattr("ept.precision.fast_low_precision", lambda device, dtype="bf16": (True, "a test CPU"))
    model, tok = _tiny_llama(minilm_tokenizer)
    model.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    torch.manual_seed(3)
    prompted = PromptedModel(model, tok, method_config("ept", num_tokens=4))
    export_prompt(prompted, tmp_path / "bf16", str(tmp_path / "llama"), extra={"precision": "bf16"})
    export_prompt(prompted, tmp_path / "old", str(tmp_path / "llama"))  # written before precision was recorded
    prompt = prompted.prompt().detach()
    rows = [{"task": "a", "text": s} for s in SENTENCES]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = LabelSpec("a", label_words=("no", "yes"))
    examples = [_example([s]) for s in SENTENCES]

    def serve(export, *flags):
        out = tmp_path / "out.jsonl"
        assert main(["serve", "--prompt", f"a={tmp_path / export}", "--labels", "a=no,yes", *flags,
                     "--input", str(tmp_path / "rows.jsonl"), "--output", str(out)]) == 0
        return [r["scores"] for r in map(json.loads, out.read_text().splitlines())], capsys.readouterr().err

    def own_scorer(dtype):
        scores, _ = _solo(copy.deepcopy(model).to(dtype), tok, spec, prompt, examples, "causal")
        return scores.float()

    bf16, said = serve("bf16")
    assert "computing in bf16 (the precision the run validated in)" in said
    torch.testing.assert_close(torch.tensor(bf16), own_scorer(torch.bfloat16), rtol=1e-2, atol=1e-2)
    fp32, said = serve("bf16", "--precision", "fp32")
    assert "computing in fp32 (--precision fp32)" in said
    torch.testing.assert_close(torch.tensor(fp32), own_scorer(torch.float32), rtol=1e-5, atol=1e-5)
    assert torch.tensor(bf16).ne(torch.tensor(fp32)).any()  # the precision really changed the numbers
    old, said = serve("old")
    assert "computing in fp32 (the exports record no precision)" in said and old == fp32

    assert main(["serve", "--prompt", f"a={tmp_path / 'bf16'}", "--prompt", f"b={tmp_path / 'old'}",
                 "--labels", "a=no,yes", "--labels", "b=no,yes", "--input", str(tmp_path / "rows.jsonl")]) == 0
    assert "computing in bf16" in capsys.readouterr().err  # an export that records none does not object
    export_prompt(prompted, tmp_path / "fp32", str(tmp_path / "llama"), extra={"precision": "fp32"})
    assert main(["serve", "--prompt", f"a={tmp_path / 'bf16'}", "--prompt", f"b={tmp_path / 'fp32'}",
                 "--labels", "a=no,yes", "--labels", "b=no,yes", "--input", str(tmp_path / "rows.jsonl")]) != 0
    err = capsys.readouterr().err
    assert "different precisions ['bf16', 'fp32']" in err and "--precision" in err and "Loading weights" not in err



def test_export_records_the_precision_the_run_validated_in(minilm_tokenizer, tmp_path):
    """`ept export` writes the precision of the saved best state (method.json, since issue 22) or,
    for a run saved before, the run's results.json / last/state.json; none when nothing says."""
    from ept.checkpoint import load_exported, save_method
    from ept.commands.export import export_run
    from ept.prompts import method_config
    from ept.atomic_io import atomic_write_json

    model, tok = _tiny_llama(minilm_tokenizer)
    model.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    prompted = PromptedModel(model, tok, method_config("ept", num_tokens=4))
    save_method(prompted, tmp_path / "new" / "best", str(tmp_path / "llama"), {"precision": "bf16"})
    assert export_run(tmp_path / "new", tmp_path / "e1")["precision"] == "bf16"
    save_method(prompted, tmp_path / "old" / "best", str(tmp_path / "llama"))
    assert "precision" not in export_run(tmp_path / "old", tmp_path / "e2")
    atomic_write_json(tmp_path / "old" / "last" / "state.json", {"step": 3, "precision": "bf16"})
    assert export_run(tmp_path / "old" / "best", tmp_path / "e3")["precision"] == "bf16"
    assert load_exported(tmp_path / "e3")[1]["precision"] == "bf16"

