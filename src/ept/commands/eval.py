"""`ept eval`: evaluate a saved run's best prompt, on its own task or another (zero-shot transfer).

    ept eval runs/sst2-ept-minilm-s0
    ept eval runs/sst2-ept-minilm-s0 --split validation
    ept eval runs/sst2-ept-minilm-s0 --task yelp          # transfer (paper Appendix A.2)
    ept eval --no-prompt --task stsb --split dev          # the frozen backbone, zero-shot (siamese)
"""

from __future__ import annotations

import argparse
import json
import sys

from ept.flags import positive_int


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a saved run", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="run folder written by ept train (omit with --no-prompt)")
    p.add_argument("--split", default="test", choices=["test", "validation", "dev"],
                   help="dev = validation + test: the whole official dev set of the tasks the protocol halves")
    p.add_argument("--task", help="evaluate on another task, a name or a task file (default: the run's; required with --no-prompt)")
    p.add_argument("--no-prompt", action="store_true",
                   help="the frozen backbone alone, zero-shot (pair tasks: siamese cosine, threshold fitted on training pairs)")
    p.add_argument("--backbone", default="minilm", help="with --no-prompt: the backbone")
    p.add_argument("--pair-encoding", default="siamese", choices=["siamese", "cross"], help="with --no-prompt")
    p.add_argument("--template", help="with --no-prompt: the task's template (t5 | natural | ...; default t5)")
    p.add_argument("--sink-token", help="with --no-prompt, decoder-only without BOS: a token before the input")
    p.add_argument("--label-score-eos", choices=["true", "false"], default="true",
                   help="with --no-prompt, decoder-only: which rank scoring comes first (both are reported)")
    p.add_argument("--data-dir", help="local task data")
    p.add_argument("--max-eval-examples", type=positive_int, help="cap the split size (default: the run's)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="compute precision (default: the run's; auto = bf16 only on fast-bf16 hardware for pre-LN backbones)")
    p.add_argument("--precision-fallback", action="store_true",
                   help="an explicit bf16/fp16 on hardware without it falls back to fp32 with a warning")
    p.add_argument("--threads", type=_threads, default=1, help="torch CPU threads; 0 = torch's default (default: 1, as ept train)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=run)


def _threads(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0 = torch's default), got {text!r}")
    return int(text)


def run(args) -> int:
    from ept.precision import set_threads
    from ept.tasks.taskfile import resolve_task

    set_threads(args.threads)

    task = resolve_task(args.task) if args.task else None  # a name (`CB` -> cb) or a task file; fails before loading
    from ept.evaluation import evaluate_run, evaluate_zero_shot

    if args.no_prompt:
        if args.run or not task:
            raise ValueError("--no-prompt evaluates the frozen backbone: give --task and no run folder")
        metrics = evaluate_zero_shot(task, args.backbone, args.split, args.data_dir, args.max_eval_examples,
                                     args.pair_encoding, template=args.template, sink_token=args.sink_token,
                                     label_score_eos=args.label_score_eos == "true")
    elif not args.run:
        raise ValueError("give a run folder (or --no-prompt --task TASK)")
    else:
        from ept.training.rundir import RunDir

        note = RunDir(args.run).progress_note() if RunDir(args.run).config_path.is_file() else None
        if note:  # an unfinished run's best state: say so, the numbers are not the run's final ones
            print(f"ept eval: note: {args.run} is {note}", file=sys.stderr)
        metrics = evaluate_run(args.run, split=args.split, task=task, data_dir=args.data_dir,
                               max_examples=args.max_eval_examples, precision=args.precision,
                               precision_fallback=args.precision_fallback, threads=args.threads)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                         if not isinstance(v, dict)))
        for eos, m in metrics.get("label_score_eos", {}).items():
            print(f"  label_score_eos={eos}: " + " | ".join(f"{k} {v:.2f}" for k, v in m.items() if isinstance(v, float)))
    return 0
