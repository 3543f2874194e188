"""Flags shared by several subcommands, generated from the method config dataclasses so that
every switch of every method (and its help text) exists exactly once."""

from __future__ import annotations

import enum
from dataclasses import MISSING, fields

SKIP = {"method"}


def _method_fields():
    from ept.prompts import METHODS

    seen = {}
    for _, method in METHODS.items():
        for f in fields(method.config_cls):
            seen.setdefault(f.name, f)
    return seen


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def add_method_args(parser, default_method: str | None = "ept", linear_head: bool = True) -> None:
    """--method plus one flag per config field of any method (e.g. --hidden-size, --num-tokens).

    Flags default to None, meaning "the method's own default"; giving a flag a method does not
    have is an error that lists the method's options.
    """
    from ept.prompts import METHODS

    g = parser.add_argument_group("method")
    g.add_argument("--method", default=default_method, help=f"one of: {', '.join(METHODS.names())} (ept* = ept_star)")
    for name, f in _method_fields().items():
        if name in SKIP:
            continue
        default = f.default if f.default is not MISSING else None
        typ = {bool: _parse_bool, int: int}.get(type(default), str)
        if name in ("hidden_size",):
            typ = int
        if isinstance(default, enum.Enum):
            typ = str
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                       help=f.metadata.get("help", ""))
    if not linear_head:  # the caller has its own --linear-head (ept train: TrainConfig.linear_head)
        return
    g.add_argument("--linear-head", type=int, default=None,
                   help="encoder-only: add a trainable linear head with this many labels (counted)")


def method_overrides(args) -> dict:
    return {name: getattr(args, name) for name in _method_fields() if name not in SKIP and getattr(args, name, None) is not None}


def method_from_args(args):
    from ept.prompts import method_config

    return method_config(args.method, **method_overrides(args))
