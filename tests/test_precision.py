"""`--precision`, `--threads`, `--compile` (ept.precision, issue 13): how the default is chosen,
bad input, what stays fp32, EPT-sized prompts in bf16, and the compile fallback."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ept import precision as P
from ept.backbones import PromptedModel, prepend_prompt
from ept.prompts import method_config
from ept.training.recipe import TrainConfig, run

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_llama(minilm_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = minilm_tokenizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id, tie_word_embeddings=True))
    return model.eval().requires_grad_(False), tok


@pytest.fixture
def fast_bf16(monkeypatch):
    """Pretend this CPU has AMX (it is an AVX2 EPYC here): the paths bf16 hardware would take."""
    monkeypatch.setattr(P, "fast_low_precision", lambda device, dtype="bf16": (True, "CPU with AMX (pretended)"))


def test_auto_is_bf16_only_on_fast_hardware_and_pre_ln_backbones(fast_bf16):
    assert [P.resolve_precision("auto", CPU, kind) for kind in ("causal", "seq2seq", "encoder")] == ["bf16", "bf16", "fp32"]
    assert P.resolve_precision("auto", CPU, "encoder", dtype="float16") == "fp16"  # --dtype as before --precision
    assert P.resolve_precision("bf16", CPU, "encoder") == "bf16"  # explicit: any backbone
    # a prompt on a frozen backbone: bf16 changes its predictions (stage A), so auto keeps fp32
    assert [P.resolve_precision("auto", CPU, kind, prompt=True) for kind in ("causal", "seq2seq")] == ["fp32", "fp32"]
    assert P.resolve_precision("bf16", CPU, "causal", prompt=True) == "bf16"  # asked for explicitly


def test_auto_keeps_prompt_runs_fp32_and_gives_bf16_to_the_rest(fast_bf16, tiny_llama):
    backbone, tok = tiny_llama
    for method, expected in (("ept", "fp32"), ("pt", "fp32"), ("lora", "bf16")):
        model = PromptedModel(copy.deepcopy(backbone), tok, method_config(method))
        assert P.apply_precision(model, "auto") == expected, method


def test_auto_is_fp32_here_and_explicit_bf16_is_refused_or_falls_back_when_asked():
    ok, hardware = P.fast_low_precision(CPU)
    if ok:
        pytest.skip(f"this CPU has fast bf16 ({hardware})")
    assert P.resolve_precision("auto", CPU, "causal") == "fp32"
    with pytest.raises(P.PrecisionError, match=r"precision=bf16: this hardware \(CPU with .*\) has no native bf16.*"
                                               r"--precision-fallback"):
        P.resolve_precision("bf16", CPU, "causal")
    warned = []
    assert P.resolve_precision("bf16", CPU, "causal", fallback=True, warn=warned.append) == "fp32"
    assert "falling back to fp32" in warned[0] and "CPU with" in warned[0]


def test_a_refused_precision_fails_before_the_backbone_loads_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """An explicit bf16 the hardware cannot run fast is refused before `ept train` makes a run
    folder or loads a backbone (seconds to minutes), not after, with an empty locked folder left."""
    import ept.backbones

    monkeypatch.setattr(P, "fast_low_precision", lambda device, dtype="bf16": (False, "CPU with AVX2 (pretended)"))
    monkeypatch.setattr(ept.backbones, "load_backbone", lambda *a, **k: pytest.fail("the backbone was loaded"))
    from ept.cli import main

    out = tmp_path / "runs" / "r"
    assert main(["train", "--task", "sst2", "--method", "ept", "--precision", "bf16", "--steps", "2", "--out", str(out)]) == 2
    assert "ept train: error: precision=bf16: this hardware (CPU with AVX2 (pretended))" in capsys.readouterr().err
    assert not out.exists()
    P.check_hardware("auto", CPU)  # auto and fp32 always pass
    P.check_hardware("fp32", CPU)
    P.check_hardware("bf16", CPU, fallback=True)  # falls back later, with the warning


def test_config_rejects_bad_precision_and_a_contradicting_dtype():
    with pytest.raises(ValueError, match="precision='bf17' is not allowed; allowed: auto, fp32, bf16, fp16"):
        TrainConfig(precision="bf17")
    with pytest.raises(ValueError, match="precision=fp32 contradicts dtype=bfloat16"):
        TrainConfig(precision="fp32", dtype="bfloat16")
    with pytest.raises(ValueError, match="threads=-1: must be >= 0"):
        TrainConfig(threads=-1)


def test_a_norm_1e6_prompt_stays_finite_in_bf16_through_the_first_rmsnorm(tiny_llama):
    """EPT's prompt norm reaches 1e4-1e7. bf16 has fp32's range: the concatenation and the first
    RMSNorm stay finite; fp16 (max 65504) overflows at the cast, which is why auto never picks it."""
    backbone, tok = tiny_llama
    low = copy.deepcopy(backbone).to(torch.bfloat16)
    prompt = torch.zeros(2, 32)
    prompt[0, 0], prompt[1] = 1e6, 1e6 / 32 ** 0.5  # one spike, one spread: both of norm 1e6
    ids = tok(["a gem of a film"], add_special_tokens=False, return_tensors="pt")
    embeds = low.get_input_embeddings()(ids["input_ids"])
    x, mask, _ = prepend_prompt(embeds, ids["attention_mask"], prompt)
    assert x.dtype == torch.bfloat16 and torch.isfinite(x).all()
    assert torch.allclose(x[0, :2].float().norm(dim=-1), torch.full((2,), 1e6), rtol=1e-2)
    normed = low.model.layers[0].input_layernorm(x)
    assert torch.isfinite(normed).all() and normed.abs().max() < 100  # normalised: O(1) again
    logits = low(inputs_embeds=x, attention_mask=mask).logits
    assert torch.isfinite(logits).all()
    half = prepend_prompt(embeds.to(torch.float16), ids["attention_mask"], prompt)[0]
    assert not torch.isfinite(half[0, 0]).all()  # fp16: the spike is inf at the concatenation


def test_bf16_keeps_prompt_and_optimizer_fp32_and_the_loss_fp32(fast_bf16, tiny_llama):
    from ept.heads import make_scorer
    from ept.tasks import Example, get_task
    from ept.training.recipe import setup_optimizer, train_step
    from ept.batching import collate

    backbone, tok = tiny_llama
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("ept"))
    assert P.apply_precision(model, "bf16") == "bf16" and model.precision == "bf16"
    assert next(model.backbone.parameters()).dtype == torch.bfloat16
    spec = get_task("sst2")
    scorer = make_scorer(model.train(), spec)
    rows = [Example(source=f"sst2 sentence: {s}", target=spec.label_words[i], label=i, fields=(s,))
            for i, s in enumerate(["a gem of a film", "dull and far too long"])]
    batch = collate(tok, scorer.encode(rows, 32).features)
    assert scorer.loss(batch).dtype == torch.float32
    opt, _ = setup_optimizer(TrainConfig(steps=2), model)
    loss, mu = train_step(model, scorer, opt, batch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert all(v.dtype == torch.float32 for s in opt.state.values() for k, v in s.items() if k != "step")
    assert loss == loss and mu > 0


def test_trainable_backbone_runs_under_autocast_with_fp32_weights(fast_bf16, tiny_llama):
    backbone, tok = tiny_llama
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("ft"))
    P.apply_precision(model, "bf16")
    assert next(model.backbone.parameters()).dtype == torch.float32
    with P.autocast(model, model.precision):
        out = model.backbone(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert out.dtype == torch.bfloat16


def test_run_records_precision_and_threads(tiny_bert, data_dir, tmp_path, fast_bf16):
    cfg = TrainConfig(task="sst2", method="pt", backbone=tiny_bert, steps=4, eval_every=4, batch_size=8,
                      max_eval_examples=16, max_length=32, data_dir=str(data_dir), out=str(tmp_path / "r"),
                      tensorboard=False, precision="bf16", threads=1)
    results = run(cfg, progress=False)
    assert results["status"] == "finished", results["error"]
    assert (results["precision"], results["threads"], results["compiled"]) == ("bf16", 1, False)
    from safetensors.torch import load_file

    assert all(t.dtype == torch.float32 for t in load_file(tmp_path / "r" / "best" / "method.safetensors").values())
    # evaluation uses the precision the run was validated in (auto would be fp32 on an encoder)
    from ept.evaluation import load_run

    assert load_run(tmp_path / "r")[1].precision == "bf16"
    assert load_run(tmp_path / "r", precision="fp32")[1].precision == "fp32"
    # threads is how fast, not what: a rerun with other threads is the same run (skipped, finished)
    again = run(TrainConfig.from_dict({**json.loads((tmp_path / "r" / "config.json").read_text()), "threads": 2}),
                progress=False)
    assert again == results


def test_compile_falls_back_to_eager_naming_the_error(tiny_llama):
    from ept.kinds.causal import target_loss

    backbone, tok = tiny_llama
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("pt"))
    batch = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([[8]])}
    eager = target_loss(model, batch)

    def broken(gm, inputs):
        raise RuntimeError("no C compiler here")

    warned = []
    assert not P.compile_backbone(model, lambda: target_loss(model, batch).backward(), backend=broken, warn=warned.append)
    assert "torch.compile failed" in warned[0] and "no C compiler here" in warned[0] and "running eager" in warned[0]
    assert torch.equal(target_loss(model, batch), eager)  # eager again, same numbers
    assert all(p.grad is None for p in model.parameters())  # the warm-up left no gradients behind


def test_compile_warm_up_leaves_the_run_unchanged(tiny_bert, data_dir, tmp_path, monkeypatch):
    """--compile warms up on the first batch and a validation batch at setup; RNG, gradients and
    optimizer must come out untouched (module.compile is a no-op here: no compiler, no minutes)."""
    def cfg(out, **kw):
        return TrainConfig(task="sst2", method="ept", backbone=tiny_bert, steps=6, eval_every=3, batch_size=8,
                           max_eval_examples=16, max_length=32, data_dir=str(data_dir), out=str(tmp_path / out),
                           tensorboard=False, **kw)

    plain = run(cfg("plain"), progress=False)
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: None)
    warmed = run(cfg("compiled", compile=True), progress=False)
    assert warmed["compiled"] is True and plain["compiled"] is False
    assert {k: warmed[k] for k in ("validation", "test", "final_mu_t")} == \
        {k: plain[k] for k in ("validation", "test", "final_mu_t")}


def test_resume_refuses_a_different_precision(tiny_bert, data_dir, tmp_path):
    """`auto` resolves per machine: a run saved in bf16 is not resumed in fp32 (or back)."""
    from ept.checkpoint import CheckpointError

    cfg = dict(task="sst2", method="pt", backbone=tiny_bert, steps=4, eval_every=2, batch_size=8, max_eval_examples=16,
               max_length=32, data_dir=str(data_dir), out=str(tmp_path / "r"), tensorboard=False)
    assert run(TrainConfig(**cfg), progress=False)["precision"] == "fp32"
    (tmp_path / "r" / "results.json").unlink()
    state = tmp_path / "r" / "last" / "state.json"
    assert json.loads(state.read_text())["precision"] == "fp32"
    state.write_text(json.dumps({**json.loads(state.read_text()), "precision": "bf16"}))
    with pytest.raises(CheckpointError, match="trained in bf16; here precision=auto is fp32"):
        run(TrainConfig(**cfg), progress=False)
