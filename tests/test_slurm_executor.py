"""Suites through submitit (the `slurm` executor) in submitit's own local mode, and SIGTERM (what
Slurm sends at a time limit) recorded as cancelled so the next suite run reruns the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from peftbench.records import record as records
from suite_files import livedoor_suite

REPO = Path(__file__).resolve().parents[1]


def two_methods(tmp_path: Path, tiny_bert: Path, seeds: tuple[int, ...] = (1, 2)) -> Path:
    return livedoor_suite(tmp_path, tiny_bert, seeds=seeds, before=f'description = "2 methods x seeds {list(seeds)}"')


def test_a_suite_completes_as_submitit_jobs_with_the_records_the_local_executor_writes(tiny_bert, tmp_path, cli):
    """Two runs per job (runs_per_job=2): the job's runs one after another in its warm worker.
    (One run per job, a fresh process each, is benchmarks/executors.py's smoke.)"""
    path = two_methods(tmp_path, tiny_bert, seeds=(1,))
    results = tmp_path / "results"
    done = cli("suite", "run", str(path), "--results", str(results), "--executor", "slurm", "--set", "cluster=local",
               "--set", "gpus_per_run=0", "--set", "poll_seconds=0.2", "--set", "runs_per_job=2")
    assert done.code == 0, done.stderr
    assert "2 succeeded, 0 failed" in done.stdout
    found = [r for _, r in records.iter_records(results)]
    assert sorted(r["config_hash"] for r in found if r["status"] == "success") == sorted(
        {r["config_hash"] for r in found})
    assert len(found) == 2
    assert len({r["pid"] for r in found}) == 1  # one job: its worker ran both
    assert list((results / "submitit").rglob("*_submitted.pkl"))  # submitit's own job files
    again = cli("suite", "run", str(path), "--results", str(results), "--executor", "slurm", "--set", "cluster=local")
    assert "2 done, 0 to run" in again.stdout


def test_executor_settings_are_checked(tmp_path, tiny_bert, cli):
    path = two_methods(tmp_path, tiny_bert)
    wrong = cli("suite", "run", str(path), "--executor", "slurm", "--set", "partitions=gpu")
    assert wrong.code == 1 and "unknown setting 'partitions'" in wrong.stderr
    local = cli("suite", "run", str(path), "--executor", "local", "--set", "partition=gpu")
    assert local.code == 1 and "unknown setting 'partition'" in local.stderr  # a Slurm key, not the local one's
    assert "executor.warm" in local.stderr
    listed = cli("list")
    assert "array_parallelism=32" in listed.stdout


def test_sigterm_records_the_run_cancelled(tiny_bert, tmp_path):
    results = tmp_path / "results"
    command = [sys.executable, "-m", "peftbench.cli", "run", "--method", "full", "--task", "livedoor-news",
               "--backbone", str(tiny_bert), "--results", str(results),
               "--set", f"data_dir={REPO / 'examples' / 'livedoor-sample'}", "--set", "per_category=10",
               "--set", "max_length=32", "--set", "epochs=50", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        epochs = list(results.rglob(records.EPOCHS_FILE)) if results.exists() else []
        if epochs and epochs[0].read_text().strip():
            break
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    (_, record), = list(records.iter_records(results))
    assert record["status"] == "cancelled" and "SIGTERM" in record["error"]


def test_a_suite_on_a_local_ray_instance_survives_sigkill_and_resumes(tiny_bert, tmp_path):
    """One warm slot (an actor with a warm worker) runs two runs in one process; the suite is
    SIGKILLed then, and resumed with warm=false (a Ray task and a fresh process per run) on two
    CPUs: every run once."""
    path, results = two_methods(tmp_path, tiny_bert), tmp_path / "results"
    command = [sys.executable, "-m", "peftbench.cli", "suite", "run", str(path), "--results", str(results),
               "--executor", "ray", "--set", "poll_seconds=0.2"]
    process = subprocess.Popen([*command, "--set", "workers=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        found = [r for _, r in records.iter_records(results)] if results.exists() else []
        if sum(r["status"] == "success" for r in found) >= 2:
            break
        time.sleep(0.2)
    process.kill()
    process.wait()
    first = [r for _, r in records.iter_records(results) if r["status"] == "success"]
    assert len({r["pid"] for r in first}) == 1 < len(first)  # one warm worker ran them one after another
    time.sleep(2)  # a run under way when the suite died must not finish and be repeated
    resumed = subprocess.run([*command, "--set", "workers=2", "--set", "warm=false"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    found = [r for _, r in records.iter_records(results)]
    success = [r["config_hash"] for r in found if r["status"] == "success"]
    assert len(success) == len(set(success)) == 4
    assert all(r["status"] in ("success", "cancelled") for r in found)


def test_a_stopped_batch_job_cancels_its_run_and_starts_no_other(tiny_bert, tmp_path):
    """SIGTERM to a job of several runs (a time limit, a cancel): the run in progress records
    cancelled, the next run never starts and its log says so."""
    results = tmp_path / "results"
    run = ["run", "--method", "full", "--task", "livedoor-news", "--backbone", str(tiny_bert), "--results",
           str(results), "--set", f"data_dir={REPO / 'examples' / 'livedoor-sample'}", "--set", "per_category=10",
           "--set", "max_length=32", "--set", "epochs=50", "--quiet"]
    batch = [(run, str(tmp_path / "first.log")), ([*run, "--set", "seed=2"], str(tmp_path / "second.log"))]
    code = f"from peftbench_plugins.executors.child import run_batch; run_batch({batch!r})"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        epochs = list(results.rglob(records.EPOCHS_FILE)) if results.exists() else []
        if epochs and epochs[0].read_text().strip():
            break
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    (_, record), = list(records.iter_records(results))
    assert record["status"] == "cancelled"
    assert "not started" in (tmp_path / "second.log").read_text()
