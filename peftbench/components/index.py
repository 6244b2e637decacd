"""The plugin index: which component names each installed plugin registers, and which hooks it
implements, so that a command imports only the plugins it uses (lm-eval's registry keeps lazy
"module:object" entries for the same reason).

The index is built by importing every plugin once and is kept in the cache folder, keyed by what
could change its content: each entry point (distribution, version, name, module), the files beside
each plugin module (an editable install's code changes without a new version), and the
site-packages folders on sys.path (installing, upgrading or removing a distribution changes them:
a plugin such as peft's catalogue registers what the installed library offers).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records.files import cache_root, write_json_atomic

ENTRY_POINT_GROUP = "peftbench"
INDEX_VERSION = 1


@dataclass(frozen=True)
class PluginEntry:
    """One entry point of the ``peftbench`` group: a plugin module and the distribution that ships it."""

    name: str
    module: str
    dist: str
    version: str

    @property
    def key(self) -> str:
        """Unique among the installed plugins: entry names are only labels, and two distributions may
        both call an entry ``lora``."""
        return f"{self.dist}/{self.name}"

    @property
    def source(self) -> str:
        return f"{self.dist} {self.version}"

    @property
    def origin(self) -> str:
        return f"{self.source} ({self.module})"


def plugin_entries() -> list[PluginEntry]:
    """Every installed plugin (importlib.metadata keeps the first of a distribution found twice on
    sys.path, as Python's import would)."""
    found: dict[str, PluginEntry] = {}
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = point.dist
        entry = PluginEntry(point.name, point.value, dist.name if dist else "?", dist.version if dist else "?")
        found.setdefault(entry.key, entry)
    return sorted(found.values(), key=lambda e: e.key)


def _folder_stamps(entries: list[PluginEntry]) -> list[Any]:
    """Size and modification time of the files beside each plugin module, and of sys.path's folders."""
    stamps: list[Any] = []
    folders = {folder for entry in entries if (folder := _module_folder(entry.module)) is not None}
    for folder in sorted(folders):
        with contextlib.suppress(OSError):
            stamps += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.iterdir()) if f.is_file()]
    for path in sys.path:  # where distributions install (a folder on PYTHONPATH may change at every run)
        if path.endswith("-packages"):
            with contextlib.suppress(OSError):
                stamps.append((path, os.stat(path).st_mtime_ns))
    return stamps


def _module_folder(module: str) -> Path | None:
    """The folder a plugin module's file is in, found without importing anything: only the top-level
    name is looked up (importing ``pkg.sub`` would run ``pkg/__init__.py``, which may import torch)."""
    top, _, rest = module.partition(":")[0].partition(".")
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(top)
        if spec is None:
            return None
        if not rest:
            return Path(spec.origin).parent if spec.origin else None
        locations = list(spec.submodule_search_locations or ())
        return Path(locations[0], *rest.split(".")[:-1]) if locations else None
    return None


def index_key(entries: list[PluginEntry]) -> str:
    payload = [INDEX_VERSION, [vars(e) for e in entries], _folder_stamps(entries)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def index_path(key: str) -> Path:
    return cache_root() / "plugin-index" / f"{key}.json"


def read_index(key: str, entries: list[PluginEntry], kinds: set[str]) -> dict[str, dict[str, Any]] | None:
    """entry key -> {"hooks": [...], "components": {registry: [names]}}, or None if not kept (or not
    in that shape: a damaged file costs a full load, which writes it again)."""
    with contextlib.suppress(OSError, ValueError):
        index = json.loads(index_path(key).read_text(encoding="utf-8"))
        if isinstance(index, dict) and set(index) == {e.key for e in entries} and all(_well_formed(item, kinds) for item in index.values()):
            return index
    return None


def _well_formed(item: Any, kinds: set[str]) -> bool:
    return (isinstance(item, dict) and isinstance(item.get("hooks"), list)
            and all(isinstance(h, str) for h in item["hooks"]) and isinstance(item.get("components"), dict)
            and set(item["components"]) <= kinds and all(isinstance(names, list) and all(isinstance(n, str) for n in names)
                    for names in item["components"].values()))


def write_index(key: str, index: dict[str, dict[str, Any]]) -> None:
    with contextlib.suppress(OSError):  # a read-only cache costs the next start a full load, nothing else
        write_json_atomic(index_path(key), index)
