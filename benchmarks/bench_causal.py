"""Benchmark: training and evaluation on a decoder-only backbone (SmolLM2-135M), issue 13.

    ept fetch smollm2-135m && python benchmarks/bench_causal.py            # ~5 minutes, one thread
    python benchmarks/bench_causal.py --backbone PATH --autocast --bf16-weights
    python benchmarks/bench_causal.py --backbone smollm2-135m --no-eval --no-profile   # training table only

Training step (same pre-tokenised real SST-2 batches of 8, same AdamW lr 0.3), interleaved:
- peft_pt:  PEFT PromptTuningConfig(CAUSAL_LM, num_virtual_tokens=10) on AutoModelForCausalLM, fp32,
            the standard recipe: `model(input_ids, labels=...)` with -100 on the source tokens, so the
            LM head runs at every position (B, T, vocab) before the loss keeps the targets.
- ept_pt:   ept `pt` (n=10), fp32, LM head only at the target positions (ept.kinds.causal.target_loss).
- ept_ept:  ept `ept` (n=1), fp32.
- ept_pt_grouped: ept `pt` on length-grouped batches (`--group-by-length`): a 50-step window of
            the same rows, sorted by length into batches (ept.batching.group_by_length).
- optional: ept_pt under bf16 autocast, ept_pt with bf16 weights.
The timed batches are 4 of a 50-batch window (400 rows), at the 1/8, 3/8, 5/8, 7/8 quantiles of
the grouped batches' lengths (the same positions of the random ones): a stratified sample of the
window, so the mean over them stands for the window; padding is counted over all 50.
Physical limit: the frozen forward+backward FLOPs of a step (2 x params x tokens forward, the same
again for the input gradients; attention ignored: < 3% at 30-60 tokens) over the seconds, against a
plain 2048^3 matmul measured in the same run and precision.
Evaluation: rank classification (one cached prefix pass + label continuations) against greedy
generation, on real SST-2 rows; examples/s and agreement where the generation is a label word.
Profile: torch.profiler over one ept `pt` training step, the top operators by self CPU time.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, interleaved, machine, median, paired_ratio, set_threads, table, task_data  # noqa: E402


def peak_matmul_flops(dtype=torch.float32, n: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):  # process CPU time, as `interleaved` uses with one thread: load does not count
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n ** 3 / best


def make_batches(tok, n_batches: int, bs: int = 8):
    from ept.batching import collate
    from ept.kinds import encode

    _, rows = task_data("sst2", n_batches * bs)
    feats = encode(tok, rows, "causal", 128).features
    return [collate(tok, feats[i * bs:(i + 1) * bs]) for i in range(n_batches)]


def window_batches(tok, bs: int = 8, picks=(0.125, 0.375, 0.625, 0.875)):
    """(random batches, grouped batches, padding of each over the whole window): 4 batches each,
    taken from one 50-step window of real SST-2 rows as described in the module docstring."""
    from ept.batching import GROUP_WINDOW, collate, feature_length, group_by_length
    from ept.kinds import encode

    _, rows = task_data("sst2", GROUP_WINDOW * bs)
    feats = encode(tok, rows, "causal", 128).features
    random = [list(range(i * bs, (i + 1) * bs)) for i in range(GROUP_WINDOW)]
    grouped = group_by_length(random, 0, lambda i: feature_length(feats[i]), seed=0)
    by_length = sorted(range(GROUP_WINDOW), key=lambda j: sum(feature_length(feats[i]) for i in grouped[j]))
    chosen = [by_length[int(q * GROUP_WINDOW)] for q in picks]

    def padding(order):
        pad = total = 0
        for b in order:
            m = collate(tok, [feats[i] for i in b])["attention_mask"]
            pad, total = pad + int((m == 0).sum()), total + m.numel()
        return pad / total
    return ([collate(tok, [feats[i] for i in random[j]]) for j in chosen],
            [collate(tok, [feats[i] for i in grouped[j]]) for j in chosen], padding(random), padding(grouped))


def peft_step_fn(backbone, tok):
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(backbone), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3, weight_decay=0.01)

    def step(batch):
        ids = torch.cat([batch["input_ids"], batch["labels"].clamp(min=0)], 1)
        mask = torch.cat([batch["attention_mask"], (batch["labels"] != -100).long()], 1)
        labels = torch.cat([torch.full_like(batch["input_ids"], -100), batch["labels"]], 1)
        # right padding sits between source and target here too; the comparison is about cost
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return step


def ept_step_fn(backbone, tok, method: str, autocast: bool = False):
    from ept.backbones import PromptedModel
    from ept.heads import make_scorer
    from ept.prompts import method_config
    from ept.tasks import get_task

    torch.manual_seed(0)
    model = PromptedModel(backbone, tok, method_config(method)).train()
    scorer = make_scorer(model, get_task("sst2"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3, weight_decay=0.01)

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = scorer.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return step


def bench_train(args, backbone, tok) -> None:
    batches, grouped, pad_random, pad_grouped = window_batches(tok)
    contenders = {"peft_pt": peft_step_fn(backbone, tok), "ept_pt": ept_step_fn(backbone, tok, "pt"),
                  "ept_ept": ept_step_fn(backbone, tok, "ept")}
    on_grouped = ept_step_fn(backbone, tok, "pt")
    contenders["ept_pt_grouped"] = lambda b: on_grouped(grouped[_index(batches, b)])
    if args.autocast:
        contenders["ept_pt_autocast"] = ept_step_fn(backbone, tok, "pt", autocast=True)
    if args.bf16_weights:
        contenders["ept_pt_bf16w"] = ept_step_fn(copy.deepcopy(backbone).to(torch.bfloat16), tok, "pt")
    times = interleaved(contenders, batches, args.reps)
    n_params = sum(p.numel() for p in backbone.parameters())
    peak = peak_matmul_flops()
    rows = []
    for name in contenders:
        sec = statistics.mean(times[name])  # mean over the stratified sample: the window's mean step
        used = grouped if name.endswith("_grouped") else batches
        tokens = [int(b["attention_mask"].sum() + (b["labels"] != -100).sum()) + 8 * (1 if name == "ept_ept" else 10)
                  for b in used]
        flops = 4 * n_params * statistics.mean(tokens)  # useful FLOPs: real tokens, not padding
        rows.append([name, f"{sec:.2f}", f"{8 / sec:.2f}", f"{paired_ratio(times['peft_pt'], times[name]):.2f}x",
                     f"{flops / sec / 1e9:.1f}", f"{flops / sec / peak:.0%}"])
    print(f"\n## Training step, batch 8, real SST-2 ({machine()}; {torch.get_num_threads()} thread(s); "
          f"peak fp32 matmul {peak / 1e9:.1f} GFLOP/s, process time; load {os.getloadavg()[0]:.1f})")
    table(["contender", "s/step", "examples/s", "speed vs peft_pt", "GFLOP/s", "of peak"], rows)
    print(f"padding over the 50-step window: random {pad_random:.0%}, grouped {pad_grouped:.0%} of input slots")


def _index(batches, b) -> int:
    return next(i for i, x in enumerate(batches) if x is b)


def bench_profile(backbone, tok, batch, top: int = 8) -> None:
    """Where a training step's time goes: torch.profiler's top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    step = ept_step_fn(backbone, tok, "pt")
    step(batch)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\n## Profile of one ept `pt` training step (batch {batch['input_ids'].shape[0]}, "
          f"{batch['input_ids'].shape[1]} + {batch['labels'].shape[1]} tokens): top operators by self CPU time")
    table(["operator", "calls", "self CPU ms", "share"],
          [[e.key, e.count, f"{e.self_cpu_time_total / 1e3:.0f}", f"{e.self_cpu_time_total / total:.0%}"]
           for e in events[:top]])


def bench_eval(args, backbone, tok, batches) -> None:
    from ept.backbones import PromptedModel
    from ept.checkpoint import load_exported
    from ept.heads import make_scorer
    from ept.prompts import method_config
    from ept.tasks import get_task

    spec = get_task("sst2")
    model = PromptedModel(backbone, tok, method_config("pt")).eval()
    prompt = load_exported(args.export)[0] if args.export else torch.zeros(0, model.embed_dim)
    rank, gen = make_scorer(model, spec, "rank"), make_scorer(model, spec, "generate")
    out = {"rank": [], "generate": []}
    contenders = {"rank": lambda b: out["rank"].extend(rank.predict(b, prompt)),
                  "generate": lambda b: out["generate"].extend(gen.predict(b, prompt))}
    times = interleaved(contenders, batches, 1, warmup=0)
    valid = [(r, g) for r, g in zip(out["rank"], out["generate"]) if g in spec.label_words]
    agree = sum(spec.label_words[r] == g for r, g in valid)
    print(f"\n## Evaluation, {len(out['rank'])} SST-2 rows, prompt: {args.export or 'none (zero-shot)'}")
    table(["mode", "s/batch of 8", "examples/s"], [[k, f"{median(times[k]):.2f}", f"{8 / median(times[k]):.1f}"] for k in contenders])
    print(f"generation valid (a label word): {len(valid)}/{len(out['rank'])}; rank = generation on {agree}/{len(valid)} of those")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--batches", type=int, default=4, help="evaluation batches of 8")
    p.add_argument("--autocast", action="store_true", help="also time bf16 autocast")
    p.add_argument("--bf16-weights", action="store_true", help="also time bf16 weights (slow on some CPUs)")
    p.add_argument("--export", help="an ept export folder to evaluate with (default: no prompt)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation table")
    p.add_argument("--no-profile", action="store_true", help="skip the profile")
    add_common_args(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    from ept.backbones import load_backbone

    backbone, tok = load_backbone(args.backbone)
    backbone.requires_grad_(False)
    bench_train(args, backbone, tok)
    if not args.no_profile:
        bench_profile(backbone, tok, make_batches(tok, 1)[0])
    if not args.no_eval:
        bench_eval(args, backbone, tok, make_batches(tok, args.batches))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
