"""Stage A, part 2 (issue 19 item 3): does bf16 give the fp32 scores for trained prompts?

    python experiments/smollm2_prereg/precision_check.py results/smollm2-prereg/A/prompts/* \
        --rows 300 --out results/smollm2-prereg/A/precision.json

For each run: its best prompt scored on the first `--rows` validation rows in fp32 and in bf16
(the same rows, the same rank scoring), then the accuracies, how many predictions differ, and how
far the label scores move (max and mean |bf16 - fp32| in nats), with the prompt's norm. bf16 needs
a machine with fast bf16 (AMX / AVX-512-BF16 or CUDA); elsewhere the check says so and stops.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def scores(run: str, precision: str, rows: int) -> tuple[torch.Tensor, list, dict]:
    """(label scores (rows, C) in fp32 numbers, labels, facts) of the run's best prompt."""
    from ept.batching import sorted_batches, to_device
    from ept.evaluation import load_run
    from ept.heads import make_scorer
    from ept.tasks import load_task

    cfg, model = load_run(run, precision=precision)
    model.eval()
    data = load_task(cfg.task, data_dir=cfg.data_dir, seed=cfg.split_seed, template=cfg.template)
    examples = data.validation[:rows]
    scorer = make_scorer(model, data.spec, cfg.eval_mode, label_score_eos=cfg.label_score_eos)
    encoded = scorer.encode(examples, cfg.max_length or data.spec.max_length)
    out = torch.empty(len(examples), len(data.spec.label_words))
    device = next(model.parameters()).device
    with torch.no_grad():
        for idx, batch in sorted_batches(model.tokenizer, encoded, cfg.eval_batch_size):
            out[idx] = scorer.label_scores(to_device(batch, device)).float().cpu()
        norm = model.prompt().float().norm(dim=-1).max().item()
    return out, [x.label for x in examples], {"precision": model.precision, "prompt_norm": norm,
                                             "method": cfg.method.name}


def compare(run: str, rows: int) -> dict:
    s32, labels, facts = scores(run, "fp32", rows)
    s16, _, facts16 = scores(run, "bf16", rows)
    if facts16["precision"] != "bf16":
        raise SystemExit(f"bf16 was not used on this machine (resolved {facts16['precision']}): no comparison")
    y = torch.tensor(labels)
    p32, p16 = s32.argmax(1), s16.argmax(1)
    diff = (s16 - s32).abs()
    return {"run": Path(run).name, "method": facts["method"], "prompt_norm": facts["prompt_norm"], "rows": len(y),
            "accuracy_fp32": 100 * (p32 == y).float().mean().item(), "accuracy_bf16": 100 * (p16 == y).float().mean().item(),
            "predictions_differ": int((p32 != p16).sum()), "max_abs_score_diff": diff.max().item(),
            "mean_abs_score_diff": diff.mean().item()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from ept.precision import fast_low_precision

    results = {"machine": fast_low_precision(torch.device("cpu"))[1], "runs": [compare(r, args.rows) for r in args.runs]}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
