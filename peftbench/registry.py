"""Name -> component maps. A duplicate name is an error, never a silent rename."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

from .errors import RegistryError, UnknownComponentError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    component: T
    source: str  # the distribution (or module) that registered it


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, component: T, source: str) -> None:
        if not name or name != name.strip() or " " in name:
            raise RegistryError(f"{source} registered a {self.kind} with an invalid name {name!r}")
        if name in self._entries:
            first = self._entries[name].source
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by {first} and by {source}",
                "uninstall one of the two plugins or rename its component",
            )
        self._entries[name] = Entry(name, component, source)

    def get(self, name: str) -> T:
        return self.entry(name).component

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(self._entries)) or "none"
        return f"unknown {self.kind} {name!r}{hint} (known: {known}; see `peftbench list`)"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
