"""Data-parallel runs: two CPU processes (torchrun, gloo) with batches of 4 train and score like one
process with batches of 8, and only the main process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from peftbench.records import record as records

REPO = Path(__file__).resolve().parents[1]


def run_args(backbone: Path, results: Path, batch_size: int) -> list[str]:
    # 20 articles per category: 72 training examples (a multiple of 8, so no process pads its last
    # batch with repeats), 18 dev and 90 test examples in evaluation batches of 4, which leave the
    # second process a padded last batch that gathering must drop.
    return ["run", "--method", "full", "--task", "livedoor-news", "--backbone", str(backbone),
            "--results", str(results), "--set", f"data_dir={REPO / 'examples' / 'livedoor-sample'}",
            "--set", "per_category=20", "--set", "max_length=32", "--set", "epochs=2", "--set", "lr=1e-3",
            "--set", f"batch_size={batch_size}", "--set", "eval_batch_size=4", "--set", "inference_repeats=1",
            "--quiet"]


def outputs(results: Path) -> tuple[dict, dict, dict, list[str]]:
    (path, record), = list(records.iter_records(results))
    predictions = json.loads((path.parent / records.PREDICTIONS_FILE).read_text())
    weights = load_file(str(next((path.parent / "artifact").glob("*.safetensors"))))
    epochs = (path.parent / records.EPOCHS_FILE).read_text().splitlines()
    return record, predictions, weights, epochs


def test_two_processes_score_like_one(cli, tiny_bert_without_dropout, tmp_path):
    done = cli(*run_args(tiny_bert_without_dropout, tmp_path / "one", batch_size=8))
    assert done.code == 0, done.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "peftbench",
                          *run_args(tiny_bert_without_dropout, tmp_path / "two", batch_size=4), "--processes", "2"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run ") == 1  # one summary line: the main process's

    one_record, one_predictions, one_weights, one_epochs = outputs(tmp_path / "one")
    two_record, two_predictions, two_weights, two_epochs = outputs(tmp_path / "two")  # one run folder
    assert (one_record["processes"], two_record["processes"]) == (1, 2)
    # Memory: each process's peaks, and the run's as their maximum; epoch times the slowest process's.
    per_process = [peaks["cpu_peak_rss_bytes"] for peaks in two_record["process_memory"]]
    assert len(per_process) == 2 and all(per_process) and one_record["process_memory"] is None
    assert two_record["memory"]["cpu_peak_rss_bytes"] == max(per_process)
    assert len(two_record["time"]["epoch_seconds"]) == 2
    assert one_record["effective_batch_size"] == two_record["effective_batch_size"] == 8
    assert len(one_epochs) == len(two_epochs) == 2  # written once, by the main process
    assert two_record["data"]["sizes"] == {"train": 72, "dev": 18, "test": 90}
    # Gathered in dataset order, padding repeats dropped: every prediction, matched by id.
    for split in ("dev", "test"):
        assert two_predictions[split] == one_predictions[split]
        assert two_record["scores"][split] == one_record["scores"][split]
    for name in one_weights:
        torch.testing.assert_close(two_weights[name], one_weights[name], rtol=1e-4, atol=1e-5, msg=name)
    assert abs(two_record["stages"]["finetune"]["best_dev"]["dev_loss"]
               - one_record["stages"]["finetune"]["best_dev"]["dev_loss"]) < 1e-4


def test_processes_inside_a_launch_of_another_size_is_refused(cli, tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    done = cli(*run_args(tiny_bert, tmp_path, batch_size=4), "--processes", "2")
    assert done.code == 1
    assert "--processes 2 inside a launch of 3 processes" in done.stderr
