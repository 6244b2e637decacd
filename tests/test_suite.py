"""Suites: expansion, validation, skip/resume (SIGKILL), and the statistics in reports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from peftbench.components import plugins
from peftbench.records import record as records
from peftbench.suite import plan as suite
from peftbench.errors import ConfigError
from suite_files import livedoor_suite

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _suite_param(path: Path):
    """A suite that names an AdapterHub method expands only where the extra is installed."""
    import re

    comps = plugins.load()
    names = [n for n in re.findall(r'"([\w+.-]+)"', path.read_text(encoding="utf-8")) if n in comps.methods]
    adapterhub = any("adapters" in comps.methods.get(n).libraries for n in names)
    return pytest.param(path, marks=[pytest.mark.adapters] if adapterhub else [], id=path.name)


@pytest.mark.parametrize("path", [_suite_param(p) for p in sorted((REPO / "benchmarks").glob("*.toml"))])
def test_every_benchmark_suite_expands(path):
    """No suite in benchmarks/ rots: each expands (names, settings, grids), and a tuned one plans its
    studies with a search space per method."""
    from peftbench.suite.tuning import plan_studies

    _, runs = suite.expand(path, plugins.load())
    assert runs and len({r.hash for r in runs}) == len(runs)
    tune = suite.tune_settings(path)
    if tune is not None:
        studies = plan_studies(runs, tune)
        assert studies
        assert all("lr" in study.space for study in studies)


def test_s2_suite_expands_to_8_7_8_runs():
    description, runs = suite.expand(REPO / "benchmarks" / "s2-livedoor-lora-rank.toml", plugins.load())
    blocks = [r.block for r in runs]
    assert len(runs) == 23
    assert blocks.count("table-3.2 lora") + blocks.count("table-3.2 full") == 8
    assert blocks.count("extra-1 lora lr 5e-5") == 7
    assert blocks.count("extra-2 lora early stopping") + blocks.count("extra-2 full early stopping") == 8
    lora = next(r for r in runs if r.point == ("r=64", "seed=42"))
    cfg = lora.resolved.spec
    assert cfg.method_config.alpha == 64 and cfg.method_config.target == ("query", "value")
    assert len({r.hash for r in runs}) == 23


def test_derived_values_and_seeds(tmp_path):
    path = write(tmp_path, """
        [defaults]
        task = "livedoor-news"
        seeds = [1, 2]
        [[runs]]
        method = "lora"
        [runs.grid]
        r = [2, 4]
        [runs.derive]
        alpha = "r"
    """)
    _, runs = suite.expand(path, plugins.load())
    assert [(r.resolved.spec.method_config.r, r.resolved.spec.method_config.alpha,
             r.resolved.spec.train.seed) for r in runs] == [(2, 2, 1), (2, 2, 2), (4, 4, 1), (4, 4, 2)]


@pytest.mark.parametrize(("text", "message"), [
    ("[[runs]\nmethod = 'lora'\n", "line 1"),  # malformed TOML: line and column
    ("[[runs]]\nmethod = 'lora'\ntask = 'livedoor-news'\n[runs.gird]\nr = [2]\n", "runs[0].gird: unknown key"),
    ("[[runs]]\nmethod = 'lora'\ntask = 'livedoor-news'\n[runs.grid]\nr = []\n", "zero runs"),
    ("[[runs]]\nmethod = 'lora'\ntask = 'livedoor-news'\n[runs.set]\nr = 'eight'\n", "r='eight' is not an int"),
    ("[[runs]]\nmethod = 'lora'\n", "no task"),
    ("[[runs]]\nmethod = 'lora'\ntask = 'livedoor-news'\n[[runs]]\nmethod = 'lora'\ntask = 'livedoor-news'\n",
     "repeats a run"),
    ("description = 'x'\n", "no [[runs]]"),
])
def test_bad_suites_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        suite.expand(write(tmp_path, text), plugins.load())


def test_dry_run_lists_plan(cli):
    result = cli("suite", "run", str(REPO / "benchmarks" / "s2-livedoor-lora-rank.toml"), "--dry-run")
    assert result.code == 0, result.stderr
    assert "23 runs: 0 done, 23 to run" in result.stdout


def suite_file(tmp_path: Path, tiny_bert: Path) -> Path:
    return livedoor_suite(tmp_path, tiny_bert, seeds=[1, 2, 3], before='description = "2 methods x 3 seeds"',
                          runs='[[runs]]\nmethod = "full"\nset = { lr = 1e-3 }\n'
                               '[[runs]]\nmethod = "lora"\nset = { lr = 5e-3 }')


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_mid_run(process: subprocess.Popen, results: Path) -> list[int]:
    """SIGKILL the suite once its first run finished and a later one is under way; the pids of the runs
    it killed. The suite and its workers are frozen (SIGSTOP) while their records are read: a fast run
    cannot finish between being seen running and the kill (CI once saw it finish there)."""
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        os.killpg(process.pid, signal.SIGSTOP)
        done = [r for _, r in records.iter_records(results)] if results.exists() else []
        if any(r["status"] == "success" for r in done) and any(r["status"] == "running" for r in done):
            os.kill(process.pid, signal.SIGKILL)  # the frozen runs die with it (PR_SET_PDEATHSIG)
            process.wait()
            with contextlib.suppress(ProcessLookupError):  # nothing of the group may be left to wake
                os.killpg(process.pid, signal.SIGCONT)
            return [r["pid"] for r in done if r["status"] == "running"]
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.2)
    process.kill()
    pytest.fail("the suite ended, or did not get going in time, before a run could be killed")


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_bert, tmp_path_factory):
    """A 6-run suite SIGKILLed once its first run finished and a later one is under way, then resumed.
    (Its records also feed the report tests below: one suite run serves both.)"""
    tmp_path = tmp_path_factory.mktemp("killed-suite")
    path, results = suite_file(tmp_path, tiny_bert), tmp_path / "results"
    command = [sys.executable, "-m", "peftbench.cli", "suite", "run", str(path), "--results", str(results)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    running = kill_mid_run(process, results)
    for pid in running:  # the run dies with its suite (PR_SET_PDEATHSIG); a busy machine may take a moment
        deadline = time.time() + 30
        while time.time() < deadline and gone(pid) is False:
            time.sleep(0.1)
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    return command, tmp_path, results


def test_suite_survives_sigkill_and_resumes_to_one_record_per_run(killed_and_resumed):
    command, _, results = killed_and_resumed
    found = [r for _, r in records.iter_records(results)]
    success = [r["config_hash"] for r in found if r["status"] == "success"]
    assert len(success) == len(set(success)) == 6
    stale = [r for r in found if r["status"] != "success"]
    assert stale and all(r["status"] == "cancelled" and "ended without finishing" in r["error"] for r in stale)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "6 done, 0 to run" in again.stdout
    partial = [p for p in results.rglob(".*") if p.is_file() and p.name != ".suite.lock"]
    assert not partial, partial  # no half-written temporary file survives the kill


def test_report_statistics_on_seeds(killed_and_resumed, cli):
    _, tmp_path, results = killed_and_resumed
    report = cli("report", str(results), "--baseline", "method.name=full", "--plot", str(tmp_path / "plots"))
    assert report.code == 0, report.stderr
    assert "±" in report.stdout and "seeds" in report.stdout
    assert "p (bootstrap)" in report.stdout and "paired bootstrap over seeds x examples" in report.stdout
    assert "Welch t-test" in report.stdout
    seeds_only = cli("report", str(results), "--baseline", "method.name=full", "--test", "t")
    assert "p (t)" in seeds_only.stdout and "paired t-test over" in seeds_only.stdout, seeds_only.stdout
    stats = cli("report", str(results), "--stats", "--format", "json")
    rows = json.loads(stats.stdout)
    accuracy = [r for r in rows if r["metric"] == "accuracy"]
    assert len(accuracy) == 2 and all(r["n"] == 3 for r in accuracy)
    assert all(r["t CI95 low"] <= r["mean"] <= r["t CI95 high"] for r in accuracy)
    assert all(r["bootstrap CI95 low"] <= r["bootstrap CI95 high"] for r in accuracy)
    for name in ("pareto.png", "pareto.svg"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    grouped = cli("report", str(results), "--groups", "--html", str(tmp_path / "groups.html"))
    assert grouped.code == 0, grouped.stderr
    assert "| group" in grouped.stdout and "minimum detectable effect: " in grouped.stdout
    assert "significance groups" in (tmp_path / "groups.html").read_text(encoding="utf-8")
    both = cli("report", str(results), "--groups", "--stats")  # --stats has no column for the letters
    assert both.code == 1 and "--groups adds a column to the comparison table" in both.stderr
    swept = cli("report", str(results), "--plot", str(tmp_path / "plots"), "--sweep", "lr")
    assert swept.code == 0, swept.stderr
    assert (tmp_path / "plots" / "sweep-lr.png").exists()
    missing = cli("report", str(results), "--plot", str(tmp_path / "plots"), "--sweep", "nope")
    assert missing.code == 1 and "no record has that setting" in missing.stderr


def test_a_killed_or_reused_pid_does_not_keep_a_run_alive():
    """A running record whose process is a zombie (killed, not reaped yet), or whose pid now
    belongs to a process started after the run, is stale: the suite runs that config again."""
    import datetime as dt
    import platform

    from peftbench.records.files import process_alive as _alive

    process = subprocess.Popen(["sleep", "30"])
    started = dt.datetime.now(dt.timezone.utc).isoformat()
    try:
        assert _alive(process.pid, platform.node(), started)
        assert not _alive(process.pid, platform.node(), "2020-01-01T00:00:00+00:00")  # pid reused since
        process.kill()
        deadline = time.time() + 10
        while time.time() < deadline and not gone(process.pid):
            time.sleep(0.05)
        assert not _alive(process.pid, platform.node(), started)  # a zombie until waited for
    finally:
        process.kill()
        process.wait()
    assert not _alive(process.pid, platform.node(), started)


def test_a_stale_run_loses_the_files_its_killed_process_was_writing(tmp_path):
    """A process killed between writing a file and renaming it into place leaves `.<name>.<random>`
    behind: the suite that marks its record cancelled removes them (a dry run touches nothing)."""
    import platform

    from peftbench.records.files import write_json_atomic
    from peftbench.records.record import RunRecord
    from peftbench.suite.plan import run_states

    run = tmp_path / "results" / "20260101-000000-full-x-abc"
    write_json_atomic(run / records.RECORD_FILE, RunRecord(status="running", config_hash="abc", pid=2 ** 22 + 7,
                                                           host=platform.node(), started_at="2020-01-01T00:00:00+00:00"))
    partial = run / ".predictions.json.k3x_9q"
    partial.write_text('{"test": ', encoding="utf-8")
    assert run_states(tmp_path / "results", repair=False) == {"abc": "cancelled"} and partial.exists()
    assert run_states(tmp_path / "results") == {"abc": "cancelled"}
    assert not partial.exists() and (run / records.RECORD_FILE).exists()


def test_a_run_that_died_is_reported_as_died_repaired_by_the_next_run_and_one_config_runs_once(cli, tmp_path,
                                                                                              sample_dir):
    """A record left running by a process that ended reads as died (report --all); the next run of
    that configuration rewrites it as cancelled; while a configuration runs, its claim refuses a second
    start in one line, and a claim whose process ended is taken over."""
    import json
    import subprocess
    import sys

    from peftbench.records import files

    results = tmp_path / "results"
    args = ["run", "--method", "lora", "--task", "livedoor-news", "--backbone", "minilm-l6", "--results",
            str(results), "--set", f"data_dir={sample_dir}", "--set", "per_category=10", "--set", "epochs=1",
            "--set", "max_length=32", "--set", "inference_repeats=0", "--set", "save_artifact=false"]
    assert cli(*args).code == 0
    record_path = next(results.glob("*/record.json"))
    record = json.loads(record_path.read_text(encoding="utf-8"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record.update(status="running", pid=int(dead.stdout), run_id="ghost")
    ghost = results / "ghost"
    ghost.mkdir()
    (ghost / "record.json").write_text(json.dumps(record), encoding="utf-8")
    report = cli("report", str(results), "--all", "--columns", "run_id,status")
    assert report.code == 0 and "died" in report.stdout, report.stderr
    config_hash = record["config_hash"]
    with files.claimed(results, config_hash, "this configuration and seed"):  # as a run in flight holds it
        second = cli(*args, "--force")
    assert second.code == 1 and "this configuration and seed is running now in" in second.stderr
    assert json.loads((ghost / "record.json").read_text(encoding="utf-8"))["status"] == "cancelled"  # repaired
    (results / files.CLAIMS / config_hash).write_text(json.dumps({"pid": int(dead.stdout), "host": record["host"]}))
    assert cli(*args, "--force").code == 0  # the dead process's claim is taken over
    assert not list((results / files.CLAIMS).iterdir())  # and let go when the run ends
