"""`ept params`: trainable and inference parameter counts per task (paper Table 1, Table 4).

    ept params --backbone t5-base --method ept            # 2304
    ept params --backbone t5-large --method ptuning --json
    ept params --table                                     # every method x backbone
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
    add_method_args(p, default_method="ept")
    p.set_defaults(func=run)


def table_rows(backbones=TABLE_BACKBONES) -> list[dict]:
    from ept.backbones import param_counts
    from ept.prompts import METHODS, method_config

    rows = []
    for name in METHODS.names():
        counts = {b: param_counts(b, method_config(name)) for b in backbones}
        rows.append({"method": name, **{b: counts[b] for b in backbones}})
    return rows


def run(args) -> int:
    from ept.backbones import param_counts

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
    config = method_from_args(args)
    counts = param_counts(args.backbone, config, args.linear_head or 0)
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"{config.method} on {args.backbone}: trainable params {counts['trainable']:,} || inference params {counts['inference']:,}")
    return 0
