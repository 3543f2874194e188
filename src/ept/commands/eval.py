"""`ept eval`: evaluate a saved run's best prompt, on its own task or another (zero-shot transfer).

    ept eval runs/sst2-ept-minilm-s0
    ept eval runs/sst2-ept-minilm-s0 --split validation
    ept eval runs/sst2-ept-minilm-s0 --task yelp          # transfer (paper Appendix A.2)
"""

from __future__ import annotations

import argparse
import json

from ept.flags import positive_int


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a saved run", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder written by ept train")
    p.add_argument("--split", default="test", choices=["test", "validation"])
    p.add_argument("--task", help="evaluate on another task (default: the run's)")
    p.add_argument("--data-dir", help="local task data")
    p.add_argument("--max-eval-examples", type=positive_int, help="cap the split size (default: the run's)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ept.tasks import TASKS

    task = TASKS.canonical(args.task) if args.task else None  # `CB` -> `cb`; unknown names fail before loading
    from ept.evaluation import evaluate_run

    metrics = evaluate_run(args.run, split=args.split, task=task, data_dir=args.data_dir,
                           max_examples=args.max_eval_examples)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0
