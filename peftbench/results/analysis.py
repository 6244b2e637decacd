"""The results API: ``load_results`` (one row per run) and ``compare`` (every configuration
against a baseline, with paired tests on the test examples, confidence intervals, adjusted p
values and the confound check). ``peftbench report`` prints what these return.

    import peftbench
    runs = peftbench.load_results("results/")
    table = peftbench.compare(runs, baseline="method.name=full", test="bootstrap")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import significance
from . import cache as report_cache
from .predictions import NotPaired, missing, scored_runs, task_and_config
from ..errors import ConfigError, ResultsError

if TYPE_CHECKING:
    import pandas as pd

TESTS = ("bootstrap", "randomization", "mcnemar", "t")
ADJUSTMENTS = ("holm", "bh", "none")
# Settings that cannot change what a run learns or scores (only what it measures or keeps).
_NOT_CONFOUNDS = {"config.train.seed", "config.train.inference_repeats", "config.train.inference_split",
                  "config.train.save_artifact", "config.train.gpu_memory_gb", "config.train.fit_memory",
                  "config.train.memory_trace"}


def load_results(results: str | Path, statuses: tuple[str, ...] = ("success",),
                 deduplicate: bool = True) -> "pd.DataFrame":
    """One row per run record under ``results`` (searched recursively), nested fields flattened
    with dots (``scores.test.accuracy``, ``config.train.batch_size``, ``params.trainable``, ...; see
    docs/results-api.md), plus ``record_path``: the run's folder. ``deduplicate`` keeps the newest
    record of a configuration and seed that succeeded more than once."""
    from ..records import record as records

    frame = records.load_frame(Path(results), statuses)
    return records.set_aside_duplicates(frame)[0] if deduplicate else frame


# ------------------------------------------------------------------ configurations and confounds


def configurations(frame: "pd.DataFrame") -> list["pd.DataFrame"]:
    """Runs grouped into configurations: the same settings, any seed (a failed run never joins
    a successful one)."""
    keys = [c for c in frame.columns if c.startswith("config.") and c != "config.train.seed"]
    keys += ["status"] if "status" in frame else []
    if not keys:
        return [frame]
    label = [repr(row) for row in frame[keys].itertuples(index=False)]  # settings may be lists: not hashable
    return [group for _, group in frame.groupby(label, sort=False)]


def configuration_label(group: "pd.DataFrame", varying: list[str]) -> str:
    """The method and the settings that tell this configuration from the others."""
    def first(column: str) -> Any:
        return group[column].iat[0] if column in group else None

    parts = [str(first("method.name") or first("config.method"))]
    for column in varying:
        value = first(column)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{column.rsplit('.', 1)[-1]}={value:g}" if isinstance(value, float)
                         else f"{column.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts)


@dataclass(frozen=True)
class Confound:
    """A setting in which compared runs differ beyond their methods' own settings and the seed."""

    kind: str  # train, task, data, backbone or library
    setting: str  # the record field
    values: dict[str, list[str]]  # value -> the configurations that have it

    def line(self) -> str:
        shown = "; ".join(f"{value} ({', '.join(labels)})" for value, labels in self.values.items())
        return f"{self.kind} setting {self.setting.rsplit('.', 1)[-1]} differs: {shown}"


def _confound_kind(column: str) -> str | None:
    if column in _NOT_CONFOUNDS:
        return None
    prefixes = (("config.train.", "train"), ("effective_batch_size", "train"), ("config.task_config.", "task"), ("data.fingerprints.", "data"),
                ("data.source", "data"), ("config.task", "task"), ("config.backbone", "backbone"),
                ("backbone.info.source", "backbone"), ("backbone.info.revision", "backbone"),
                ("backbone.info.fingerprint", "backbone"), ("environment.packages.", "library"),
                # Equal tuning: the budget, sampler, pruner, selection score and which settings were
                # searched (each family's own learning-rate range is the protocol, not a confound).
                ("tuning.trials", "tuning"), ("tuning.sampler", "tuning"), ("tuning.pruner", "tuning"),
                ("tuning.metric", "tuning"), ("tuning.tuned", "tuning"))
    return next((kind for prefix, kind in prefixes if column == prefix or
                 (prefix.endswith(".") and column.startswith(prefix))), None)


def confounds(frame: "pd.DataFrame") -> list[Confound]:
    """Every train, task, data, backbone and library setting in which the runs differ. A value a
    run did not record (an older record) is unknown and never counts as a difference."""
    import pandas as pd

    own = [c for c in varying_columns(frame) if c.startswith("config.method_config.")]
    labels = None
    found = []
    for column in frame.columns:
        kind = _confound_kind(column)
        if kind is None:
            continue
        values = frame[column]
        if column == "tuning.trials" and values.notna().any():  # tuned beside untuned is unequal too
            values = values.astype(object).where(values.notna(), "not tuned")
        shown = values.dropna().map(_shown)
        if shown.nunique() < 2:
            continue
        if labels is None:  # configurations named by their method's own settings: the confound is the rest
            labels = pd.Series(index=frame.index, dtype=object)
            for group in configurations(frame):
                labels[group.index] = configuration_label(group, own)
        values: dict[str, list[str]] = {}
        for value, label in zip(shown, labels[shown.index]):
            if label not in values.setdefault(value, []):
                values[value].append(label)
        found.append(Confound(kind, column, values))
    return found + family_confounds(frame)


def family_confounds(frame: "pd.DataFrame") -> list[Confound]:
    """Methods of one family (``Method.family``) that differ in a setting the family shares (LoRA's
    alpha 16 beside DoRA's 8): the variants then differ in more than their own idea."""
    found = []
    if "method.family" not in frame:
        return found
    for family, members in frame[frame["method.family"].notna()].groupby("method.family"):
        if members["method.name"].nunique() < 2:
            continue
        for column in [c for c in members.columns if c.startswith("method.family_settings.")]:
            values: dict[str, list[str]] = {}
            for value, method in zip(members[column].dropna().map(_shown), members.loc[members[column].notna(),
                                                                                    "method.name"]):
                if method not in values.setdefault(value, []):
                    values[value].append(method)
            if len(values) > 1:
                found.append(Confound(f"{family} family", column.rsplit(".", 1)[1], values))
    return found


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def varying_columns(frame: "pd.DataFrame") -> list[str]:
    """Config columns (seed aside) whose value differs between runs: what labels a configuration."""
    return [c for c in frame.columns if c.startswith("config.") and c not in ("config.train.seed", "config.method")
            and frame[c].dropna().map(repr).nunique() > 1]


def check_confounds(frame: "pd.DataFrame", strict: bool) -> list[str]:
    """The confound lines every comparison prints; with ``strict`` a confound is an error."""
    lines = [c.line() for c in confounds(frame)]
    if strict and lines:
        raise ConfigError(f"the compared runs are not a fair comparison: {lines[0]}"
                          + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""),
                          "filter the runs (e.g. --task, or a results folder per setting) or drop --strict")
    return lines


# ------------------------------------------------------------------ the comparison


def _main_metric(frame: "pd.DataFrame", metric: str | None) -> str:
    if metric:
        if f"scores.test.{metric}" not in frame:
            raise ConfigError(f"no run has a test score {metric!r}", "see `peftbench report --fields`")
        return metric
    mains = frame["task.main_score"].dropna().unique() if "task.main_score" in frame else []
    if len(mains) != 1:
        raise ConfigError(f"a comparison needs runs of one main score, these have {len(mains)}",
                          "filter with --task, or name the score with --metric")
    return str(mains[0])


def _baseline_index(groups: list["pd.DataFrame"], baseline: str) -> int:
    field_name, sep, wanted = baseline.partition("=")
    if not sep or not any(field_name in g for g in groups):
        raise ConfigError(f"--baseline {baseline!r} must be FIELD=VALUE with a record field",
                          "e.g. --baseline method.name=full")
    matches = [i for i, g in enumerate(groups) if field_name in g and all(str(v) == wanted for v in g[field_name])]
    if len(matches) != 1:
        raise ConfigError(f"--baseline {baseline!r} matches {len(matches)} configuration(s); it must match one",
                          "add settings to tell them apart, or filter the runs")
    return matches[0]


def _seed_t_test(base: "pd.DataFrame", other: "pd.DataFrame", column: str) -> significance.TestResult:
    """Paired t-test over the seeds both configurations ran (the seed-level comparison)."""
    base_by_seed = dict(zip(base["config.train.seed"], base[column].astype(float)))
    other_by_seed = dict(zip(other["config.train.seed"], other[column].astype(float)))
    shared = sorted(set(base_by_seed) & set(other_by_seed))
    diff = [other_by_seed[s] - base_by_seed[s] for s in shared]
    if not diff:
        raise NotPaired("no seed in common with the baseline")
    mean = sum(diff) / len(diff)
    if len(diff) < 2 or all(d == diff[0] for d in diff):
        return significance.TestResult(mean, math.nan, note=f"t-test needs 2+ shared seeds with spread (n={len(diff)})")
    return significance.TestResult(mean, significance.paired_t_test(diff),
                                   note=f"paired t-test over {len(diff)} shared seeds")


def _paired_test(test: str, base_runs: list, runs: list, base: "pd.DataFrame", other: "pd.DataFrame",
                 resamples: int) -> significance.TestResult:
    if test == "bootstrap":
        return significance.paired_bootstrap(runs, base_runs, resamples)
    shared = sorted(set(base["config.train.seed"]) & set(other["config.train.seed"]))
    pick_base = [base_runs[list(base["config.train.seed"]).index(s)] for s in shared]
    pick = [runs[list(other["config.train.seed"]).index(s)] for s in shared]
    if not shared:
        raise NotPaired("no seed in common with the baseline")
    if test == "randomization":
        return significance.approximate_randomization(pick, pick_base, resamples)
    if len(base_runs) != 1 or len(runs) != 1:
        raise NotPaired(f"McNemar compares one run with one run ({len(runs)} vs {len(base_runs)} here); "
                        "with several seeds use --test bootstrap")
    right, base_right = significance.correct(pick[0]), significance.correct(pick_base[0])
    if right is None or base_right is None:
        raise NotPaired("McNemar needs each example right or wrong; this task's predictions are scored as a whole")
    return significance.mcnemar(right, base_right)


def _same_test_content(base: "pd.DataFrame", other: "pd.DataFrame") -> None:
    column = "data.fingerprints.test"
    if column in base and column in other:
        known = set(base[column].dropna()) | set(other[column].dropna())
        if len(known) > 1:
            raise NotPaired("the test examples differ in content from the baseline's (data fingerprints differ)")


def _interval(group: "pd.DataFrame", runs: list | None, column: str, confidence: float) -> tuple[float, float]:
    """The configuration's confidence interval: bootstrap over seeds x examples where its
    predictions are at hand, else the t interval over seeds."""
    if isinstance(runs, list) and runs:
        return significance.confidence_interval(runs, confidence)[1:]
    values = group[column].dropna().astype(float).tolist()
    return significance.t_interval(values, confidence) if len(values) > 1 else (math.nan, math.nan)


def _compare_row(group, base, runs, base_runs, test, column, resamples) -> dict[str, Any]:
    try:
        if test == "t":
            result = _seed_t_test(base, group, column)
        else:
            for side in (base_runs, runs):
                if isinstance(side, NotPaired):
                    raise side
            _same_test_content(base, group)
            result = _paired_test(test, base_runs, runs, base, group, resamples)
    except NotPaired as exc:
        return {"note": str(exc)}
    return {"delta": result.delta, "delta_low": result.low, "delta_high": result.high,
            "p": None if math.isnan(result.p) else result.p, "note": result.note}


def compare(frame: "pd.DataFrame", baseline: str, test: str = "bootstrap", metric: str | None = None,
            adjust: str = "holm", alpha: float = 0.05, resamples: int | None = None,
            confidence: float = 0.95, strict: bool = False, components: Any = None) -> "pd.DataFrame":
    """Each configuration (its seeds grouped) against the one where ``baseline`` (FIELD=VALUE)
    holds, on the test split's ``metric`` (default: the task's main score). One row per
    configuration: configuration, method, runs, metric, mean, ci_low, ci_high, baseline, delta,
    delta_low, delta_high, p, p_adjusted, significant, test, note, floor, floor_p, learned (False:
    "did not learn", see ``floor_checks``). ``.attrs["confounds"]`` holds the confound lines
    (``strict``: a confound raises ConfigError). ``resamples``: of the paired tests and of the floor
    test (default: ``significance.DEFAULT_RESAMPLES`` and ``FLOOR_RESAMPLES``)."""
    import pandas as pd

    if test not in TESTS or adjust not in ADJUSTMENTS:
        raise ConfigError(f"test {test!r} / adjustment {adjust!r} unknown",
                          f"tests: {', '.join(TESTS)}; adjustments: {', '.join(ADJUSTMENTS)}")
    if resamples is not None and resamples < 1:
        raise ConfigError(f"resamples must be at least 1, not {resamples}")
    floor_resamples = resamples or significance.FLOOR_RESAMPLES
    resamples = resamples or significance.DEFAULT_RESAMPLES
    if frame.empty:
        raise ResultsError("no successful runs to compare", "run `peftbench run ...` first")
    metric = _main_metric(frame, metric)
    column, lines = f"scores.test.{metric}", check_confounds(frame, strict)
    groups, varying = configurations(frame), varying_columns(frame)
    base_index = _baseline_index(groups, baseline)
    components = components if components is not None or test == "t" else _components()
    scored = report_cache.LazyScored(groups, base_index, metric, components, test)
    cache, base = report_cache.TestCache(test), groups[base_index]
    rows = []
    for i, group in enumerate(groups):
        row = {"configuration": configuration_label(group, varying), "method": group["method.name"].iat[0],
               "runs": len(group), "metric": metric, "mean": float(group[column].astype(float).mean()),
               "baseline": i == base_index, "test": test}
        # the baseline's example order is part of the key: the resamples draw example positions
        row["ci_low"], row["ci_high"] = cache.get(("interval", confidence), [base, group], metric,
                                                  lambda: _interval(group, scored[i], column, confidence))
        if i != base_index:
            row["delta"] = row["mean"] - float(base[column].astype(float).mean())
            row.update(cache.get(("compare", test, resamples), [group, base], metric,
                                 lambda: _compare_row(group, base, scored[i], scored[base_index], test, column,
                                                      resamples)))
        rows.append(row)
    cache.save()
    table = pd.DataFrame(rows)
    for name in ("delta", "delta_low", "delta_high", "p"):
        table[name] = pd.to_numeric(table[name], errors="coerce") if name in table else math.nan
    table["note"] = table["note"].fillna("") if "note" in table else ""
    adjusted = significance.adjust([None if missing(p) else p for p in table["p"]], adjust)
    table["p_adjusted"] = pd.to_numeric(pd.Series(adjusted, index=table.index, dtype=object), errors="coerce")
    table["significant"] = table["p_adjusted"].lt(alpha)
    checks = floor_checks(frame, metric, alpha, floor_resamples,
                          components=components if components is not None else _components(),
                          groups=groups)
    table["floor"] = [c.floor for c in checks]  # the majority floor of the test split
    table["floor_p"] = [c.p for c in checks]
    # True / False ("did not learn": not above the majority floor at alpha) / None (not testable)
    table["learned"] = pd.Series([c.learned for c in checks], index=table.index, dtype=object)
    table.attrs.update(confounds=lines, adjust=adjust, alpha=alpha, confidence=confidence, resamples=resamples)
    return table


# ------------------------------------------------------------------ floors: did a configuration learn?


@dataclass(frozen=True)
class FloorCheck:
    """Whether a configuration's test score beats the majority floor (see ``floor_checks``)."""

    floor: float | None  # the trivial predictor's test score (majority class, all-O, ...)
    delta: float | None  # the configuration's mean minus the floor
    p: float | None  # one-sided, pooled over seeds; None: not tested (see note)
    learned: bool | None
    note: str = ""
    loss_never_fell: tuple[int, ...] = ()  # seeds whose training loss never went below its start


def floor_checks(frame: "pd.DataFrame", metric: str | None = None, alpha: float = 0.05,
                 resamples: int = significance.FLOOR_RESAMPLES,
                 components: Any = None, groups: list | None = None) -> list[FloorCheck]:
    """Per configuration: does its test ``metric`` (default: the task's main score) beat the
    majority floor with 1 - ``alpha`` confidence? A one-sided bootstrap over the test examples,
    the seeds pooled (``significance.floor_test``), against the task's trivial predictor on the
    same references. ``learned`` is None where that cannot be tested (no predictions, no floor)."""
    groups = groups if groups is not None else configurations(frame)
    cached, fresh = report_cache.load("floors.json"), {}
    checks = []
    for group in groups:
        key = _floor_key(group, metric, resamples)
        if key is not None and key in cached:
            value, delta, p, note = cached[key]
            checks.append(FloorCheck(value, delta, p, None if p is None else p < alpha, note, _stalled(group)))
            continue
        components = components if components is not None else _components()  # only where a test runs
        check = _floor_check(group, metric, alpha, resamples, components)
        if key is not None and check.p is not None:
            fresh[key] = [check.floor, check.delta, check.p, check.note]
        checks.append(check)
    if fresh:
        report_cache.save("floors.json", fresh)
    return checks


def _floor_key(group: "pd.DataFrame", metric: str | None, resamples: int) -> str | None:
    return report_cache.group_key([group], ("floor", resamples), metric)


def _stalled(group: "pd.DataFrame") -> tuple[int, ...]:
    return tuple(int(seed) for seed, fell in zip(group.get("config.train.seed", []), group.get("loss_fell", []))
                 if fell is False)


def _floor_check(group: "pd.DataFrame", metric: str | None, alpha: float, resamples: int,
                 components: Any) -> FloorCheck:
    stalled = _stalled(group)
    main = metric or (group["task.main_score"].iat[0] if "task.main_score" in group else None)
    if main is None or f"scores.test.{main}" not in group or group[f"scores.test.{main}"].isna().all():
        return FloorCheck(None, None, None, None, "no test score", stalled)
    try:
        runs = scored_runs(group, None, main, components)
        task, config = task_and_config(components, group.iloc[0])
    except (NotPaired, ConfigError) as exc:
        return FloorCheck(None, None, None, None, str(exc), stalled)
    trivial = task.trivial_predictions(runs[0].references, config)
    if trivial is None:
        return FloorCheck(None, None, None, None, f"the task has no trivial predictor for {main}", stalled)
    floor = significance.ScoredRun(trivial, runs[0].references, runs[0].score_lists,
                                   task.example_statistics(trivial, runs[0].references, config, main))
    declared = group[f"task.greater_is_better.{main}"].dropna() if f"task.greater_is_better.{main}" in group else []
    higher = bool(declared.iloc[0]) if len(declared) else True
    result = significance.floor_test(runs, floor, higher, resamples)
    import numpy as np

    value = floor.score(np.arange(len(trivial)))
    return FloorCheck(value, result.delta, result.p, result.p < alpha, result.note, stalled)


def bootstrap_intervals(frame: "pd.DataFrame", metric: str, confidence: float = 0.95,
                        components: Any = None) -> list[tuple[float, float] | None]:
    """Per configuration, the bootstrap interval (seeds x test examples) of ``metric``; None where
    its predictions cannot be read."""
    components = components if components is not None else _components()
    cache = report_cache.TestCache("bootstrap")

    def interval(group: "pd.DataFrame") -> list[float] | None:
        try:
            return list(significance.confidence_interval(scored_runs(group, None, metric, components), confidence)[1:])
        except NotPaired:
            return None

    out = [cache.get(("interval", confidence, "own order"), [group], metric, lambda: interval(group))
           for group in configurations(frame)]
    cache.save()
    return [tuple(pair) if pair is not None else None for pair in out]


def _components():
    from ..components import plugins

    return plugins.default()
