"""`ept params`: trainable and inference parameter counts per task (paper Table 1, Table 4).

    ept params --backbone t5-base --method ept            # 2304
    ept params --backbone t5-large --method ptuning --json
    ept params --table                                     # every method x backbone

Prompt methods on a registered backbone or a local model folder are counted from the config
alone (no torch). ft, lora and ia3 depend on the backbone's layers: they build it on the meta
device through torch (no weights), as do hub ids, `--table` and `--task` (the pair head).
"""

from __future__ import annotations

import argparse
import json

from ept.commands.common import add_method_args, method_from_args

TABLE_BACKBONES = ("t5-small", "t5-base", "t5-large", "minilm", "smollm2-135m")


def register(sub) -> None:
    p = sub.add_parser("params", help="print trainable/inference parameter counts", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="minilm", help="t5-small | t5-base | t5-large | minilm | smollm2-135m | a local model folder")
    p.add_argument("--json", action="store_true", help='print {"trainable": N, "inference": M}')
    p.add_argument("--table", action="store_true", help="print all methods x t5-small/base/large/minilm/smollm2-135m")
    p.add_argument("--task", help="count the task's head too (siamese pair tasks on an encoder: 2 scalars binary, C+1 for C labels)")
    p.add_argument("--pair-encoding", default="siamese", choices=["siamese", "cross"], help="with --task")
    p.add_argument("--pair-head", default="trainable", choices=["trainable", "fixed"], help="with --task")
    add_method_args(p, default_method="ept")
    p.set_defaults(func=run)


def count_params(backbone: str, config, linear_head_labels: int = 0, pair_head: int = 0) -> dict[str, int]:
    """`ept.backbones.param_counts`, analytic and torch-free where it can be: a prompt method on a
    backbone whose e is known offline. Otherwise torch is imported here, lazily."""
    from ept.backbone_specs import offline_embed_dim

    e = offline_embed_dim(backbone)
    trainable = config.encoder_params(e) if e is not None else None
    if trainable is None:
        from ept.backbones import param_counts

        return param_counts(backbone, config, linear_head_labels, pair_head)
    head = (e + 1) * linear_head_labels + pair_head
    return {"trainable": trainable + head, "inference": config.inference_params(e) + head}


def table_rows(backbones=TABLE_BACKBONES) -> list[dict]:
    from ept.backbones import param_counts
    from ept.method_configs import METHODS, method_config

    rows = []
    for name in METHODS.names():
        counts = {b: param_counts(b, method_config(name)) for b in backbones}
        rows.append({"method": name, **{b: counts[b] for b in backbones}})
    return rows


def task_head_params(args) -> int:
    """The siamese pair head's scalars for --task on --backbone (0 without --task)."""
    if not args.task:
        return 0
    from ept.backbones import kind_of_backbone
    from ept.heads import pair_head_params
    from ept.tasks.taskfile import resolve_task

    spec = resolve_task(args.task)  # a name or a task file
    kind = kind_of_backbone(args.backbone)
    if args.linear_head and pair_head_params(spec, kind, args.pair_encoding, args.pair_head):
        raise ValueError("--linear-head scores a joint encoding; add --pair-encoding cross")
    return pair_head_params(spec, kind, args.pair_encoding, args.pair_head)


def run(args) -> int:
    from ept.config import check_backbone

    config = None if args.table else method_from_args(args)  # bad switches fail before torch loads
    check_backbone(args.backbone)
    if args.table:
        rows = table_rows()
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        head = "| method | " + " | ".join(f"{b} trainable / inference" for b in TABLE_BACKBONES) + " |"
        print(head)
        print("|" + " --- |" * (len(TABLE_BACKBONES) + 1))
        for r in rows:
            cells = [f"{r[b]['trainable']:,} / {r[b]['inference']:,}" for b in TABLE_BACKBONES]
            print(f"| {r['method']} | " + " | ".join(cells) + " |")
        return 0
    try:
        counts = count_params(args.backbone, config, args.linear_head or 0, task_head_params(args))
    except OSError as err:  # a hub id without internet, a folder without config.json
        raise FileNotFoundError(f"backbone {args.backbone!r}: cannot read its config: {' '.join(str(err).split())}") from None
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"{config.method} on {args.backbone}: trainable params {counts['trainable']:,} || inference params {counts['inference']:,}")
    return 0
