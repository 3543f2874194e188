"""`ept serve`: score rows of many tasks with one frozen backbone, mixed in the same batches.

    ept serve --prompt sst2=runs/sst2-ept/export --prompt rte=runs/rte-pt/export --input rows.jsonl
    ept serve --prompt mine=export/ --labels mine=bad,good --input - < rows.jsonl > preds.jsonl

Each input line is {"task": NAME, "text": "..."} or {"task": NAME, "fields": ["...", "..."]}
(encoders read fields as a [SEP] pair; seq2seq renders them with the task's template). Each output
line is the input's task plus "prediction" (label index, number, or generated text with
--eval-mode generate), "label" (the label word; null when generation produced none) and "scores"
(one per label; not with generation), in input order. Rows are sorted by length into passes of
--batch-size rows, each pass mixing tasks.

A prompt's label set comes from `--labels NAME=w1,w2,...`, else from the registered task named
NAME (`ept ls`). The backbone is the one the exports name (they must agree) unless --backbone.
"""

from __future__ import annotations

import argparse
import json
import sys

from ept.flags import positive_int

EXAMPLES = """examples:
  ept serve --prompt sst2=runs/sst2-ept/export --prompt rte=runs/rte-pt/export --input rows.jsonl
  echo '{"task": "mine", "text": "a gem"}' | ept serve --prompt mine=export/ --labels mine=bad,good --input -"""


def register(sub) -> None:
    p = sub.add_parser("serve", help="score mixed-task rows with many exported prompts on one backbone",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", action="append", required=True, metavar="NAME=EXPORT_DIR",
                   help="a task name and its `ept export` folder; repeat for every task")
    p.add_argument("--labels", action="append", default=[], metavar="NAME=W1,W2,...",
                   help="label words of a prompt whose NAME is not a registered task")
    p.add_argument("--input", required=True, help="jsonl rows, or - for stdin")
    p.add_argument("--output", default="-", help="jsonl predictions, or - for stdout (default)")
    p.add_argument("--backbone", default=None, help="override the backbone the exports name")
    p.add_argument("--eval-mode", default=None, choices=("rank", "generate"), help="seq2seq classification: rank (default) | generate")
    p.add_argument("--batch-size", type=positive_int, default=64, help="rows per backbone pass (any mix of tasks)")
    p.add_argument("--max-length", type=positive_int, default=None, help="max input tokens (default: each task's, else 256)")
    p.set_defaults(func=run)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} {item!r}: expected NAME=VALUE")
        if name in out:
            raise ValueError(f"{flag}: {name!r} given twice")
        out[name] = value
    return out


def _spec(name: str, meta: dict, labels: dict[str, str]):
    from ept.serve import LabelSpec

    if name in labels:
        words = tuple(w.strip() for w in labels[name].split(","))
        return LabelSpec(name, "classification", words)
    try:
        from ept.tasks import get_task
    except ImportError:
        get_task = None
    task = meta.get("task") or name
    if get_task is not None:
        try:
            return get_task(task)
        except (KeyError, ValueError):
            pass
    raise ValueError(f"prompt {name!r}: no label words; pass --labels {name}=word,word,... or name a registered task (ept ls)")


def _read_rows(path: str) -> list[dict]:
    lines = sys.stdin.read().splitlines() if path == "-" else open(path, encoding="utf-8").read().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {i}: not JSON ({err.msg})") from None
    return rows


def run(args) -> int:
    from ept.backbones import load_backbone
    from ept.checkpoint import load_exported
    from ept.serve import MultiTaskServer

    prompts, labels = _pairs(args.prompt, "--prompt"), _pairs(args.labels, "--labels")
    unknown = sorted(set(labels) - set(prompts))
    if unknown:
        raise ValueError(f"--labels for {unknown} but no --prompt of that name; prompts: {', '.join(prompts)}")
    exports = {name: load_exported(folder) for name, folder in prompts.items()}
    backbones = {meta.get("backbone") for _, meta in exports.values()}
    if args.backbone is None and len(backbones) != 1:
        raise ValueError(f"the exports name different backbones {sorted(map(str, backbones))}; pick one with --backbone")
    specs = {name: _spec(name, meta, labels) for name, (_, meta) in exports.items()}  # fail before loading weights
    rows = _read_rows(args.input)
    for i, row in enumerate(rows):  # before any weights load
        if not isinstance(row, dict) or row.get("task") not in prompts:
            task = row.get("task") if isinstance(row, dict) else None
            raise ValueError(f"input row {i}: task {task!r} has no --prompt; prompts: {', '.join(prompts)}")

    server = MultiTaskServer(*load_backbone(args.backbone or backbones.pop()), max_length=args.max_length)
    for name, (prompt, _) in exports.items():
        mode = args.eval_mode if server.kind == "seq2seq" else None
        server.add_task(name, prompt, specs[name], eval_mode=mode)
    results = server.score(rows, batch_size=args.batch_size)
    text = "".join(json.dumps(r) + "\n" for r in results)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0
