"""Typed dataclass fields: one coercion and validation path for the CLI, config files and sweep
specs, and argparse flags generated from the fields' type annotations.

A field's annotation says what it accepts (`int`, `float | None`, an `enum.Enum`, a `Literal`);
its metadata may add a range: `min` (>=), `gt` (>), `lt` (<). `validate(obj)`, called from a config's
`__post_init__`, coerces every field to its annotation and checks its range, so a value typed
on the command line, read from YAML/JSON or expanded from a sweep grid meets the same rules and
the same messages ("steps='ten': expected an integer").

Hand-written rather than `transformers.HfArgumentParser`: our flags must default to None so that
"not given" is visible (precedence: defaults < --config file < flags), they go into argparse
sub-commands and argument groups, and `ept --help` must not pay for importing transformers.
This module imports nothing heavy.
"""

from __future__ import annotations

import argparse
import enum
import functools
import math
import types
import typing
from dataclasses import fields
from typing import Any, Literal, Union

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields (strings under `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def unwrap(tp) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed): `int | None` -> (int, True)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported field type {tp!r}: one type or one type | None")
        return args[0], True
    return tp, False


def describe(tp) -> str:
    """What a type accepts, in words: for messages and `--help` metavars."""
    base, optional = unwrap(tp)
    if typing.get_origin(base) is Literal:
        text = " | ".join(map(str, typing.get_args(base)))
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        text = " | ".join(str(m.value) for m in base)
    else:
        text = {bool: "true | false", int: "an integer", float: "a number", str: "a string",
                dict: "a mapping"}.get(base, getattr(base, "__name__", str(base)))
    return text + (" (or null)" if optional else "")


def _bad(name: str, value, tp) -> ValueError:
    base, _ = unwrap(tp)
    if typing.get_origin(base) is Literal or (isinstance(base, type) and issubclass(base, enum.Enum)):
        return ValueError(f"{name}={value!r} is not allowed; allowed: {describe(tp).replace(' | ', ', ')}")
    return ValueError(f"{name}={value!r}: expected {describe(tp)}")


def coerce(name: str, value, tp):
    """`value` as type `tp`, or a ValueError naming the field, the value and what is allowed.
    Strings are parsed (flags, YAML's unquoted `1e-3`); a bool is never taken for a number."""
    base, optional = unwrap(tp)
    if value is None:
        if optional:
            return None
        raise _bad(name, value, tp)
    if typing.get_origin(base) is Literal:
        if value not in typing.get_args(base):
            raise _bad(name, value, tp)
        return value
    if isinstance(base, type) and issubclass(base, enum.Enum):
        try:
            return base(value)
        except ValueError:
            raise _bad(name, value, tp) from None
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _bad(name, value, tp)
    if base in (int, float):
        return _number(name, value, tp, base)
    if base in (str, dict) and not isinstance(value, base):
        raise _bad(name, value, tp)
    return value


def _number(name: str, value, tp, base: type):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(name, value, tp)
    try:
        number = float(value)
    except ValueError:
        raise _bad(name, value, tp) from None
    if not math.isfinite(number):
        raise ValueError(f"{name}={value!r}: expected a finite number")
    if base is float:
        return number
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _bad(name, value, tp) from None
    if number.is_integer():  # 1000.0 from a YAML/JSON file
        return int(number)
    raise _bad(name, value, tp)


def check_range(name: str, value, meta) -> None:
    """Range rules from field metadata: `min` (value >= min), `gt` (> gt), `lt` (< lt). None passes."""
    if value is None:
        return
    if "min" in meta and value < meta["min"]:
        raise ValueError(f"{name}={value!r}: must be >= {meta['min']}{_unset_hint(meta)}")
    if "gt" in meta and value <= meta["gt"]:
        raise ValueError(f"{name}={value!r}: must be > {meta['gt']}{_unset_hint(meta)}")
    if "lt" in meta and value >= meta["lt"]:
        raise ValueError(f"{name}={value!r}: must be < {meta['lt']}")


def _unset_hint(meta) -> str:
    return f" (leave it unset for {meta['unset']})" if "unset" in meta else ""


def validate(obj) -> None:
    """Coerce every field of a dataclass instance to its annotation and check its range, in place."""
    types_ = field_types(type(obj))
    for f in fields(obj):
        value = coerce(f.name, getattr(obj, f.name), types_[f.name])
        check_range(f.name, value, f.metadata)
        setattr(obj, f.name, value)


def parse_bool(text: str) -> bool:
    return coerce("value", text, bool)


def converter(name: str, tp):
    """An argparse `type=` for a field: the same coercion as config files; argparse prints the
    message as `argument --flag: <message>`."""
    def convert(text: str):
        try:
            return coerce(name, text, tp)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = name
    return convert


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_field_flags(group, cls: type, skip=(), seen: set | None = None, default_note: bool = False) -> None:
    """One flag per field of dataclass `cls` (`--num-tokens` for `num_tokens`), typed from its
    annotation, defaulting to None ("not given"). Fields in `skip` or `seen` are left out."""
    types_ = field_types(cls)
    for f in fields(cls):
        if f.name in skip or (seen is not None and f.name in seen):
            continue
        if seen is not None:
            seen.add(f.name)
        help_text = f.metadata.get("help", "")
        if default_note and _default_text(f) != "None":  # None-defaults say what None means in their help
            help_text += f" (default: {_default_text(f)})"
        group.add_argument(flag_name(f.name), dest=f.name, type=converter(f.name, types_[f.name]), default=None,
                           metavar=_metavar(types_[f.name]), help=help_text)


def _default_text(f) -> str:
    from dataclasses import MISSING

    value = f.default if f.default is not MISSING else None
    return str(value.value if isinstance(value, enum.Enum) else value)


def _metavar(tp) -> str:
    base, _ = unwrap(tp)
    if typing.get_origin(base) is Literal or (isinstance(base, type) and issubclass(base, enum.Enum)):
        return "{" + describe(base).replace(" | ", ",") + "}"
    return {bool: "BOOL", int: "INT", float: "FLOAT"}.get(base, "STR")


def positive_int(text: str) -> int:
    """argparse `type=` for counts that must be >= 1 (batch sizes, caps given on the command line)."""
    try:
        value = coerce("value", text, int)
        check_range("value", value, {"min": 1})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    return value
