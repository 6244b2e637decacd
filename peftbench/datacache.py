"""On-disk cache of tokenised splits, so a second run starts training at once.

Encoded examples are dicts of numbers / number lists (ints, or floats such as
per-token masking probabilities); each field is stored as one flat array
(int64 or float64) plus offsets in a .npz (no pickles).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .api import Encoded, Example


def cache_root() -> Path:
    env = os.environ.get("PEFTBENCH_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "peftbench"


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
    return np.float64 if any(isinstance(x, float) for x in values) else np.int64


def _save(path: Path, encoded: list[Encoded]) -> None:
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
