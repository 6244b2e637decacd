"""Rows of instruction data as published: JSONL files, a JSON array (MetaMathQA), or a Hugging Face
``datasets`` folder written by ``save_to_disk``; and the splits a completion task trains on."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

from peftbench.sdk import DataError, Splits, install_hint, is_installed

Row = tuple[str, dict]  # (where: file:line, the row)


def read_file(path: Path) -> list[Row]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line} is not UTF-8 text (byte {exc.start})", "save the file as UTF-8") from None
    if text.lstrip().startswith("["):  # one JSON array (MetaMathQA-395K.json)
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
        return [(f"{path}[{i}]", row) for i, row in enumerate(rows)]
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number} is not JSON ({exc.msg})", "one JSON object per line (JSONL)") from None
    return found


def saved_dataset(root: Path) -> dict[str, list[Row]] | None:
    """The splits of a ``DatasetDict.save_to_disk`` folder, or None when ``root`` is not one."""
    if not (root / "dataset_dict.json").is_file():
        return None
    if not is_installed("datasets"):
        raise DataError(f"{root} is a Hugging Face datasets folder, and reading it needs datasets",
                        install_hint(["datasets"]))
    from datasets import load_from_disk

    saved = load_from_disk(str(root))
    return {split: [(f"{root}/{split}[{i}]", row) for i, row in enumerate(saved[split])] for split in saved}


def split_files(root: Path, names: dict[str, str | None]) -> dict[str, list[Row]]:
    """split -> rows, from a datasets folder (its splits; "validation" is dev) or from the files
    ``names`` gives per split (None: that split has no file)."""
    saved = saved_dataset(root)
    if saved is not None:
        saved.setdefault("dev", saved.pop("validation", None))
        return {split: rows for split, rows in saved.items() if split in ("train", "dev", "test") and rows}
    found = {}
    for split, name in names.items():
        if name is None:
            continue
        path = root / name
        if not path.is_file():
            if split == "dev":
                continue
            raise DataError(f"{path} does not exist", f"put the {split} split there (JSONL) or set {split}_file=")
        found[split] = read_file(path)
    return found


def build_splits(found: dict[str, list[Row]], parse: Callable[[str, dict], dict], config: Any,
                 info: dict[str, Any]) -> Splits:
    """Examples per split (``parse`` turns a row into one); dev carved from train by a seeded
    ``dev_fraction`` when there is no dev file; the limits applied after the split."""
    examples = {split: [parse(where, row) for where, row in rows] for split, rows in found.items()}
    if "dev" not in examples:
        train = list(examples["train"])
        random.Random(config.split_seed).shuffle(train)
        cut = max(1, int(len(train) * config.dev_fraction))
        examples["dev"], examples["train"] = train[:cut], train[cut:]
        info["dev"] = f"{cut} examples carved from train (dev_fraction={config.dev_fraction}, seed {config.split_seed})"
    train = examples["train"][:config.limit_train]
    dev, test = (examples[s][:config.limit_eval] for s in ("dev", "test"))
    if not train or not dev or not test:
        raise DataError(f"a split is empty (train {len(train)}, dev {len(dev)}, test {len(test)})",
                        "give more examples or lower dev_fraction")
    return Splits(train, dev, test, info)


def text_field(row: dict, where: str, *names: str) -> str:
    """The first of ``names`` the row has as a string."""
    if not isinstance(row, dict):
        raise DataError(f"{where} is a {type(row).__name__}, not an object", "one JSON object per example")
    for name in names:
        if isinstance(row.get(name), str):
            return row[name]
    raise DataError(f"{where} has no string field {' or '.join(map(repr, names))}",
                    f"its fields: {', '.join(row) or 'none'}")
