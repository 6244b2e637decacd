"""Experiment trackers through accelerate: TensorBoard, MLflow and Weights & Biases.

``peftbench run --track tensorboard --track mlflow`` sends a run's resolved config and hash,
every training step's loss, each epoch's dev scores, and at the end the test scores, trainable
parameters, times and peak memory, plus the run record itself as an artefact. Defaults work
offline and keep everything under the results folder:

- TensorBoard: event files in ``<results>/tensorboard/<run_id>``;
- MLflow: experiment ``peftbench`` in ``<results>/mlruns`` (MLflow's file store) unless
  ``MLFLOW_TRACKING_URI`` names another store (e.g. ``sqlite:///mlflow.db`` or a server);
- W&B: project ``peftbench``, offline (``<results>/wandb``) unless you logged in (``wandb login``
  or ``WANDB_API_KEY``) or set ``WANDB_MODE``; ``wandb sync`` uploads an offline run later.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # name -> package it needs
PROJECT = "peftbench"


def check(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The trackers asked for, each known and installed; else one line saying what to do."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"--track {name!r} is not a tracker", f"choose from {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ConfigError(f"--track {name} needs the {TRACKERS[name]} package, which is not installed",
                              'pip install "peftbench[trackers]"')
    return tuple(dict.fromkeys(names))


def _wandb_logged_in() -> bool:
    netrc = Path.home() / ".netrc"
    return bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())


def make_trackers(names: tuple[str, ...], results_dir: Path, run_id: str) -> list[Any]:
    """accelerate tracker objects writing under ``results_dir`` (see the module's defaults)."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    trackers = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_id, results_dir.resolve() / "tensorboard"))
        elif name == "mlflow":
            if "MLFLOW_TRACKING_URI" not in os.environ:
                import mlflow

                # MLflow calls its file store "maintenance mode" but keeps it: it needs no server or database.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                mlflow.set_tracking_uri((results_dir.resolve() / "mlruns").as_uri())
            trackers.append(MLflowTracker(experiment_name=PROJECT, run_name=run_id))
        elif name == "wandb":
            mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
            trackers.append(WandBTracker(PROJECT, name=run_id, dir=str(results_dir.resolve()), mode=mode))
    return trackers


def flat_config(config: dict[str, Any], config_hash: str) -> dict[str, Any]:
    """The resolved config as flat scalars (what every tracker's hyper-parameter view takes)."""
    flat: dict[str, Any] = {"config_hash": config_hash}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)

    walk(config, "")
    return flat


def final_metrics(record: Any) -> dict[str, float]:
    """What a finished run sends last: test scores, trainable parameters, times, peak memory."""
    metrics = {f"test/{name}": value for name, value in (record.scores.get("test") or {}).items()
               if isinstance(value, (int, float))}
    candidates = {
        "params/trainable": record.params.trainable if record.params else None,
        "time/epoch_mean_seconds": record.time.epoch_mean_seconds,
        "time/train_seconds": record.time.train_seconds,
        "memory/cpu_peak_rss_bytes": record.memory.cpu_peak_rss_bytes if record.memory else None,
        "memory/cuda_max_reserved_bytes": record.memory.cuda_max_reserved_bytes if record.memory else None,
        "memory/nvml_process_peak_bytes": record.memory.nvml_process_peak_bytes if record.memory else None,
        "energy/joules": record.energy.joules if record.energy else None,
    }
    metrics.update({name: float(value) for name, value in candidates.items() if value is not None})
    return metrics


ARTIFACT_NAME = "peftbench-run-record.json"  # not record.json: a copy under --results must not count as a run


def attach_record(accelerator: Any, record_path: Path) -> None:
    """The run record as an artefact of each tracker (TensorBoard: as text)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / ARTIFACT_NAME
        shutil.copyfile(record_path, copy)
        for tracker in accelerator.trackers:
            if tracker.name == "mlflow":
                tracker.log_artifact(str(copy))
            elif tracker.name == "tensorboard":
                tracker.writer.add_text("run_record", "```\n" + copy.read_text(encoding="utf-8") + "\n```")
                tracker.writer.flush()
            elif tracker.name == "wandb":  # what lies in the run's folder is uploaded with the run
                shutil.copyfile(copy, Path(tracker.run.dir) / ARTIFACT_NAME)
