"""Run records: one JSON file per run (versioned), per-epoch JSONL beside it.

Layout: ``<results>/<run_id>/record.json``, ``epochs.jsonl``, ``artifact/``.
``record.json`` is only ever replaced atomically, so a reader never sees a
half-written record, whatever happens to the writing process.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import ResultsError

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
EPOCHS_FILE = "epochs.jsonl"
PREDICTIONS_FILE = "predictions.json"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: a non-finite float is an unknown value (null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(_clean(payload), handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, payload: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(_clean(payload), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def ensure_writable(results_dir: Path) -> None:
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=results_dir, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise ResultsError(
            f"results folder {results_dir} is not writable ({exc.strerror or exc})",
            "pass --results DIR with a folder you can write to",
        ) from None


def new_record() -> dict[str, Any]:
    """Every field exists from the start; unknown values stay null."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": None,
        "pid": None,  # with host: lets a resumed suite tell a live run from a killed one
        "host": None,
        "status": "running",
        "error": None,
        "started_at": None,
        "finished_at": None,
        "config": None,
        "config_hash": None,
        "method": {"name": None, "plugin": None},
        "task": {"name": None, "plugin": None, "main_score": None, "greater_is_better": {}},
        "backbone": {"name": None, "plugin": None, "info": None},
        "seed": None,
        "budget": None,  # --match-params: target, setting, value chosen, achieved, deviation
        "data": None,
        "stages": {},  # stage name -> its cost (params, epoch times, memory, artefact bytes), in order
        "scores": {},
        "best_epoch": None,
        "stopped_because": None,
        "params": None,
        "time": {"epoch_seconds": [], "epoch_mean_seconds": None, "train_seconds": None, "run_seconds": None,
                 "model_load_seconds": None, "process_start_to_first_step_seconds": None},
        "memory": None,
        "artifact": {"path": None, "bytes": None, "tensor_bytes": None, "format": None},
        "inference": None,
        "environment": None,
    }


def iter_records(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    if not results_dir.exists():
        raise ResultsError(f"results folder {results_dir} does not exist", "run `peftbench run ...` first or pass the right folder")
    for path in sorted(results_dir.rglob(RECORD_FILE)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ResultsError(f"{path} is not a readable run record ({exc})", "delete or repair that file") from None
        version = record.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(
                f"{path} has record schema version {version}, this peftbench reads version {SCHEMA_VERSION}",
                "re-run that configuration or use the peftbench version that wrote it",
            )
        yield path, record


def load_frame(results_dir: Path, statuses: tuple[str, ...] = ("success",)):
    """All records as one flat pandas DataFrame (nested keys joined with '.')."""
    import pandas as pd

    rows = [record for _, record in iter_records(results_dir) if record.get("status") in statuses]
    if not rows:
        return pd.DataFrame()
    return pd.json_normalize(rows)
