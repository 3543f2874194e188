"""One small registry class for methods, tasks, metrics and analyses.

Duplicates raise at import time; unknown names get a "did you mean" plus the full list, so a
typo on the command line tells the user what is allowed.
"""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unknown registry name; str() is the plain message (KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, item: T, *aliases: str) -> T:
        for key in (name, *aliases):
            if key != key.lower():
                raise ValueError(f"{self.kind} name {key!r} must be lower-case")
            if key in self._items or key in self._aliases:
                raise KeyError(f"{self.kind} {key!r} is already registered")
        self._items[name] = item
        for alias in aliases:
            self._aliases[alias] = name
        return item

    def canonical(self, name: str) -> str:
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            known = sorted(self._items) + sorted(self._aliases)
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint} Allowed: {', '.join(sorted(self._items))}")
        return key

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def __contains__(self, name: str) -> bool:
        try:
            self.canonical(name)
            return True
        except KeyError:
            return False

    def names(self) -> list[str]:
        return list(self._items)

    def aliases_of(self, name: str) -> list[str]:
        """Other names that resolve to `name` (e.g. `ept*` for `ept_star`)."""
        key = self.canonical(name)
        return [alias for alias, target in self._aliases.items() if target == key]

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())
