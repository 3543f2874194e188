"""The `ept` command line: a wiring file only.

Each subcommand lives in `ept/commands/<name>.py` with two functions, `register(subparsers)`
(adds its parser; imports nothing heavy so `--help` stays fast) and `run(args) -> int`.

    ept params --backbone t5-base --method ept
    ept train --task sst2 --method ept
    ept data check --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in `ept --help`.
COMMANDS = [
    "params", "train", "eval", "export", "data", "sweep", "analyze", "report", "serve", "fetch", "ls", "env",
]


class EptError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


class UsageError(EptError):
    """A bad flag or flag value, found by argparse; `prog` is the (sub)command that rejected it."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting: `main` prints ONE line naming
    the bad value and returns 2, the same as for every other user error (and tests get a code)."""

    def error(self, message: str):
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ept", description="Explosive Prompt Tuning toolkit", allow_abbrev=False,
        epilog="examples:\n  ept params --backbone t5-base --method ept\n  ept train --task sst2 --method ept",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ept.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"ept.commands.{name}":  # not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(f"{err.prog}: error: {err} (see {err.prog} --help)", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (EptError, ValueError, KeyError, OSError) as err:
        # User-facing errors name the bad value and the allowed ones; no traceback needed.
        # OSError covers missing files, unreachable hub ids, full disks and permissions: the
        # message names the path, which is what the user must fix.
        msg = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        if isinstance(err, OSError):  # library messages (hub, filesystem) span lines: keep one
            msg = " ".join(msg.split())
        print(f"ept {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (ept train says how to resume)
        print(f"\nept {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    # `python -m ept.cli` runs this file as __main__; commands raise ept.cli.EptError, a different class
    # from __main__.EptError, so go through the imported module or they escape as tracebacks.
    from ept.cli import entry as _entry

    _entry()
