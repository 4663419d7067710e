"""A registry of named things of one kind (variants, cache kinds, backends, studies, presets): exact names,
errors that list the valid ones, and additions at run time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """A dict of named entries that says what it holds: `lookup` by exact name (a miss raises ValueError
    listing every valid name), `register` a new one (a name already taken raises ValueError)."""

    def __init__(self, what: str, entries: Mapping[str, T]) -> None:
        super().__init__(entries)
        self.what = what

    def lookup(self, name: str) -> T:
        """The entry called `name`; a miss raises ValueError naming it and every valid name."""
        if name not in self:
            raise ValueError(f"unknown {self.what} {name!r}; valid names: {', '.join(self)}")
        return self[name]

    def register(self, name: str, entry: T) -> T:
        """Add `entry` under `name`; returns it."""
        if name in self:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self[name] = entry
        return entry
