"""Benchmark 3: evaluation throughput (issue 6, target: rank classification >= 3x generation).

    python benchmarks/bench_eval.py                  # ~1-2 minutes on 2 CPU cores

Part A, seq2seq (tiny T5 from a config, MiniLM WordPiece tokenizer, eos = [SEP]): the T5 is first
fine-tuned for a few seconds on SST-2 text-to-text pairs with an EPT prompt (n=1) so that it
generates label words at all; then the same real SST-2 dev batches of 64 are scored by
ept's TextScorer in rank mode (one encoder pass, one decoder pass over B x C label
sequences) and in generate mode (greedy, max_new_tokens = max(label length, 8) as ept does).
Predictions are compared on the rows where generation produced a valid label.

Part B, encoder: ept's MiniLM label-scoring head (EncoderLabelScorer.predict, EPT n=1) against the
bare frozen forward of the same prompted batches (no_grad, the limit), SST-2 dev, batch 64.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_common_args, interleaved, machine, median, paired_ratio, set_threads, table,  # noqa: E402
                     task_data, verdict)

TARGET = 3.0
EVAL_BATCH = 64


def tiny_t5(tok):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=tok.vocab_size, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
        decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))


def warm_up_t5(model, scorer, tok, examples, steps: int) -> float:
    """Fine-tune backbone + prompt briefly so generation emits label words (not a benchmark)."""
    from ept.batching import collate
    from ept.kinds import encode

    enc = encode(tok, examples, "seq2seq", 64)
    model.backbone.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    loss = None
    for s in range(steps):
        rows = enc.features[(s * 32) % len(enc): (s * 32) % len(enc) + 32]
        loss = scorer.loss(collate(tok, rows))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.backbone.requires_grad_(False)
    model.eval()
    return float(loss.detach())


def part_a(tok, n_eval: int, reps: int, train_steps: int) -> list[dict]:
    from ept.backbones import PromptedModel
    from ept.batching import collate
    from ept.kinds import encode
    from ept.heads import make_scorer
    from ept.prompts import method_config

    spec, train = task_data("sst2", train_steps * 32)
    dev = _dev("sst2", n_eval)
    model = PromptedModel(tiny_t5(tok), tok, method_config("ept")).eval()
    rank = make_scorer(model, spec, "rank")
    gen = make_scorer(model, spec, "generate")
    enc = encode(tok, dev, "seq2seq", 64)
    words, gold = list(spec.label_words), [x.label for x in dev]
    out = []
    for state in ("random init", f"after {train_steps} warm-up steps"):
        if state != "random init":
            loss = warm_up_t5(model, rank, tok, train, train_steps)
            state += f" (loss {loss:.2f})"
        for bs in (8, EVAL_BATCH):
            batches = [collate(tok, enc.features[i:i + bs]) for i in range(0, len(enc), bs)]
            with torch.no_grad():
                prompt = model.prompt()  # computed once for eval, as a served export would be
                preds_rank = [p for b in batches for p in rank.predict(b, prompt)]
                preds_gen = [p for b in batches for p in gen.predict(b, prompt)]
                times = interleaved({"rank": lambda i: rank.predict(batches[i], prompt),
                                     "generate": lambda i: gen.predict(batches[i], prompt)},
                                    list(range(len(batches))), reps)
            valid = [(r, words.index(g)) for r, g in zip(preds_rank, preds_gen) if g in words]
            gen_tokens = max(len(tok(g, add_special_tokens=False)["input_ids"]) for g in preds_gen)
            out.append({"state": state, "batch": bs, "n": len(dev), "gen_tokens": gen_tokens,
                        "rank_ex_s": len(dev) / (median(times["rank"]) * len(batches)),
                        "gen_ex_s": len(dev) / (median(times["generate"]) * len(batches)),
                        "ratio": paired_ratio(times["generate"], times["rank"]), "valid": len(valid),
                        "agree": sum(r == g for r, g in valid),
                        "rank_acc": sum(p == y for p, y in zip(preds_rank, gold)) / len(gold)})
    return out


def _dev(task: str, n: int):
    try:
        from ept.tasks import load_task

        from _common import DATA_DIR
        return load_task(task, DATA_DIR).test[:n]  # the official GLUE dev set is ept's test split
    except ImportError:
        return task_data(task, n)[1]


def part_b(backbone, tok, n_eval: int, reps: int) -> dict:
    from ept.backbones import PromptedModel
    from ept.batching import collate
    from ept.kinds import encode
    from ept.heads import make_scorer
    from ept.prompts import method_config

    spec, _ = task_data("sst2", 1)
    dev = _dev("sst2", n_eval)
    model = PromptedModel(backbone, tok, method_config("ept")).eval()
    scorer = make_scorer(model, spec)
    enc = encode(tok, dev, "encoder", 64)
    feats = [enc.features[i:i + EVAL_BATCH] for i in range(0, len(enc), EVAL_BATCH)]
    with torch.no_grad():
        prompt = model.prompt()
        padded = [collate(tok, f) for f in feats]

        def bare(i):  # the limit: the prompted frozen forward only, batches ready-made
            backbone(**model.build_inputs(padded[i], prompt))

        times = interleaved({"ept head": lambda i: scorer.predict(collate(tok, feats[i]), prompt), "bare forward": bare},
                            list(range(len(feats))), reps)
    n = len(dev)
    return {"ept_ex_s": n / (median(times["ept head"]) * len(feats)), "bare_ex_s": n / (median(times["bare forward"]) * len(feats)),
            "ratio": paired_ratio(times["ept head"], times["bare forward"])}


def run(reps: int = 3, n_eval: int = 256, train_steps: int = 150) -> dict:
    from ept.backbones import load_backbone

    backbone, tok = load_backbone("minilm")
    print(f"machine: {machine()}")
    a = part_a(tok, n_eval, reps, train_steps)
    labels = [len(x) for x in tok(list(task_data("sst2", 1)[0].label_words))["input_ids"]]
    print(f"\nA. tiny T5 (d_model 32, 2+2 layers, vocab {tok.vocab_size}), SST-2 dev[:{n_eval}], EPT prompt; labels "
          f"{labels} tokens each ([CLS] word [SEP] with this tokenizer); generation: greedy, max_new_tokens 8")
    table(["model state", "batch", "rank ex/s", "generate ex/s", "ratio rank/generate (median of pairs)",
           f"target >= {TARGET}", "longest generated text (word pieces)", "generation valid", "same prediction where valid",
           "rank accuracy"],
          [[r["state"], r["batch"], r["rank_ex_s"], r["gen_ex_s"], r["ratio"], verdict(r["ratio"] >= TARGET),
            r["gen_tokens"], f"{r['valid']}/{r['n']}", f"{r['agree']}/{r['valid']}", r["rank_acc"]] for r in a])
    b = part_b(backbone, tok, n_eval, reps)
    print(f"\nB. MiniLM label-scoring head, EPT n=1, SST-2 dev[:{n_eval}], batch {EVAL_BATCH}")
    table(["contender", "examples/s", "time ratio head/bare (median of pairs)"],
          [["ept EncoderLabelScorer.predict (collate + forward + pool + labels)", b["ept_ex_s"], b["ratio"]],
           ["bare prompted forward (padded batches ready)", b["bare_ex_s"], 1.0]])
    print()
    return {"seq2seq": a, "encoder": b}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--n-eval", type=int, default=256)
    p.add_argument("--train-steps", type=int, default=150)
    add_common_args(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    run(args.reps, args.n_eval, args.train_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
