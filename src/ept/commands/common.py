"""Flags shared by several subcommands, generated from the method config dataclasses' type
annotations (`ept.flags`) so that every switch of every method (its type and help text) exists
exactly once. Torch-free: `ept --help` stays fast."""

from __future__ import annotations

SKIP = {"method"}


def _method_fields() -> set[str]:
    """Every switch of every method (the union of their config fields)."""
    from ept.method_configs import option_names

    return option_names()


def add_method_args(parser, default_method: str | None = "ept", linear_head: bool = True) -> None:
    """--method plus one flag per config field of any method (e.g. --hidden-size, --num-tokens).

    Flags default to None, meaning "the method's own default"; giving a flag a method does not
    have is an error that lists the method's options. A switch shared by several methods has one
    flag, typed from the first method that declares it (the types agree; tests/test_cli.py checks).
    """
    from ept.flags import add_field_flags, positive_int
    from ept.method_configs import METHODS

    g = parser.add_argument_group("method")
    g.add_argument("--method", default=default_method, help=f"one of: {', '.join(METHODS.names())} (ept* = ept_star)")
    seen = set(SKIP)
    for _, method in METHODS.items():
        add_field_flags(g, method.config_cls, seen=seen)
    if not linear_head:  # the caller has its own --linear-head (ept train: TrainConfig.linear_head)
        return
    g.add_argument("--linear-head", type=positive_int, default=None, metavar="LABELS",
                   help="encoder-only: add a trainable linear head with this many labels (counted)")


def method_overrides(args) -> dict:
    return {name: getattr(args, name) for name in _method_fields() if name not in SKIP and getattr(args, name, None) is not None}


def method_from_args(args):
    from ept.method_configs import method_config

    return method_config(args.method, **method_overrides(args))
