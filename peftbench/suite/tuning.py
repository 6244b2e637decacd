"""Tuning with an equal budget, chosen on dev: a suite's ``[tune]`` table, run through Optuna.

    [tune]
    trials = 6            # per method, the same for every method
    metric = "accuracy"   # default: the task's main score, on dev; direction from the task
    sampler = "tpe"       # tpe | random | grid (seeded)
    pruner = "median"     # median | hyperband | none: on the dev score after each epoch
    seed = 0
    [tune.space.<method>] # overrides of that method's own search space (Method.search_space)
    lr = {low = 1e-4, high = 3e-3}
    r = [4, 8, 16]

Each block grid point of the suite (task x backbone x method x fixed settings) is one Optuna
study in one storage (``sqlite:///<results>/tuning.db`` unless ``--storage URL``, so trials run by
the Ray or Slurm executors on many machines share it). Its trials are ordinary runs with the
sampled settings that score dev only (``evaluate_test=false``); the best trial's settings then run
once per seed of the block: the finals, the rows of the report. The suite only asks and tells; a
trial's run reports its dev score after each epoch to its study and stops when the pruner says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import SearchSpace
from ..config import field_types, parse_typed
from ..errors import ConfigError
from ..run.pruning import DEV_LOSS, STORAGE_ENV, make_pruner, masked
from ..run.spec import Resolved, RunSpec, TuningSpec

TUNE_KEYS = {"trials", "metric", "sampler", "pruner", "seed", "space", "parallel", "max_failures"}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
# What a trial does not need: it is scored on dev only, and neither timed nor kept.
TRIAL_TRAIN = {"evaluate_test": False, "inference_repeats": 0, "save_artifact": False}
# How ties on the dev score are broken (DEV_LOSS: the trial's dev loss at its last reported epoch).
TIE_RULE = "ties on the dev score go to the lower dev loss at the last epoch, then to the earlier trial"


@dataclass(frozen=True)
class TuneSettings:
    trials: int
    metric: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    parallel: int = 1  # trials of one study in flight at once
    max_failures: int = 3  # failed trials after which a study stops (and the suite says so, exit 1)
    spaces: dict[str, dict[str, SearchSpace]] = field(default_factory=dict)  # method -> overrides


def read_tune(table: Any, where: str = "tune") -> TuneSettings:
    """The suite's [tune] table, checked: one ``error:`` line per mistake."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table", "write [tune] with trials = N")
    unknown = sorted(set(table) - TUNE_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key", f"valid keys there: {', '.join(sorted(TUNE_KEYS))}")
    trials = table.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"{where}.trials must be a positive integer (trials per method)", "e.g. trials = 6")
    for key, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if key in table and table[key] not in allowed:
            raise ConfigError(f"{where}.{key} = {table[key]!r} is not one of {', '.join(allowed)}")
    for key in ("seed", "parallel", "max_failures"):
        value = table.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            raise ConfigError(f"{where}.{key} must be an integer{' >= 0' if key == 'seed' else ' >= 1'}")
    metric = table.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise ConfigError(f"{where}.metric must be a score name, e.g. \"accuracy\"")
    spaces = table.get("space", {})
    if not isinstance(spaces, dict) or not all(isinstance(v, dict) for v in spaces.values()):
        raise ConfigError(f"{where}.space must hold one table per method", "e.g. [tune.space.<method>] lr = {low = 1e-4, "
                                                                           "high = 1e-2}")
    parsed = {method: {key: _space(value, f"{where}.space.{method}.{key}") for key, value in keys.items()}
              for method, keys in spaces.items()}
    given = {key: table[key] for key in ("metric", "sampler", "pruner", "seed", "parallel", "max_failures")
             if key in table}
    return TuneSettings(trials, **given, spaces=parsed)  # the defaults: TuneSettings' fields


def _space(value: Any, where: str) -> SearchSpace:
    """``[a, b, c]`` (choices) or ``{low = , high = , kind = }`` (kind: log-uniform for floats,
    int for integers, unless named)."""
    try:
        if isinstance(value, list):
            return SearchSpace("choice", choices=tuple(value))
        if isinstance(value, dict) and set(value) <= {"low", "high", "kind", "log"}:
            low, high = value.get("low"), value.get("high")
            integers = isinstance(low, int) and isinstance(high, int)
            kind = value.get("kind", "int" if integers else "log-uniform")
            return SearchSpace(kind, low, high, log=bool(value.get("log", False)))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where} must be a list of values or a table {{low = , high = }}",
                      "e.g. lr = {low = 1e-4, high = 1e-2} or r = [4, 8, 16]")


# ------------------------------------------------------------------ studies


@dataclass
class Study:
    """One study: a block grid point's runs (its seeds) and what tuning searches for it."""

    name: str
    runs: list  # the grid point's PlannedRuns, one per seed (the finals' settings before tuning)
    space: dict[str, SearchSpace]
    metric: str
    maximize: bool

    @property
    def base(self) -> Resolved:
        return self.runs[0].resolved


def plan_studies(planned: list, tune: TuneSettings) -> list[Study]:
    """The suite's runs grouped into studies: the same block and grid point, any seed."""
    groups: dict[tuple, list] = {}
    for run in planned:
        groups.setdefault((run.block, tuple(p for p in run.point if not p.startswith("seed="))), []).append(run)
    methods = {run.resolved.spec.method for run in planned}
    unused = sorted(set(tune.spaces) - methods)
    if unused:  # a misspelt method would otherwise tune with its defaults and look overridden
        raise ConfigError(f"[tune.space.{unused[0]}]: the suite runs no method {unused[0]!r}",
                          f"its methods: {', '.join(sorted(methods))}")
    return [_study(runs, tune) for runs in groups.values()]


def _study(runs: list, tune: TuneSettings) -> Study:
    resolved = runs[0].resolved
    spec, method, task = resolved.spec, resolved.method, resolved.task
    space = {**method.search_space(spec.method_config), **tune.spaces.get(spec.method, {})}
    if not space:
        raise ConfigError(f"method {spec.method!r} declares nothing to tune (no lr setting)",
                          f"give it a space: [tune.space.{spec.method}] with its settings")
    for key in space:
        if _section(spec, key) is None:
            raise ConfigError(f"[tune.space.{spec.method}].{key}: {spec.method} has no setting {key!r}",
                              "tune a method or train setting (`peftbench list` shows them)")
        _check_space_type(spec, key, space[key])
        if spec.budget is not None and key == spec.budget.setting:
            raise ConfigError(f"[tune.space.{spec.method}].{key} is the setting match_params sizes",
                              "tune other settings, or drop match_params from the block")
    metric = tune.metric or task.metadata.main_score
    declared = task.metadata.greater_is_better
    if declared and metric not in declared:  # trials would score nothing and the study never end
        raise ConfigError(f"[tune] metric {metric!r} is not a score task {spec.task} reports",
                          f"its scores: {', '.join(sorted(declared))}")
    maximize = task.metadata.greater_is_better.get(metric, True)
    unseeded = dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=0))
    identity = json.dumps({"spec": unseeded.hash, "space": {k: s.describe() for k, s in sorted(space.items())},
                           "metric": metric}, sort_keys=True)
    key = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return Study(f"{spec.method}@{spec.task}@{spec.backbone}-{key}", runs, space, metric, maximize)


def _section(spec: RunSpec, key: str) -> str | None:
    for section, config in (("method_config", spec.method_config), ("train", spec.train)):
        if key in {f.name for f in dataclasses.fields(config)}:
            return section
    return None


def _annotation(spec: RunSpec, key: str) -> Any:
    """The declared type of a method or train setting (KeyError: neither has it)."""
    config = spec.method_config if _section(spec, key) == "method_config" else spec.train
    return field_types(type(config))[key]


def _check_space_type(spec: RunSpec, key: str, space: SearchSpace) -> None:
    """Every value the space can give parses as the setting's type (as `--set` would parse it): a
    space of strings for an int setting, or floats for an int, is refused at the plan."""
    annotation = _annotation(spec, key)
    values = space.choices if space.kind == "choice" else (space.low, space.high)
    if space.kind in ("log-uniform", "uniform") and annotation is int:
        raise ConfigError(f"[tune.space.{spec.method}].{key}: a {space.kind} space draws floats for an int setting",
                          f"write integer bounds, e.g. {key} = {{low = 4, high = 64}}")
    for value in values:
        try:
            parse_typed(value, annotation, key)
        except ConfigError as exc:
            raise ConfigError(f"[tune.space.{spec.method}].{key}: {value!r} does not fit the setting ({exc})",
                              "`peftbench list` shows each setting's type") from None


def with_settings(spec: RunSpec, values: dict[str, Any], train: dict[str, Any] | None = None,
                  tuning: TuningSpec | None = None) -> RunSpec:
    """The spec with tuned values in their sections, each parsed as `--set` parses it, and extra train settings."""
    try:
        values = {k: parse_typed(v, _annotation(spec, k), k) for k, v in values.items()}
    except (ConfigError, KeyError) as exc:
        raise ConfigError(f"tuned settings {values} are invalid for {spec.method}: {exc}",
                          "narrow the space in [tune.space]") from None
    method_values = {k: v for k, v in values.items() if _section(spec, k) == "method_config"}
    train_values = {**{k: v for k, v in values.items() if _section(spec, k) == "train"}, **(train or {})}
    try:
        return dataclasses.replace(spec, method_config=dataclasses.replace(spec.method_config, **method_values),
                                   train=dataclasses.replace(spec.train, **train_values), tuning=tuning)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tuned settings {values} are invalid for {spec.method}: {exc}",
                          "narrow the space in [tune.space]") from None


# ------------------------------------------------------------------ Optuna


def default_storage(results: Path) -> str:
    return f"sqlite:///{results.resolve() / 'tuning.db'}"


# A storage URL may hold a password: it is printed and written masked, and reaches the trials' processes
# through this environment variable (which executors pass on), never through files in the results folder.
def share_storage(storage: str) -> str:
    """Make the storage reachable by the trials' processes; returns the form their specs hold."""
    os.environ[STORAGE_ENV] = storage
    return masked(storage)


def distributions(space: dict[str, SearchSpace], sampler: str, trials: int) -> dict[str, Any]:
    """Optuna distributions; for the grid sampler every range becomes a grid of points (log-spaced
    for log-uniform), as many per setting as ``trials`` allows over all settings."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if sampler == "grid":
        return {k: CategoricalDistribution(v) for k, v in grid(space, trials).items()}
    out = {}
    for key, s in space.items():
        if s.kind == "choice":
            out[key] = CategoricalDistribution(s.choices)
        elif s.kind == "int":
            out[key] = IntDistribution(int(s.low), int(s.high), log=s.log)
        else:
            out[key] = FloatDistribution(s.low, s.high, log=s.kind == "log-uniform")
    return out


def grid(space: dict[str, SearchSpace], trials: int) -> dict[str, tuple]:
    import numpy as np

    points = max(2, round(trials ** (1 / max(len(space), 1))))
    values = {}
    for key, s in space.items():
        if s.kind == "choice":
            values[key] = tuple(s.choices)
        elif s.kind == "int":
            values[key] = tuple(sorted({int(round(v)) for v in np.linspace(s.low, s.high, points)}))
        else:
            spaced = np.geomspace(s.low, s.high, points) if s.kind == "log-uniform" else np.linspace(s.low, s.high,
                                                                                                      points)
            values[key] = tuple(float(f"{v:.6g}") for v in spaced)
    return values


def make_sampler(tune: TuneSettings, space: dict[str, SearchSpace]):
    import optuna

    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=tune.seed)
    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(dict(grid(space, tune.trials)), seed=tune.seed)
    # The first third of the budget explores at random (Optuna's default of 10 would be all of a
    # small budget); constant_liar keeps trials in flight at once from sampling the same point.
    return optuna.samplers.TPESampler(seed=tune.seed, n_startup_trials=max(2, tune.trials // 3),
                                      constant_liar=True)


def open_study(study: Study, tune: TuneSettings, storage: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(storage=storage, study_name=study.name, load_if_exists=True,
                                   direction="maximize" if study.maximize else "minimize",
                                   sampler=make_sampler(tune, study.space),
                                   pruner=make_pruner(tune.pruner, tune.trials, study.base.spec.train.epochs))
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable database: one line
        raise ConfigError(f"cannot open the tuning storage {masked(storage)!r} ({masked(str(exc))})",
                          "pass --storage with an Optuna RDB URL, e.g. sqlite:///results/tuning.db") from None


def chosen_trial(complete: list, maximize: bool) -> tuple[Any, list[int]]:
    """The complete trial a study's finals use, and the numbers of the others that tied with it on the
    dev score (``TIE_RULE``: Optuna alone keeps the earliest of equal values, whatever they lost)."""
    best = (max if maximize else min)(t.value for t in complete)
    tied = [t for t in complete if t.value == best]
    loss = lambda t: t.user_attrs.get(DEV_LOSS, math.inf)  # noqa: E731 - no loss recorded: loses the tie
    chosen = min(tied, key=lambda t: (loss(t), t.number))
    return chosen, sorted(t.number for t in tied if t is not chosen)
