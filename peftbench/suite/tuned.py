"""A suite with [tune]: every study asks for trials, the executor runs them, the study is told
what they scored on dev; then the best settings run once per seed (the finals).

Resuming is by the study's storage and the run records: a trial left running by a suite that
died is told from its record when that run finished, and marked failed (not counted) otherwise;
a trial or final whose configuration already succeeded is never run twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..records import record as records
from ..run.spec import Resolved, TuningSpec
from ..run.pruning import PRUNED_PREFIX
from .tuning import (TIE_RULE, TRIAL_TRAIN, Study, TuneSettings, chosen_trial, distributions,
                     open_study, share_storage, with_settings)


def _records_by_hash(results: Path) -> dict[str, dict[str, Any]]:
    """config hash -> its newest successful record (else its newest record of any status)."""
    found: dict[str, dict[str, Any]] = {}
    if not results.exists():
        return found
    for _, record in records.iter_records(results):
        key, old = record.get("config_hash"), found.get(record.get("config_hash"))
        newer = old is None or (record.get("finished_at") or "") >= (old.get("finished_at") or "")
        if key and (old is None or (record.get("status") == "success" and (old.get("status") != "success" or newer))
                    or (old.get("status") != "success" and newer)):
            found[key] = record
    return found


def _tell(optuna_study, trial: Any, record: dict[str, Any] | None, metric: str) -> None:
    """Tell the study how a trial's run ended: complete with its dev score, pruned, or failed."""
    try:
        _tell_state(optuna_study, trial, record, metric)
    except RuntimeError as exc:  # the grid sampler stops "the optimize loop" when its grid is done;
        if "Study.stop" not in str(exc):  # ask-and-tell has none, and the trial is stored before that
            raise


def _tell_state(optuna_study, trial: Any, record: dict[str, Any] | None, metric: str) -> None:
    from optuna.trial import TrialState

    value = ((record or {}).get("scores") or {}).get("dev", {}).get(metric)
    if record and record.get("status") == "success" and str(record.get("stopped_because", "")).startswith(
            PRUNED_PREFIX):
        optuna_study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        return
    if record and record.get("status") == "success" and isinstance(value, (int, float)):
        optuna_study.tell(trial, float(value), skip_if_finished=True)
        return
    optuna_study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def _settle_stale(study: Study, optuna_study, results: Path, states: dict[str, str]) -> None:
    """Trials left running when a suite died: told from their record, or failed (not counted)."""
    from optuna.trial import TrialState

    known = None
    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        key = trial.user_attrs.get("config_hash")
        if states.get(key) == "running":  # alive, e.g. run by a suite on another machine
            continue
        known = known if known is not None else _records_by_hash(results)
        _tell(optuna_study, trial.number, known.get(key), study.metric)


def _tuning(role: str, study: Study, tune: TuneSettings, trial: Any, **more: Any) -> TuningSpec:
    """What a trial's or final's record says of how it was made (``RunRecord.tuning``)."""
    return TuningSpec(role, study.name, trial.number, tune.trials, study.metric, tune.sampler, tune.pruner,
                      {k: s.describe() for k, s in sorted(study.space.items())}, sorted(study.space),
                      dict(trial.params), **more)


def _label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _trial_run(study: Study, trial: Any, tune: TuneSettings, storage: str):
    from .plan import PlannedRun

    base = study.base
    tuning = _tuning("trial", study, tune, trial, trial_id=trial._trial_id, epochs=base.spec.train.epochs,
                     storage=storage)
    spec = with_settings(base.spec, dict(trial.params), TRIAL_TRAIN, tuning)
    point = tuple(p for p in study.runs[0].point if not p.startswith("seed="))
    return PlannedRun(f"{study.runs[0].block} trial {trial.number}",
                      Resolved(spec, base.method, base.task, base.backbone), (*point, _label(trial.params)))


REDRAWS = 50  # asks for settings no counted trial has tried, before a repeat is accepted (and said)


def _ask_new(study: Study, optuna_study, tune: TuneSettings, storage: str, log: Callable[[str], None]):
    """A trial whose settings no complete or pruned trial of the study has tried. A resumed study's
    sampler starts again from its seed and would draw the stopped suite's settings once more; such a
    draw is failed (a failed trial is not counted) and drawn again, so the budget buys distinct settings."""
    from optuna.trial import TrialState

    tried = {t.user_attrs.get("config_hash"): t.number for t in optuna_study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))}
    for attempt in range(REDRAWS):
        trial = optuna_study.ask(distributions(study.space, tune.sampler, tune.trials))
        planned = _trial_run(study, trial, tune, storage)
        trial.set_user_attr("config_hash", planned.hash)
        if planned.hash not in tried or attempt == REDRAWS - 1:
            break
        trial.set_user_attr("repeats_trial", tried[planned.hash])
        optuna_study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if planned.hash in tried:
        log(f"study {study.name}: no new settings in {REDRAWS} draws (a small space?); trial {trial.number} "
            f"repeats trial {tried[planned.hash]}'s")
    return trial, planned


def _failures(optuna_study) -> int:
    """Trials that ran and failed (a repeated draw, failed before it ran, is not one)."""
    from optuna.trial import TrialState

    return sum("repeats_trial" not in t.user_attrs for t in optuna_study.get_trials(
        deepcopy=False, states=(TrialState.FAIL,)))


def _stopped(optuna_study, tune: TuneSettings) -> bool:
    """A study whose trials keep failing stops before its budget (``max_failures``)."""
    return _failures(optuna_study) >= tune.max_failures and _counted(optuna_study) < tune.trials


def _counted(optuna_study) -> int:
    from optuna.trial import TrialState

    return len(optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_trials(studies: list[Study], tune: TuneSettings, storage: str, results: Path,
               run_batch: Callable[[list], None], states: dict[str, str], log: Callable[[str], None]) -> dict:
    """Every study's trials, in rounds (each round: up to ``tune.parallel`` new trials of each
    unfinished study, run together), until each has ``tune.trials`` complete or pruned trials.
    Returns the opened Optuna studies by name."""
    opened = {study.name: open_study(study, tune, storage) for study in studies}
    storage = share_storage(storage)  # the trials' specs hold it masked; their processes get it from the environment
    for study in studies:
        _settle_stale(study, opened[study.name], results, states)
    rounds = 0
    while True:
        batch = []
        known = _records_by_hash(results)
        for study in studies:
            optuna_study, asked = opened[study.name], 0
            if _stopped(optuna_study, tune):
                continue
            while asked < tune.parallel and _counted(optuna_study) + asked < tune.trials:
                trial, planned = _ask_new(study, optuna_study, tune, storage, log)
                if known.get(planned.hash, {}).get("status") == "success":  # ran before, its trial never told
                    _tell(optuna_study, trial, known[planned.hash], study.metric)
                    continue
                batch.append((study, trial, planned))
                asked += 1
        if not batch:
            return opened
        rounds += 1
        log(f"tuning round {rounds}: {len(batch)} trial(s) of {len({s.name for s, _, _ in batch})} study(ies)")
        try:
            run_batch([planned for _, _, planned in batch])
        except BaseException:  # an interrupted round's unfinished trials are settled by the next suite run
            _tell_round(batch, opened, results, log, ended=False)
            raise
        _tell_round(batch, opened, results, log, ended=True)


def _tell_round(batch: list, opened: dict, results: Path, log: Callable[[str], None], ended: bool) -> None:
    """Tell each study how its trials of the round ended. Once the round has ended, a trial whose run
    left no finished record (it died before writing one, or was killed) failed: it counts towards
    ``max_failures``, so a suite whose runs cannot start stops instead of drawing trials forever."""
    known = _records_by_hash(results)
    for study, trial, planned in batch:
        record = known.get(planned.hash)
        finished = (record or {}).get("status") in ("success", "failed")
        if finished or ended:
            if not finished:
                log(f"study {study.name}: trial {trial.number}'s run left no finished record (its log: "
                    f"suite-logs/{planned.hash}.log); counted as failed")
            _tell(opened[study.name], trial, record if finished else None, study.metric)


def finals(studies: list[Study], opened: dict, tune: TuneSettings) -> tuple[list, list[str]]:
    """Per study, its grid point's seeds with the best trial's settings; and, for the studies whose
    finals cannot run, why (no complete trial to choose from, or it stopped on failing trials)."""
    from optuna.trial import TrialState

    from .plan import PlannedRun

    planned, without = [], []
    for study in studies:
        optuna_study = opened[study.name]
        trials = optuna_study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if _stopped(optuna_study, tune):
            without.append(f"study {study.name}: {_failures(optuna_study)} trials failed (max_failures = "
                           f"{tune.max_failures}) before {tune.trials} completed, so it stopped; its finals do not "
                           "run (see the trials' logs in suite-logs/)")
            continue
        if not complete:
            without.append(f"study {study.name}: no trial completed, so no settings to choose; its finals do not "
                           "run (see the trials' logs in suite-logs/)")
            continue
        best, tied = chosen_trial(complete, study.maximize)
        tuning = _tuning("final", study, tune, best, dev_value=best.value, trials_complete=len(complete),
                         tied_with=tied, tie_rule=TIE_RULE if tied else None,
                         trials_pruned=sum(t.state == TrialState.PRUNED for t in trials),
                         trials_failed=sum(t.state == TrialState.FAIL for t in trials))
        for run in study.runs:
            spec = with_settings(run.resolved.spec, dict(best.params), tuning=tuning)
            resolved = Resolved(spec, run.resolved.method, run.resolved.task, run.resolved.backbone)
            planned.append(PlannedRun(run.block, resolved, (*run.point, f"tuned {_label(best.params)}")))
    return planned, without
