"""Benchmark 2: ept training examples/s against the PEFT library (issue 6, target >= 1.0x).

    python benchmarks/bench_vs_peft.py               # ~2-3 minutes on 2 CPU cores

Same MiniLM weights (PEFT gets its own copy), same pre-tokenised real SST-2 and RTE batches of 16
collated by ept.batching, same loss (the label-scoring head: mean-pool the backbone output over
the input positions, cosine against frozen label embeddings / 0.05, cross-entropy), same AdamW
(lr 0.3, wd 0.01), both in train mode:
- pt:      ept `pt` (n=10)      vs peft PromptTuningConfig(num_virtual_tokens=10)
- ptuning: ept `ptuning` (n=10) vs peft PromptEncoderConfig(MLP, encoder_hidden_size=e)
PEFT's prompt-learning forward drops token_type_ids (with a warning), so it is called without
them; BERT then adds the all-zero token-type embedding, the same work. ept's step also records
mu_t, which PEFT's does not.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (script_main, BATCH, encoded_batches, ept_train_step_fn, interleaved,  # noqa: E402
                     label_embeddings, machine, make_ept, median, paired_ratio, pooled_ce, table, verdict)

TARGET = 1.0


def make_peft(backbone, method: str, n: int = 10, seed: int = 0):
    from peft import PromptEncoderConfig, PromptTuningConfig, get_peft_model

    torch.manual_seed(seed)
    e = backbone.config.hidden_size
    common = dict(task_type="FEATURE_EXTRACTION", num_virtual_tokens=n, token_dim=e, num_transformer_submodules=1,
                  num_attention_heads=backbone.config.num_attention_heads, num_layers=backbone.config.num_hidden_layers)
    if method == "pt":
        cfg = PromptTuningConfig(**common)
    else:
        cfg = PromptEncoderConfig(**common, encoder_reparameterization_type="MLP", encoder_hidden_size=e)
    model = get_peft_model(copy.deepcopy(backbone), cfg)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3, weight_decay=0.01)
    return model, opt


def peft_train_step(model, opt, tokenizer, features, label_emb, n: int = 10):
    from ept.batching import collate

    batch = collate(tokenizer, features)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = pooled_ce(out.last_hidden_state, batch["attention_mask"], batch["labels"], label_emb, n)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def run(reps: int = 4, batches: int = 4, tasks=("sst2", "rte")) -> list[dict]:
    from ept.backbones import load_backbone

    warnings.filterwarnings("ignore", message=".*[Tt]oken type ids.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    backbone, tok = load_backbone("minilm")
    backbone.requires_grad_(False)  # frozen for every contender (from_pretrained leaves grads on)
    step = ept_train_step_fn()
    print(f"machine: {machine()}")
    print(f"batch {BATCH}; {reps} reps x {batches} batches per task\n")
    results = []
    for task in tasks:
        spec, feats = encoded_batches(tok, task, "encoder", batches)
        label_emb = label_embeddings(backbone, tok, spec.label_words)
        contenders = {}
        for m in ("pt", "ptuning"):
            model, scorer, opt = make_ept(backbone, tok, spec, m)
            contenders[f"ept {m}"] = lambda i, a=(model, scorer, opt): step(*a, tok, feats[i])
            pmodel, popt = make_peft(backbone, m)
            contenders[f"peft {m}"] = lambda i, pm=pmodel, po=popt: peft_train_step(pm, po, tok, feats[i], label_emb)
        times = interleaved(contenders, list(range(len(feats))), reps)
        rows = []
        for m in ("pt", "ptuning"):
            te, tp = times[f"ept {m}"], times[f"peft {m}"]
            ratio = paired_ratio(tp, te)  # (ept examples/s) / (peft examples/s)
            wall = paired_ratio(times.wall[f"peft {m}"], times.wall[f"ept {m}"])
            results.append({"task": task, "method": m, "ept_ex_s": BATCH / median(te), "peft_ex_s": BATCH / median(tp),
                            "ratio": ratio, "wall_ratio": wall, "ok": ratio >= TARGET})
            rows.append([task, m, BATCH / median(te), BATCH / median(tp), ratio, verdict(ratio >= TARGET), wall])
        print(f"{task}: clock: {times.clock}")
        table(["task", "method", "ept examples/s", "peft examples/s", "ratio ept/peft", f"target >= {TARGET}",
               "wall-clock ratio"], rows)
        print()
    return results


def main(argv=None) -> int:
    return script_main(__doc__, run, argv, reps=4, batches=4, tasks=["sst2", "rte"])


if __name__ == "__main__":
    raise SystemExit(main())
