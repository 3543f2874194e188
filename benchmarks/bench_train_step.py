"""Benchmark 1: ept's training step against the frozen-model limit (issue 6, target ratio <= 1.05).

    python benchmarks/bench_train_step.py            # ~2-3 minutes on 2 CPU cores
    python benchmarks/bench_train_step.py --reps 5 --batches 6

MiniLM, batch 16, real SST-2 and RTE training batches, dynamic padding. Contenders:
- bare n=1 / n=10: embeddings + a fixed prompt tensor, frozen forward + backward, same loss;
  no prompt network, no optimizer, batches already padded (the limit);
- ept pt / ptuning / resprompt (n=10) and ept (n=1): ept's whole step (collate of pre-tokenised
  rows, scorer.loss, backward, AdamW lr 0.3 wd 0.01, zero_grad, mu_t).
Each method is compared with the bare loop of the same prompt length. Backbone in train mode
(dropout on) for every contender, as in `ept train`. Times are medians over (rep, batch); ratios are
medians of per-(rep, batch) ratios; the primary clock is CPU time with 1 torch thread (see
_common.Timings), wall-clock is shown beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (script_main, bare_step, encoded_batches, ept_train_step_fn, interleaved,  # noqa: E402
                     label_embeddings, machine, make_ept, median, paired_ratio, table, verdict)

METHODS = {"pt": 10, "ptuning": 10, "resprompt": 10, "ept": 1}
TARGET = 1.05


def run(reps: int = 4, batches: int = 4, tasks=("sst2", "rte")) -> list[dict]:
    from ept.backbones import load_backbone
    from ept.batching import collate

    backbone, tok = load_backbone("minilm")
    backbone.requires_grad_(False)  # frozen for every contender (from_pretrained leaves grads on)
    step = ept_train_step_fn()
    print(f"machine: {machine()}")
    print(f"ept step: {getattr(step, '__module__', '?')}.{step.__name__}; batch 16; {reps} reps x {batches} batches per task\n")
    results = []
    for task in tasks:
        spec, feats = encoded_batches(tok, task, "encoder", batches)
        padded = [collate(tok, f) for f in feats]  # the bare loop gets its batches ready-made
        lengths = [b["input_ids"].shape[1] for b in padded]
        backbone.train()
        label_emb = label_embeddings(backbone, tok, spec.label_words)
        bare_prompts = {n: torch.empty(n, backbone.config.hidden_size).uniform_(-0.5, 0.5).requires_grad_() for n in (1, 10)}
        ept = {m: make_ept(backbone, tok, spec, m) for m in METHODS}
        contenders = {f"bare n={n}": (lambda i, n=n: bare_step(backbone, bare_prompts[n], label_emb, padded[i])) for n in (1, 10)}
        for m, (model, scorer, opt) in ept.items():
            contenders[m] = lambda i, model=model, scorer=scorer, opt=opt: step(model, scorer, opt, tok, feats[i])
        times = interleaved(contenders, list(range(len(feats))), reps)
        rows = []
        for m, n in METHODS.items():
            base = f"bare n={n}"
            ratio = paired_ratio(times[m], times[base])
            wall = paired_ratio(times.wall[m], times.wall[base])
            results.append({"task": task, "method": m, "n": n, "ept_ms": 1e3 * median(times[m]),
                            "bare_ms": 1e3 * median(times[base]), "ratio": ratio, "wall_ratio": wall, "ok": ratio <= TARGET})
            rows.append([task, m, n, 1e3 * median(times[m]), 1e3 * median(times[base]), ratio, verdict(ratio <= TARGET),
                         1e3 * median(times.wall[m]), 1e3 * median(times.wall[base]), wall])
        print(f"{task}: padded lengths {min(lengths)}-{max(lengths)} tokens (+ n prompt); clock: {times.clock}")
        table(["task", "method", "n", "ept step ms", "bare step ms", "ratio ept/bare", f"target <= {TARGET}",
               "wall: ept ms", "wall: bare ms", "wall ratio"], rows)
        print()
    return results


def main(argv=None) -> int:
    return script_main(__doc__, run, argv, reps=4, batches=4, tasks=["sst2", "rte"])


if __name__ == "__main__":
    raise SystemExit(main())
