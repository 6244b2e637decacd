"""Synthetic run records with per-example predictions, made from a real record (a livedoor-news run):
for report, comparison and HTML tests, and the report-speed benchmark."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from peftbench.records import files, record as records

REPO = Path(__file__).resolve().parents[1]
BASE_RECORD = next((REPO / "tests" / "fixtures" / "records-v1").glob("*/record.json"))


def write_run(folder: Path, number: int, method: str, seed: int, predictions: Sequence[int],
              references: Sequence[int], ids: Sequence[Any] | None = None, train: dict | None = None,
              task_config: dict | None = None, record: dict | None = None, epochs: int = 0) -> Path:
    """One successful run of ``method`` with these test predictions; its scores are computed from
    them. ``train``/``task_config``/``record`` override settings and record fields (dotted keys)."""
    data = records.read_record(BASE_RECORD)
    correct = sum(p == r for p, r in zip(predictions, references))
    accuracy = correct / len(references)
    data.update(run_id=f"run-{number}", finished_at=f"2026-01-01T00:00:{number % 60:02d}", seed=seed,
                config_hash=f"{method}-{seed}-{number}")
    data["method"]["name"] = data["config"]["method"] = method
    data["config"]["train"].update(seed=seed, **(train or {}))
    data["config"]["task_config"].update(task_config or {})
    data["scores"] = {"dev": {"accuracy": accuracy}, "test": {"accuracy": accuracy, "micro_f1": accuracy,
                                                              "macro_f1": accuracy}}
    ids = list(ids) if ids is not None else list(range(len(references)))
    test_set = json.dumps(sorted(zip(map(str, ids), references)))
    data["data"]["fingerprints"] = {"test": hashlib.sha256(test_set.encode()).hexdigest()[:16]}
    for dotted, value in (record or {}).items():
        *parents, leaf = dotted.split(".")
        target = data
        for part in parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[leaf] = value
    run_dir = folder / f"run-{number}"
    files.write_json_atomic(run_dir / records.RECORD_FILE, data)
    split = {"ids": ids, "predictions": list(predictions), "references": list(references)}
    files.write_json_atomic(run_dir / records.PREDICTIONS_FILE, {"dev": split, "test": split})
    if epochs:
        lines = [json.dumps({"stage": "finetune", "epoch": e + 1, "train_loss": 1.0 / (e + 1),
                             "dev_scores": {"accuracy": accuracy * (e + 1) / epochs}}) for e in range(epochs)]
        (run_dir / records.EPOCHS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir


def predictions_with_accuracy(references: Sequence[int], accuracy: float, offset: int = 0,
                              classes: int = 9) -> list[int]:
    """Predictions right on the first ``accuracy`` share of examples (shifted by ``offset``),
    wrong on the rest."""
    n = len(references)
    right = {(offset + i) % n for i in range(round(accuracy * n))}
    return [r if i in right else (r + 1) % classes for i, r in enumerate(references)]
