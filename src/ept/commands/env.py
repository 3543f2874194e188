"""`ept env`: the environment, to paste into a bug report (every run folder saves it too).

    ept env
    ept env --json
"""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("env", help="print versions, platform, device, bf16 support and data root",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    from ept.envinfo import collect_env, format_env

    env = collect_env()
    if args.json:
        print(json.dumps(env, indent=1))
    else:
        print("Copy-and-paste the text below in your issue:\n")
        print(format_env(env))
    return 0
