"""Name -> component maps. A duplicate name is an error, never a silent rename.

An entry may be pending: its name is known (from the plugin index, components/index.py) but its
plugin is imported only when the entry is first looked up, so a run imports the plugins it uses.
A name the index does not know imports every plugin that registers this kind before it is called
unknown: a plugin may register from a catalogue of its own (`peftbench backbone build`'s)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from ..errors import RegistryError, UnknownComponentError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    component: T
    source: str  # the distribution that registered it ("peftbench 0.1.0"): what a record keeps
    module: str = ""  # the plugin module that registered it (its entry point)

    @property
    def origin(self) -> str:
        """Where it came from, for errors: distribution, version and module."""
        return f"{self.source} ({self.module})" if self.module else self.source


@dataclass(frozen=True)
class Pending:
    source: str
    module: str
    load: Callable[[], None]  # imports the plugin, which adds its real entries

    @property
    def origin(self) -> str:
        return f"{self.source} ({self.module})"


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._pending: dict[str, Pending] = {}
        self._loaders: list[Callable[[], None]] = []  # every plugin that registers this kind, not yet imported

    def add(self, name: str, component: T, source: str, module: str = "") -> None:
        origin = Entry(name, component, source, module).origin
        if not name or name != name.strip() or " " in name:
            raise RegistryError(f"{origin} registered a {self.kind} with an invalid name {name!r}")
        pending = self._pending.get(name)
        if name in self._entries or (pending and pending.module != module):
            first = self._entries[name].origin if name in self._entries else pending.origin
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by {first} and by {origin}",
                "uninstall one of the two plugins or rename its component",
            )
        self._pending.pop(name, None)
        self._entries[name] = Entry(name, component, source, module)

    def add_pending(self, name: str, pending: Pending) -> None:
        """A name the plugin index says ``pending.module`` registers; imported on first look-up."""
        if name in self._entries or name in self._pending:
            first = self._entries[name].origin if name in self._entries else self._pending[name].origin
            raise RegistryError(f"{self.kind} {name!r} is registered twice: by {first} and by {pending.origin}",
                                "uninstall one of the two plugins or rename its component")
        self._pending[name] = pending

    def add_loader(self, load: Callable[[], None]) -> None:
        """A plugin that implements this kind's hook: imported when a name is not found."""
        self._loaders.append(load)

    def find(self, name: str) -> bool:
        """Whether ``name`` is registered, every plugin of this kind imported first if the index
        does not know it."""
        if name not in self:
            for load in self._loaders:
                load()
        return name in self

    def get(self, name: str) -> T:
        return self.entry(name).component

    def entry(self, name: str) -> Entry[T]:
        pending = self._pending.get(name)
        if pending is not None:
            pending.load()  # the plugin adds its real entries
            self._pending.pop(name, None)  # still pending: the plugin no longer registers it (its catalogue changed)
        if name not in self._entries and not self.find(name):
            raise UnknownComponentError(self.unknown_message(name))
        return self._entries[name]

    def names(self) -> list[str]:
        """Every name, loaded or pending, without importing a plugin."""
        return sorted({*self._entries, *self._pending})

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(self.names()) or "none"
        return f"unknown {self.kind} {name!r}{hint} (known: {known}; see `peftbench list`)"

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._pending

    def __iter__(self) -> Iterator[Entry[T]]:
        """Every entry, its plugin imported where it was pending."""
        for load in self._loaders:
            load()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries) + len(self._pending)
