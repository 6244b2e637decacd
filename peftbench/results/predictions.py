"""A run's test predictions, read back from its folder and put in a baseline's example order, with
the run's own task plugin to score them: what paired tests and floor checks compare."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import significance
from ..errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


class NotPaired(Exception):
    """Why a run cannot be paired with the baseline; the row says it instead of a p value."""


def _task_scorer(components: Any, row: "pd.Series", metric: str):
    """(score lists -> float, predictions -> statistics or None) from the run's task plugin."""
    task, config = task_and_config(components, row)
    return (lambda p, r: float(task.score(p, r, config)[metric]),
            lambda p, r: task.example_statistics(p, r, config, metric))


def task_and_config(components: Any, row: "pd.Series"):
    """The run's task plugin and its task settings, as the run had them."""
    from ..run.spec import config_from_dict

    name = row["config.task"] if "config.task" in row else row["task.name"]
    try:
        task = components.tasks.get(name)
    except Exception:  # noqa: BLE001 - the registry's error names the missing component
        raise ConfigError(f"task {name!r} is not installed here; a paired test scores its predictions "
                          "with the task's own code", "install its plugin, or use --test t") from None
    task_config = {k.split(".", 2)[2]: v for k, v in row.items()
                   if k.startswith("config.task_config.") and not missing(v)}
    return _as_run(task, row), config_from_dict(task.Config, task_config, f"{row.get('record_path')}: task_config")


def _as_run(task: Any, row: "pd.Series") -> Any:
    """The task bound to the run's backbone as the run bound it (``Task.for_backbone``), from what the
    record says of that backbone: classification as generation scores label words, not indices. No
    weights or tokenizer are loaded (scoring needs neither). A record whose backbone was not a text
    generator (or that predates ``generation_format``) is scored by the task as registered."""
    from ..api import LoadedBackbone

    prefix = "backbone.info."
    if missing(row.get(f"{prefix}generation_format")):
        return task
    info = {k[len(prefix):]: v for k, v in row.items()
            if k.startswith(prefix) and "." not in k[len(prefix):] and not missing(v)}
    return task.for_backbone(LoadedBackbone(None, None, (), info))


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_predictions(row: "pd.Series") -> dict[str, Any]:
    path = Path(row["record_path"]) / "predictions.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["test"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise NotPaired(f"run {row.get('run_id')} has no readable test predictions ({path.name}: {reason})") from None
    if data.get("ids") is None:
        raise NotPaired(f"run {row.get('run_id')}'s predictions carry no example ids (recorded by an older "
                        "peftbench, or its task does not predict once per example); rerun it to pair it")
    return data


def scored_run(row: "pd.Series", order: list, metric: str, components: Any) -> significance.ScoredRun:
    """One run's test predictions in the baseline's example order, matched by example id."""
    data = test_predictions(row)
    position = {example_id: i for i, example_id in enumerate(data["ids"])}
    missing = [example_id for example_id in order if example_id not in position]
    if missing or len(position) != len(order):
        shared = len(set(position) & set(order))
        raise NotPaired(f"run {row.get('run_id')} was tested on other examples ({len(position)} vs the baseline's "
                        f"{len(order)}, {shared} shared)")
    index = [position[example_id] for example_id in order]
    predictions = [data["predictions"][i] for i in index]
    references = [data["references"][i] for i in index]
    score_lists, statistics = _task_scorer(components, row, metric)
    return significance.ScoredRun(predictions, references, score_lists, statistics(predictions, references))


def scored_runs(group: "pd.DataFrame", order: list | None, metric: str, components: Any) -> list:
    """Every seed's ScoredRun of a configuration, in ``order`` (default: its first run's)."""
    rows = [row for _, row in group.sort_values("config.train.seed").iterrows()]
    order = order if order is not None else test_predictions(rows[0])["ids"]
    return [scored_run(row, order, metric, components) for row in rows]
