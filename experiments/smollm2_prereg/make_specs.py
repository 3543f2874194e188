"""Write the specs of stages C, D and E from stage B's decision (docs/preregistration-smollm2.md).

    python experiments/smollm2_prereg/analyze.py       # writes results/smollm2-prereg/B/decision.json
    python experiments/smollm2_prereg/make_specs.py    # writes C_confirm.yaml, D_sink.yaml, E_rte.yaml

Everything but the learning rates is fixed by the preregistration and copied from the stage B
spec (template, label scoring, precision, schedule, clipping, weight decay, batch, grouping), so
the arms differ only in what the stage compares. A spec that exists is never rewritten: stages
are not changed after they start.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DECISION = ROOT / "results" / "smollm2-prereg" / "B" / "decision.json"
SHARED = ("backbone", "template", "label_score_eos", "precision", "batch_size", "eval_batch_size", "weight_decay",
          "lr_scheduler", "warmup_steps", "max_grad_norm", "decay_norm_and_bias", "group_by_length", "tensorboard",
          "checkpoint_every")


def grids(lr: dict, seeds: list[int], pt1: bool = False, extra: dict | None = None) -> list[dict]:
    """One grid per (seed, arm), seed by seed: `ept sweep` starts runs in spec order, so a stage cut
    short (a machine gone, the project stopped) holds the same seeds in every arm, not all of PT's."""
    out = []
    for seed in seeds:
        out += [{"method": ["pt"], "lr": [lr["pt"]], "seed": [seed], **(extra or {})},
                {"method": ["ept"], "lr": [lr["ept"]], "seed": [seed], **(extra or {})}]
        if pt1:
            out.append({"method": ["pt"], "num_tokens": [1], "lr": [lr["pt"]], "seed": [seed]})
    return out


def header(stage: str, what: str, command: str) -> str:
    return (f"# Reproduces: no paper table. Stage {stage} of the preregistered SmolLM2 experiment\n"
            f"# (docs/preregistration-smollm2.md): {what}\n"
            f"# Written by experiments/smollm2_prereg/make_specs.py from stage B's decision "
            f"(results/smollm2-prereg/B/decision.json).\n#   {command}\n")


def main() -> int:
    if not DECISION.exists():
        print(f"{DECISION} is missing: stage B has not finished (python experiments/smollm2_prereg/analyze.py)")
        return 2
    lr = json.loads(DECISION.read_text())["lr"]
    base = yaml.safe_load((HERE / "B_lr_screen.yaml").read_text())
    shared = {k: base[k] for k in SHARED}
    specs = {
        "C_confirm": ("C", "PT, EPT and PT with one token at their stage-B lrs, fresh seeds 2-6, test on all 872 rows.",
                      {**shared, "task": "sst2", "steps": 1000, "eval_every": 200, "max_length": 128,
                       "out": "results/smollm2-prereg/C", "grids": grids(lr, [2, 3, 4, 5, 6], pt1=True)}),
        "D_sink": ("D", "C's PT and EPT with the sink token <|endoftext|> before P', seeds 2-3.",
                   {**shared, "task": "sst2", "steps": 1000, "eval_every": 200, "max_length": 128,
                    "sink_token": "<|endoftext|>", "out": "results/smollm2-prereg/D", "grids": grids(lr, [2, 3])}),
        "E_rte": ("E", "RTE, PT and EPT at their stage-B lrs, seeds 2-4, 400 steps.",
                  {**shared, "task": "rte", "steps": 400, "eval_every": 100, "out": "results/smollm2-prereg/E",
                   "grids": grids(lr, [2, 3, 4])}),
    }
    for name, (stage, what, spec) in specs.items():
        path = HERE / f"{name}.yaml"
        if path.exists():
            print(f"{path.name} exists: left as it is (a stage is never changed once written)")
            continue
        command = f"ept sweep experiments/smollm2_prereg/{name}.yaml --workers 2"
        path.write_text(header(stage, what, command) + yaml.safe_dump(spec, sort_keys=False))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
