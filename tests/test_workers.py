"""Warm workers (peftbench.suite.workers): runs one after another in one process give the records the
same runs give alone, a run that kills its worker fails alone, and workers are recycled."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from peftbench.records import record as records
from peftbench.executor import Job
from peftbench.suite.local_executor import LocalConfig, LocalExecutor
from peftbench.suite.workers import WarmWorker

REPO = Path(__file__).resolve().parents[1]


def run_args(backbone: Path, results: Path, method: str, *sets: str) -> list[str]:
    common = [f"data_dir={REPO / 'examples' / 'livedoor-sample'}", "per_category=10", "max_length=24", "epochs=1",
              "inference_repeats=0", "save_artifact=false", *sets]
    return ["run", "--method", method, "--task", "livedoor-news", "--backbone", str(backbone),
            "--results", str(results), *[part for value in common for part in ("--set", value)]]


def only_record(results: Path) -> tuple[Path, dict]:
    (found,) = list(records.iter_records(results))
    return found


def untimed(path: Path) -> list:
    """A JSON or JSON-lines file's values less its timings, which differ between any two runs."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.suffix == ".jsonl" else [json.loads(path.read_text(encoding="utf-8"))]
    return [{k: v for k, v in row.items() if not k.endswith("_seconds")} if isinstance(row, dict) else row
            for row in rows]


def outcome(results: Path) -> dict:
    """What must not depend on what ran before in the process: scores, counts, data, predictions."""
    path, record = only_record(results)
    kept = {key: record[key] for key in ("status", "config_hash", "scores", "params", "data", "best_epoch")}
    files = {p.name: untimed(p) for p in path.parent.iterdir()
             if p.is_file() and p.name != records.RECORD_FILE and p.suffix in {".jsonl", ".json"}}
    return {**kept, "files": files}


def test_a_run_after_another_in_one_worker_equals_it_run_alone(tiny_bert, tmp_path):
    # A is chosen to leave state behind: other method, seed, threads, and a bf16 Accelerator.
    a = run_args(tiny_bert, tmp_path / "a", "lora", "seed=7", "lr=5e-3", "mixed_precision=bf16")
    b = run_args(tiny_bert, tmp_path / "warm", "full", "seed=1", "lr=1e-3")
    worker = WarmWorker()
    try:
        # A job the command line refuses is answered with its exit code; the worker takes the next.
        assert worker.run(["run", "--method", "no-such-method", "--task", "livedoor-news"], tmp_path / "0.log") == 1
        assert "no-such-method" in (tmp_path / "0.log").read_text()
        assert worker.run(a, tmp_path / "a.log") == 0, (tmp_path / "a.log").read_text()
        assert worker.run(b, tmp_path / "b.log") == 0, (tmp_path / "b.log").read_text()
    finally:
        worker.close()
    assert worker.runs == 3 and worker.process.poll() is not None  # closed between runs: ended at once
    alone = [*b[:b.index("--results") + 1], str(tmp_path / "alone"), *b[b.index("--results") + 2:]]
    done = subprocess.run([sys.executable, "-m", "peftbench.cli", *alone], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert only_record(tmp_path / "a")[1]["pid"] == only_record(tmp_path / "warm")[1]["pid"] == worker.process.pid
    warm, cold = outcome(tmp_path / "warm"), outcome(tmp_path / "alone")
    assert warm["files"], "the run saved no predictions to compare"
    assert warm == cold
    marks = only_record(tmp_path / "warm")[1]["time"]["startup_marks"]
    assert 0 < marks["first_step_started"] < 30  # counted from when the worker took the run


def worker_pids() -> list[int]:
    return [child.pid for child in psutil.Process().children()
            if "peftbench.cli.worker" in " ".join(child.cmdline())]


def kill_worker_once_running(results: Path) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        running = [r for _, r in records.iter_records(results)] if results.exists() else []
        if any(r["status"] == "running" for r in running):
            for pid in worker_pids():
                psutil.Process(pid).kill()
            return
        time.sleep(0.05)


def test_a_run_that_kills_its_worker_fails_alone_and_workers_are_reused_then_recycled(tiny_bert, tmp_path):
    names = ["killed", "next", "after", "recycled"]
    jobs = [Job(name, tuple(run_args(tiny_bert, tmp_path / name, "lora", f"seed={seed}")), tmp_path / f"{name}.log")
            for seed, name in enumerate(names, 1)]
    codes: dict[str, int] = {}

    def on_start(job: Job) -> None:
        if job.key == "killed":
            threading.Thread(target=kill_worker_once_running, args=(tmp_path / "killed",), daemon=True).start()

    LocalExecutor(LocalConfig(runs_per_worker=2)).execute(jobs, on_start,
                                                          lambda job, code: codes.update({job.key: code}))
    assert codes == {"killed": -9, "next": 0, "after": 0, "recycled": 0}
    assert "the warm worker running this run died (signal SIGKILL)" in (tmp_path / "killed.log").read_text()
    pids = {name: only_record(tmp_path / name)[1]["pid"] for name in names}
    # A new worker after the crash, kept for the next run, replaced after its 2 runs.
    assert pids["next"] == pids["after"] and len({pids["killed"], pids["next"], pids["recycled"]}) == 3
    assert not worker_pids()  # every worker ended with the suite


def test_a_slots_worker_serves_every_round_of_a_tuned_suite_until_closed(tiny_bert, tmp_path):
    """A tuned suite calls execute() once per round of trials: the worker started for the first
    round takes the next round's run too (no new imports per trial), and close() ends it."""
    executor = LocalExecutor(LocalConfig())
    codes: dict[str, int] = {}
    for seed, name in enumerate(("round-1", "round-2"), 1):
        job = Job(name, tuple(run_args(tiny_bert, tmp_path / name, "lora", f"seed={seed}")), tmp_path / f"{name}.log")
        executor.execute([job], lambda job: None, lambda job, code: codes.update({job.key: code}))
        assert len(worker_pids()) == 1  # kept between rounds
    executor.close()
    assert codes == {"round-1": 0, "round-2": 0}
    assert only_record(tmp_path / "round-1")[1]["pid"] == only_record(tmp_path / "round-2")[1]["pid"]
    assert not worker_pids()


def test_cpu_slots_run_side_by_side_each_on_its_share_of_the_cores(tiny_bert, tmp_path, monkeypatch):
    import datetime as dt
    import os

    import pytest

    from peftbench.errors import ConfigError

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the slots' share, not the test session's setting
    names = ["left", "right"]
    jobs = [Job(name, tuple(run_args(tiny_bert, tmp_path / name, "lora", f"seed={seed}")), tmp_path / f"{name}.log")
            for seed, name in enumerate(names, 1)]
    codes: dict[str, int] = {}
    executor = LocalExecutor(LocalConfig(slots=2))
    executor.execute(jobs, lambda job: None, lambda job, code: codes.update({job.key: code}))
    executor.close()
    assert codes == {"left": 0, "right": 0}
    found = [only_record(tmp_path / name)[1] for name in names]
    assert found[0]["pid"] != found[1]["pid"]  # a worker per slot
    spans = [(dt.datetime.fromisoformat(r["started_at"]), dt.datetime.fromisoformat(r["finished_at"])) for r in found]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # side by side
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert all(f"torch threads {threads})" in r["environment"]["device"] for r in found)
    assert not worker_pids()
    with pytest.raises(ConfigError, match="slots are for runs without --devices"):
        LocalExecutor(LocalConfig(slots=2)).execute(jobs, lambda job: None, lambda job, code: None, devices=["0"])
