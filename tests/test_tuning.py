"""Tuning with an equal budget, chosen on dev: a suite's [tune] table through Optuna."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.components import plugins
from peftbench.records import record as records
from peftbench.suite import plan as suite
from peftbench.errors import ConfigError
from peftbench.suite.tuning import chosen_trial, grid, plan_studies, read_tune
from suite_files import livedoor_suite



def tuned_suite(tmp_path: Path, tiny_bert: Path, tune: str) -> Path:
    return livedoor_suite(tmp_path / "tuned.toml", tiny_bert, settings={"max_length": 24, "epochs": 2},
                          before=f'description = "2 methods, 2 trials each, then 2 seeds"\n[tune]\n{tune}')


def test_a_tuned_suite_leaves_its_studies_and_finals(tmp_path, tiny_bert, cli):
    import optuna

    path = tuned_suite(tmp_path, tiny_bert, 'trials = 2\nsampler = "random"')  # median prunes none of 2
    results = tmp_path / "results"
    result = cli("suite", "run", str(path), "--results", str(results), "--devices", "a,b")
    assert result.code == 0, result.stderr + result.stdout
    storage = f"sqlite:///{results / 'tuning.db'}"
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert len(names) == 2 and names[0].startswith("full@") and names[1].startswith("lora@")
    chosen = {}
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 2
        low, high = (1e-5, 2e-4) if name.startswith("full") else (5e-5, 5e-3)  # the families' ranges
        assert all(low <= t.params["lr"] <= high for t in complete)
        chosen[name.split("@")[0]] = chosen_trial(complete, maximize=True)[0].params["lr"]
    found = [record for _, record in records.iter_records(results)]
    trials = [r for r in found if r["tuning"]["role"] == "trial"]
    final = [r for r in found if r["tuning"]["role"] == "final"]
    assert len(trials) == 4 and len(final) == 4
    assert all("test" not in r["scores"] and "dev" in r["scores"] for r in trials)  # selection reads dev only
    assert all("storage" not in r["tuning"] for r in found)
    for record in final:
        assert record["tuning"]["selected_on"] == "dev" and record["tuning"]["trials_complete"] == 2
        assert record["config"]["method_config"]["lr"] == chosen[record["method"]["name"]]
        assert "test" in record["scores"] and record["floors"]["test"]["majority"]["accuracy"] > 0
    assert {r["seed"] for r in final} == {1, 2}

    again = cli("suite", "run", str(path), "--results", str(results), "--devices", "a,b")  # nothing left to do
    assert again.code == 0, again.stderr
    assert "finals: 4 runs, 4 done, 0 to run" in again.stdout
    assert len(list(records.iter_records(results))) == 8

    report = cli("report", str(results))
    assert report.code == 0, report.stderr
    assert "4 tuning trial record(s) set aside" in report.stderr
    assert "tuning: full" in report.stdout and "2 trials (0 pruned)" in report.stdout


def test_pruning_stops_trials_behind_the_median(tmp_path, tiny_bert, cli):
    import optuna

    path = tuned_suite(tmp_path, tiny_bert, 'trials = 4\nparallel = 2\npruner = "median"\nsampler = "grid"')
    path.write_text(path.read_text().replace("epochs = 2", "epochs = 3").replace(
        '[[runs]]\nmethod = "full"\n', ""), encoding="utf-8")
    path.write_text(path.read_text().replace("seeds = [1, 2]", "seeds = [1]"), encoding="utf-8")
    results = tmp_path / "results"
    result = cli("suite", "run", str(path), "--results", str(results), "--devices", "a,b")
    assert result.code == 0, result.stderr + result.stdout
    study = optuna.load_study(study_name=optuna.get_all_study_summaries(f"sqlite:///{results / 'tuning.db'}")[0]
                              .study_name, storage=f"sqlite:///{results / 'tuning.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 4 and all(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                                    for s in states)
    lrs = sorted(t.params["lr"] for t in study.trials)
    assert lrs == sorted(grid(plan_studies(suite.expand(path, plugins.load())[1],
                                           read_tune({"trials": 4}))[0].space, 4)["lr"])  # the 4 grid points
    for trial in study.trials:  # every trial reported its dev score per epoch it trained
        assert trial.intermediate_values and max(trial.intermediate_values) <= 3
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert len(trial.intermediate_values) < 3


@pytest.mark.parametrize(("table", "message"), [
    ({}, "trials must be a positive integer"),
    ({"trials": 2, "sampler": "bayes"}, "sampler = 'bayes' is not one of tpe, random, grid"),
    ({"trials": 2, "budget": 3}, "tune.budget: unknown key"),
    ({"trials": 2, "space": {"lora": {"lr": "big"}}}, "must be a list of values or a table"),
    ({"trials": 2, "space": {"lora": {"lr": {"low": 1e-2, "high": 1e-4}}}}, "low <= high"),
    ({"trials": 2, "space": {"lora": {"lr": {"low": 1e-4, "high": 1e-2, "kind": "normal"}}}}, "kind 'normal'"),
])
def test_bad_tune_tables_are_one_clear_error(table, message):
    with pytest.raises(ConfigError, match=message):
        read_tune(table)


def test_a_space_names_only_settings_the_method_has(tmp_path, tiny_bert):
    path = tuned_suite(tmp_path, tiny_bert, "trials = 2\n[tune.space.lora]\nrank = [2, 4]")
    with pytest.raises(ConfigError, match=r"lora has no setting 'rank'"):
        plan_studies(suite.expand(path, plugins.load())[1], suite.tune_settings(path))


def test_a_space_for_a_method_the_suite_does_not_run_is_refused(tmp_path, tiny_bert):
    path = tuned_suite(tmp_path, tiny_bert, "trials = 2\n[tune.space.lroa]\nlr = {low = 1e-4, high = 1e-2}")
    with pytest.raises(ConfigError, match=r"\[tune.space.lroa\]: the suite runs no method 'lroa'"):
        plan_studies(suite.expand(path, plugins.load())[1], suite.tune_settings(path))


def test_an_outside_method_gets_the_learning_rate_space_and_overrides_add_to_it():
    components = plugins.load()
    lora = components.resolve_method("lora")
    space = lora.search_space(lora.default_config())
    assert set(space) == {"lr"} and space["lr"].kind == "log-uniform"
    from peftbench.sdk import Method

    class Outside(Method):  # no lr_range: a decade either side of its default
        name = "outside"

        def prepare(self, loaded, config, stage, previous=None): ...

        def artifact_tensors(self, model): ...

        def save(self, model, directory): ...

    from dataclasses import make_dataclass

    config = make_dataclass("C", [("lr", float, 1e-3)], frozen=True)()
    assert Outside().search_space(config)["lr"].describe() == {"kind": "log-uniform", "low": 1e-4, "high": 1e-2}
    assert grid({"lr": Outside().search_space(config)["lr"]}, 3)["lr"] == (1e-4, 1e-3, 1e-2)


def test_the_help_names_the_tune_table(cli, monkeypatch):
    """Rich reads '[tune]' as markup and drops it unless escaped."""
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("suite", "run", "--help")
    assert result.code == 0 and "With a [tune] table" in result.stdout and "with [tune]: the Optuna" in result.stdout


def test_a_resumed_study_spends_its_budget_on_settings_not_tried_yet(tmp_path, tiny_bert, cli):
    """A study resumed by a new suite process starts its sampler again from the seed: the first draws
    repeat the settings already trained. They are drawn again, so every counted trial trained
    settings of its own (a suite stopped mid-trial resumes the same way)."""
    import optuna

    results = tmp_path / "results"
    first = tuned_suite(tmp_path, tiny_bert, 'trials = 2\nsampler = "random"')
    assert cli("suite", "run", str(first), "--results", str(results)).code == 0
    more = first.read_text(encoding="utf-8").replace("trials = 2", "trials = 3")
    first.write_text(more, encoding="utf-8")
    result = cli("suite", "run", str(first), "--results", str(results))
    assert result.code == 0, result.stderr + result.stdout
    storage = f"sqlite:///{results / 'tuning.db'}"
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 3 and len({t.params["lr"] for t in complete}) == 3, summary.study_name
        repeats = [t for t in study.trials if "repeats_trial" in t.user_attrs]
        assert repeats and all(t.state == optuna.trial.TrialState.FAIL for t in repeats)
    trials = [r for _, r in records.iter_records(results) if r["tuning"]["role"] == "trial"]
    assert len({r["config_hash"] for r in trials}) == 6  # each counted trial trained once, on its own settings


def test_an_unknown_metric_is_refused_at_the_plan_and_a_failing_study_stops_by_itself(tmp_path, tiny_bert, cli):
    unknown = tuned_suite(tmp_path, tiny_bert, 'trials = 2\nmetric = "nosuchscore"')
    plan = cli("suite", "run", str(unknown), "--results", str(tmp_path / "a"), "--dry-run")
    assert plan.code == 1 and len(plan.stderr.strip().splitlines()) == 1
    assert "[tune] metric 'nosuchscore' is not a score task livedoor-news reports" in plan.stderr
    failing = tuned_suite(tmp_path, tiny_bert, 'trials = 3\nsampler = "random"\nmax_failures = 2')
    failing.write_text(failing.read_text(encoding="utf-8").replace('[[runs]]\nmethod = "full"\n', "")
                       .replace('method = "lora"', 'method = "lora"\nset = { target = "nosuchmodule" }'),
                       encoding="utf-8")
    result = cli("suite", "run", str(failing), "--results", str(tmp_path / "b"))
    assert result.code == 1
    assert "2 trials failed (max_failures = 2) before 3 completed, so it stopped" in result.stderr
    assert len(list(records.iter_records(tmp_path / "b"))) == 2  # two failed trials, no finals


def test_a_storage_password_is_never_printed_or_written(tmp_path, tiny_bert, cli, monkeypatch):
    from peftbench.run.pruning import STORAGE_ENV

    monkeypatch.setenv(STORAGE_ENV, "")  # the suite sets it in this (test) process: restored afterwards
    secret = "plantedsecret"
    path = tuned_suite(tmp_path, tiny_bert, 'trials = 2\nsampler = "random"')
    url = f"postgresql://user:{secret}@127.0.0.1:9/optuna"
    results = tmp_path / "results"
    plan = cli("suite", "run", str(path), "--results", str(results), "--storage", url, "--dry-run")
    assert plan.code == 0 and "storage postgresql://user:***@127.0.0.1:9/optuna" in plan.stdout
    run = cli("suite", "run", str(path), "--results", str(results), "--storage", url)
    assert run.code == 1 and "cannot open the tuning storage 'postgresql://user:***@" in run.stderr
    for shown in (plan, run):
        assert secret not in shown.stdout + shown.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_trial_specs_hold_the_storage_masked_and_trials_read_it_from_the_environment(monkeypatch):
    from peftbench.run.pruning import STORAGE_ENV, masked, trial_storage
    from peftbench.suite.tuning import share_storage

    monkeypatch.setenv(STORAGE_ENV, "")
    url = "postgresql://user:plantedsecret@db.example/optuna?sslmode=require"
    written = share_storage(url)
    assert written == "postgresql://user:***@db.example/optuna?sslmode=require" and trial_storage(written) == url
    assert masked("mysql://u:p@h/db?password=x") == "mysql://u:***@h/db?password=***"
    assert trial_storage("sqlite:///results/tuning.db") == "sqlite:///results/tuning.db"
    monkeypatch.delenv(STORAGE_ENV)
    with pytest.raises(ConfigError, match="needs its password"):
        trial_storage(written)


@pytest.mark.parametrize("space, message", [
    ('r = ["four", "eight"]', r"\[tune.space.lora\].r: 'four' does not fit the setting"),
    ("r = {low = 1.5, high = 8.0}", r"\[tune.space.lora\].r: a log-uniform space draws floats for an int setting"),
    ('lr = ["fast"]', r"\[tune.space.lora\].lr: 'fast' does not fit the setting"),
])
def test_a_space_of_the_wrong_type_is_refused_at_the_plan(tmp_path, tiny_bert, cli, space, message):
    path = tuned_suite(tmp_path, tiny_bert, f"trials = 2\n[tune.space.lora]\n{space}")
    with pytest.raises(ConfigError, match=message):
        plan_studies(suite.expand(path, plugins.load())[1], suite.tune_settings(path))
    plan = cli("suite", "run", str(path), "--results", str(tmp_path / "r"), "--dry-run")
    assert plan.code == 1 and len(plan.stderr.strip().splitlines()) == 1, plan.stderr


def test_tuned_values_are_parsed_as_set_parses_them(tmp_path, tiny_bert):
    from peftbench.suite.tuning import with_settings

    path = tuned_suite(tmp_path, tiny_bert, "trials = 2")
    lora = next(run.resolved.spec for run in suite.expand(path, plugins.load())[1] if run.resolved.spec.method == "lora")
    tuned = with_settings(lora, {"lr": 1, "r": 4})
    assert tuned.method_config.lr == 1.0 and isinstance(tuned.method_config.lr, float)
    with pytest.raises(ConfigError, match="tuned settings"):
        with_settings(lora, {"r": 2.5})


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGINT"])
def test_a_suite_stopped_mid_trial_trains_each_setting_once_when_resumed(tmp_path, tiny_bert, cli, stop):
    """kill -9 (or Ctrl-C) while the third trial trains, after two complete: the rerun ends with
    every study having trained ``trials`` distinct settings, each counted trial on a record of its own."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna

    path = tuned_suite(tmp_path, tiny_bert, 'trials = 3\nsampler = "random"')
    path.write_text(path.read_text(encoding="utf-8").replace('[[runs]]\nmethod = "full"\n', "")
                    .replace("seeds = [1, 2]", "seeds = [1]").replace("epochs = 2", "epochs = 4"), encoding="utf-8")
    results = tmp_path / "results"
    process = subprocess.Popen([sys.executable, "-m", "peftbench.cli", "suite", "run", str(path), "--results",
                                str(results)], start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if not results.exists():
            time.sleep(0.2)
            continue
        states = [r.get("status") for _, r in records.iter_records(results) if r.get("tuning", {}).get("role") == "trial"]
        if states.count("success") == 2 and "running" in states:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the suite ended before its third trial could be stopped"
    os.killpg(process.pid, getattr(signal, stop))
    process.wait(timeout=120)
    result = cli("suite", "run", str(path), "--results", str(results))
    assert result.code == 0, result.stderr + result.stdout
    storage = f"sqlite:///{results / 'tuning.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and len({t.params["lr"] for t in complete}) == 3
    trials = [r for _, r in records.iter_records(results)
              if r["tuning"]["role"] == "trial" and r["status"] == "success"]
    assert len(trials) == 3 and len({r["config_hash"] for r in trials}) == 3
    final = next(r for _, r in records.iter_records(results) if r["tuning"]["role"] == "final")
    assert final["tuning"]["trials_complete"] == 3


def test_a_dev_tie_goes_to_the_lower_dev_loss_then_the_earlier_trial_and_is_reported():
    """The zoo's IA3 was chosen from a dev tie that Optuna broke by trial order alone."""
    import optuna
    import pandas as pd

    from peftbench.results.notes import tie_note as _tie
    from peftbench.suite.tuning import TIE_RULE

    def trial(number, value, loss=None):
        made = optuna.trial.create_trial(value=value, params={}, distributions={},
                                         user_attrs={} if loss is None else {"dev_loss": loss})
        made.number = number
        return made

    complete = [trial(0, 0.6, 0.5), trial(1, 0.625, 0.7), trial(2, 0.625, 0.4), trial(3, 0.625)]
    chosen, tied = chosen_trial(complete, maximize=True)
    assert chosen.number == 2 and tied == [1, 3]
    chosen, tied = chosen_trial([trial(0, 0.7, None), trial(1, 0.7, None)], maximize=True)
    assert chosen.number == 0 and tied == [1]  # no loss on either: the earlier trial
    chosen, tied = chosen_trial(complete, maximize=False)
    assert chosen.number == 0 and tied == []
    note = _tie(pd.Series({"tuning.trial": 2, "tuning.tied_with": [1, 3], "tuning.tie_rule": TIE_RULE}))
    assert note == f" (trial 2, tied on dev with trials 1, 3: {TIE_RULE})"
    assert _tie(pd.Series({"tuning.trial": 2})) == ""


def test_trials_whose_runs_leave_no_record_count_as_failures_and_stop_the_study(tmp_path, tiny_bert):
    """A run that dies before writing its record (a broken install, a worker that cannot start the
    command) failed: before, its trial stayed running, was never counted, and the suite drew new trials
    forever (found when a renamed module broke every worker: 1,984 trials)."""
    from peftbench.suite.tuned import finals, run_trials
    from peftbench.suite.tuning import default_storage

    path = tuned_suite(tmp_path, tiny_bert, "trials = 4\nmax_failures = 2")
    tune = suite.tune_settings(path)
    studies = plan_studies(suite.expand(path, plugins.load())[1], tune)
    rounds, lines = [], []
    results = tmp_path / "results"
    results.mkdir()
    opened = run_trials(studies, tune, default_storage(results), results, rounds.append, {}, lines.append)
    assert [len(batch) for batch in rounds] == [2, 2]  # one trial of each study per round, until 2 failed
    assert sum("left no finished record" in line for line in lines) == 4
    _, without = finals(studies, opened, tune)
    assert len(without) == 2 and all("2 trials failed (max_failures = 2)" in why for why in without)
