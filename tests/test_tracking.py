"""Experiment trackers: a run with --track tensorboard --track mlflow leaves event files and an
MLflow run that the real libraries read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.records import record as records

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tracked_run(tiny_bert, tmp_path_factory):
    import sys

    from peftbench.cli.entry import main

    results = tmp_path_factory.mktemp("tracked")
    sys.argv = ["peftbench", "run", "--method", "lora", "--task", "livedoor-news", "--backbone", str(tiny_bert),
                "--results", str(results), "--set", f"data_dir={REPO / 'examples' / 'livedoor-sample'}",
                "--set", "per_category=10", "--set", "max_length=32", "--set", "epochs=2", "--set", "batch_size=8",
                "--set", "inference_repeats=0", "--quiet", "--track", "tensorboard", "--track", "mlflow"]
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    (path, record), = list(records.iter_records(results))
    return results, path, record


def test_tensorboard_events_hold_losses_scores_and_the_record(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results, _, record = tracked_run
    events = EventAccumulator(str(results / "tensorboard" / record["run_id"]), size_guidance={"scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"finetune/train_loss", "finetune/dev_accuracy", "test/accuracy", "params/trainable"} <= scalars
    losses = events.Scalars("finetune/train_loss")
    assert [e.step for e in losses] == list(range(1, 11))  # 36 examples in batches of 8: 5 steps, 2 epochs
    assert [e.step for e in events.Scalars("finetune/dev_accuracy")] == [1, 2]
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(record["scores"]["test"]["accuracy"])
    assert "run_record/text_summary" in events.Tags()["tensors"]


def test_mlflow_run_has_config_metrics_and_the_record_artifact(tracked_run):
    from mlflow.tracking import MlflowClient

    results, path, record = tracked_run
    client = MlflowClient((results / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "peftbench"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == record["run_id"]
    assert run.data.params["config_hash"] == record["config_hash"]
    assert run.data.params["method_config.r"] == str(record["config"]["method_config"]["r"])
    assert run.data.metrics["test/accuracy"] == pytest.approx(record["scores"]["test"]["accuracy"])
    assert run.data.metrics["params/trainable"] == record["params"]["trainable"]
    history = client.get_metric_history(run.info.run_id, "finetune/train_loss")
    assert len(history) == 10 and all(h.value > 0 for h in history)
    (artifact,) = client.list_artifacts(run.info.run_id)
    assert artifact.path == "peftbench-run-record.json"
    saved = Path(client.download_artifacts(run.info.run_id, artifact.path, str(results / "download")))
    assert json.loads(saved.read_text())["run_id"] == record["run_id"]


def test_an_unknown_or_missing_tracker_is_one_line(cli, tmp_path, monkeypatch):
    import importlib.util

    unknown = cli("run", "--method", "lora", "--task", "livedoor-news", "--track", "nope", "--results", str(tmp_path))
    assert unknown.code == 1 and "'nope' is not a tracker" in unknown.stderr
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    missing = cli("run", "--method", "lora", "--task", "livedoor-news", "--track", "wandb", "--results", str(tmp_path))
    assert missing.code == 1 and 'pip install "peftbench[trackers]"' in missing.stderr
    assert not list(tmp_path.iterdir())  # refused before any run folder
