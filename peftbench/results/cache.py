"""What a report costs to compute once, kept for the next report over the same files.

A lab's results folder grows to thousands of records, and each report would read every record
and every run's predictions again and resample them: the floor tests ("did not learn") cost most.
Each configuration's floor test, bootstrap interval and paired test against a baseline are kept
in ``cache_root()/report/`` (``floors.json``, ``tests.json``; JSON: nothing is unpickled; never
in the results folder, which may be read-only or published), keyed by a hash of its runs' record
and predictions files (path, size, modification time: the record holds the task settings, the
scores and their direction), the metric and the test's parameters: a run added, rerun or
rewritten is tested again.

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

from . import significance
from ..records.files import cache_root
from .predictions import NotPaired, scored_runs, test_predictions

VERSION = 1  # raise when what is cached changes meaning
LIMIT = 200_000  # entries per cache file: a few tens of MB


def enabled() -> bool:
    return os.environ.get("PEFTBENCH_REPORT_CACHE", "1") != "0"


def _file(name: str) -> Path:
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


# ------------------------------------------------------------------ what the comparison caches


class LazyScored:
    """Per configuration its ScoredRuns in the baseline's example order, or why they cannot be had
    (a NotPaired, which the row then shows), read on first use: a cached result needs none."""

    def __init__(self, groups: list, base_index: int, metric: str, components: Any, test: str) -> None:
        self.groups, self.base_index, self.metric, self.components, self.test = groups, base_index, metric, components, test
        self.done: dict[int, Any] = {}

    def __getitem__(self, i: int) -> Any:
        if self.test == "t":
            return None
        if "order" not in self.done:
            try:
                self.done["order"] = test_predictions(
                    self.groups[self.base_index].sort_values("config.train.seed").iloc[0])["ids"]
            except NotPaired:
                self.done["order"] = None
        if i not in self.done:
            try:
                self.done[i] = scored_runs(self.groups[i], self.done["order"], self.metric, self.components)
            except NotPaired as exc:
                self.done[i] = exc
        return self.done[i]


class TestCache:
    """Paired tests and intervals already computed on the same predictions files (report_cache);
    with ``--test t`` nothing is read from files, so nothing is cached."""

    def __init__(self, test: str) -> None:
        self.entries = {} if test == "t" else load("tests.json")
        self.fresh: dict[str, Any] = {}
        self.active = test != "t"

    def get(self, what: tuple, groups: list, metric: str, compute):
        key = group_key(groups, what, metric) if self.active else None
        if key is not None and key in self.entries:
            return self.entries[key]
        value = compute()
        if key is not None:
            self.fresh[key] = self.entries[key] = value
        return value

    def save(self) -> None:
        if self.fresh:
            save("tests.json", self.fresh)


def group_key(groups: list, what: tuple, metric: str | None) -> str | None:
    """What a test over these configurations depends on: each run's predictions and record files
    as they are now (the record holds the task settings, scores and data fingerprints), the metric
    and ``what`` (the test and its parameters); None where a file is missing."""
    parts = []
    for group in groups:
        if "record_path" not in group:
            return None
        files = [file_key(Path(folder) / name) for folder in group["record_path"]
                 for name in ("predictions.json", "record.json")]
        if None in files:
            return None
        parts.append(sorted(files))
    return digest(what, metric, significance.SEED, parts)
