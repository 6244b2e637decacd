"""On-disk caches of parsed corpora and tokenised splits, so a second run starts training at once.

Parsed splits are stored as JSON, keyed on the task's config, its data files'
sizes and modification times, and its plugin's code. Encoded examples are dicts
of numbers / number lists (ints, or floats such as per-token masking
probabilities); each field is stored as one flat array (int64 or float64) plus
offsets in a .npz (no pickles).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import importlib.metadata
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..api import Encoded, Example, Splits
from ..records.files import cache_root

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import numpy as np


def tokenizer_fingerprint(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    digest.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    digest.update(repr(getattr(tokenizer, "model_max_length", None)).encode())
    return digest.hexdigest()[:16]


def examples_fingerprint(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(example, sort_keys=True, ensure_ascii=False, default=str).encode())
    return digest.hexdigest()[:16]


def _dtype(values) -> type:
    import numpy as np

    return np.float64 if any(isinstance(x, float) for x in values) else np.int64


def _save(path: Path, encoded: list[Encoded]) -> None:
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    fields = list(encoded[0]) if encoded else []
    for name in fields:
        values = [example[name] for example in encoded]
        if isinstance(values[0], (list, tuple)):
            lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
            dtype = _dtype(x for v in values for x in v)
            arrays[f"{name}.flat"] = np.fromiter((x for v in values for x in v), dtype=dtype)
            arrays[f"{name}.offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        else:
            arrays[f"{name}.scalar"] = np.asarray(values, dtype=_dtype(values))
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> list[Encoded]:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        columns: dict[str, list] = {}
        for key in data.files:
            name, kind = key.rsplit(".", 1)
            if kind == "scalar":
                columns[name] = data[key].tolist()
            elif kind == "flat":
                flat = data[key].tolist()
                offsets = data[f"{name}.offsets"].tolist()
                columns[name] = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    if not columns:
        return []
    n = len(next(iter(columns.values())))
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]


def encode_cached(
    key: dict[str, Any], examples: Sequence[Example], encode: Callable[[Sequence[Example]], list[Encoded]]
) -> tuple[list[Encoded], bool]:
    """Return (encoded, was_cached). ``key`` must name everything the encoding depends on."""
    full_key = dict(key, examples=examples_fingerprint(examples))
    digest = hashlib.sha256(json.dumps(full_key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_root() / "encoded" / f"{digest}.npz"
    if path.exists():
        try:
            return _load(path), True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # corrupt cache entry: rebuild it
    encoded = encode(examples)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(path, encoded)
    except OSError:
        pass  # a read-only cache must not fail the run; it only costs time
    return encoded, False


# ------------------------------------------------------------------ parsed corpora

def _files_fingerprint(paths: Sequence[str], pattern: str = "*") -> list:
    """(path, size, mtime) of every file under ``paths``: cheap next to parsing the files."""
    entries = []
    for root in map(Path, paths):  # a missing path is left to the task's own `load` error
        files = sorted(p for p in root.rglob(pattern) if p.is_file()) if root.is_dir() else [root]
        files = [path for path in files if path.exists()]
        for path in files:
            stat = path.stat()
            entries.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return entries


def _code_fingerprint(task: Any) -> list | None:
    """The task's whole plugin package (its loader may use helpers from sibling modules); None
    when its code has no file to fingerprint (a class defined in a notebook)."""
    top = sys.modules.get(type(task).__module__.split(".")[0])
    paths = list(getattr(top, "__path__", [])) or [getattr(top, "__file__", None)]
    roots = [path for path in paths if path and Path(path).exists()]
    return _files_fingerprint(roots, "*.py") + [importlib.metadata.version("peftbench")] if roots else None


def _splits_path(task: Any, config: Any, files: Sequence[str]) -> Path | None:
    code = _code_fingerprint(task)
    if code is None:
        return None
    key = {"task": task.name, "config": dataclasses.asdict(config), "files": _files_fingerprint(files), "code": code}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_root() / "parsed" / f"{digest}.json"


def load_splits(task: Any, config: Any) -> Splits:
    """``task.load(config)``, from the parsed-corpus cache when the task names its data files
    (`Task.data_files`) and neither they nor the config nor the plugin's code changed since."""
    files = task.data_files(config)
    path = _splits_path(task, config, files) if files else None
    if path is None:
        return task.load(config)
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return Splits(saved["train"], saved["dev"], saved["test"], saved["info"])
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # corrupt cache entry: parse again
    splits = task.load(config)
    _save_splits(path, splits)
    return splits


def _save_splits(path: Path, splits: Splits) -> None:
    data = {"train": splits.train, "dev": splits.dev, "test": splits.test, "info": splits.info}
    try:
        text = json.dumps(data, ensure_ascii=False)
        if json.loads(text) != data:
            return  # tuples or other non-JSON values would come back changed: never cache those
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        pass  # a read-only cache or unserialisable info must not fail the run; it only costs time
