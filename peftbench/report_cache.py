"""What a report costs to compute once, kept for the next report over the same files.

A lab's results folder grows to thousands of records, and each report would read every record
and every run's predictions again and resample them: the floor tests ("did not learn") cost most.
Each configuration's floor test, bootstrap interval and paired test against a baseline are kept
in ``cache_root()/report/`` (``floors.json``, ``tests.json``) (JSON: nothing is
unpickled; never in the results folder, which may be read-only or published), keyed by a hash of
its runs' predictions files (path, size, modification time), the task settings, the metric, its
direction and the number of resamples: a run added, rerun or rewritten is tested again.

A cache that cannot be read is ignored and one that cannot be written is skipped: a report never
fails because of its cache. ``PEFTBENCH_REPORT_CACHE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

VERSION = 1  # raise when what is cached changes meaning
LIMIT = 200_000  # entries per cache file: a few tens of MB


def enabled() -> bool:
    return os.environ.get("PEFTBENCH_REPORT_CACHE", "1") != "0"


def _file(name: str) -> Path:
    from .datacache import cache_root

    return cache_root() / "report" / name


def load(name: str) -> dict[str, Any]:
    if not enabled():
        return {}
    try:
        data = json.loads(_file(name).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data.get("entries", {}) if isinstance(data, dict) and data.get("version") == VERSION else {}


def save(name: str, fresh: dict[str, Any]) -> None:
    """Adds ``fresh`` to the cache (the oldest entries go beyond ``LIMIT``), through a temporary
    file and a rename, so two reports at once never leave a torn cache."""
    if not enabled():
        return
    entries = {**load(name), **fresh}
    entries = dict(list(entries.items())[-LIMIT:])
    path = _file(name)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps({"version": VERSION, "entries": entries}), encoding="utf-8")
        os.replace(temporary, path)
    except (OSError, TypeError, ValueError):
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def file_key(path: Path) -> str | None:
    """The path with its size and modification time (nanoseconds), or None where it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]
