"""Markdown comparison tables from a folder of run records.

Rows are configurations: runs that differ only in their seed are grouped,
numeric cells show the mean (and ``± std`` with the number of seeds when
there are several). The best value of each column with a known direction is
marked in bold.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import pandas as pd

from . import significance
from ..api import Column
from ..errors import ConfigError
from .notes import merge_notes, setting_text as _setting, tuning_notes
from .predictions import missing as _absent

MB = 1e6  # storage in MB = 10^6 bytes (as S2 reports it)
MIB = 2**20


def varying_settings(frame: pd.DataFrame) -> list[str]:
    """The method/task/train setting columns (seed aside) in which runs differ; a key only some
    methods have (e.g. a rank) varies only if those runs disagree on it."""
    return [c for c in frame.columns if c.startswith(("config.method_config.", "config.task_config.", "config.train."))
            and c != "config.train.seed" and frame[c].dropna().map(repr).nunique() > 1]


def _score_column(frame: pd.DataFrame, metric: str) -> Column:
    """A test-score column, bold in the direction the task declared (higher unless it says otherwise)."""
    field = f"task.greater_is_better.{metric}"
    declared = frame[field].dropna() if field in frame else pd.Series(dtype=bool)
    higher = bool(declared.iloc[0]) if not declared.empty else True
    return Column(f"test {metric}", f"scores.test.{metric}", "higher" if higher else "lower")


def default_columns(frame: pd.DataFrame) -> list[Column]:
    """method, task, backbone, every config key that varies, test scores and costs."""
    columns = [Column("method", "method.name"), Column("task", "task.name"), Column("backbone", "backbone.name")]
    columns += [Column(col.rsplit(".", 1)[-1], col, digits=None) for col in varying_settings(frame)]
    columns.append(Column("effective batch", "effective_batch_size", digits=None))
    for col in sorted(c for c in frame.columns if c.startswith("scores.test.")):
        columns.append(_score_column(frame, col.rsplit(".", 1)[-1]))
    columns += [
        Column("trainable params", "params.trainable", "lower", digits=0),
        Column("size MB", "artifact.bytes", "lower", scale=1 / MB, digits=2),
        Column("time/epoch s", "time.epoch_mean_seconds", "lower", digits=1),
        Column("train time s", "time.train_seconds", "lower", digits=1),
    ]
    for col in sorted(c for c in frame.columns if c.startswith("inference.modes.") and c.endswith(".seconds")):
        mode = col.split(".")[2]
        columns.append(Column(f"test inference s ({mode})", col, "lower", digits=2))
    if "energy.joules" in frame and frame["energy.joules"].notna().any():
        columns.append(Column("energy kWh", "energy.joules", "lower", scale=1 / 3.6e6, digits=4))
    if "data.unk_token_rate.train" in frame and frame["data.unk_token_rate.train"].notna().any():
        columns.append(Column("[UNK] % (train)", "data.unk_token_rate.train", scale=100, digits=1))
    if "memory.cuda_max_reserved_bytes" in frame and frame["memory.cuda_max_reserved_bytes"].notna().any():
        columns.append(Column("peak GPU MiB (torch reserved)", "memory.cuda_max_reserved_bytes", "lower",
                              scale=1 / MIB, digits=0))
        columns.append(Column("peak GPU MiB (NVML)", "memory.nvml_process_peak_bytes", "lower", scale=1 / MIB, digits=0))
    else:
        columns.append(Column("peak RSS MiB", "memory.cpu_peak_rss_bytes", "lower", scale=1 / MIB, digits=0))
    # Failed runs may lack whole sections (no params when the backbone never loaded).
    return [c for c in columns if c.field in frame.columns]


def settings_label(frame: pd.DataFrame) -> pd.Series:
    """Per run, the settings that tell it from the other runs (seed aside), e.g. ``r=8 lr=0.0005``."""
    varying = varying_settings(frame)

    def label(row: pd.Series) -> str:
        return " ".join(f"{c.rsplit('.', 1)[-1]}={_setting(row[c])}" for c in varying
                        if not (isinstance(row[c], float) and math.isnan(row[c])))

    return frame.apply(label, axis=1) if varying else pd.Series([""] * len(frame), index=frame.index)


def compact_columns(frame: pd.DataFrame) -> list[Column]:
    """The default table: what was compared and what it scored and cost, in few columns. Its
    ``settings`` column reads the frame's ``settings`` field (``settings_label``), when it has one.
    ``--all-columns`` shows every varying setting, score, cost and memory figure instead."""
    columns = [Column("method", "method.name"), Column("task", "task.name"), Column("backbone", "backbone.name")]
    if "settings" in frame and frame["settings"].astype(bool).any():
        columns.append(Column("settings", "settings"))
    mains = dict.fromkeys(frame["task.main_score"].dropna()) if "task.main_score" in frame else {}
    columns += [_score_column(frame, metric) for metric in mains]
    if "effective_batch_size" in frame and frame["effective_batch_size"].dropna().nunique() > 1:
        columns.append(Column("effective batch", "effective_batch_size", digits=None))
    columns += [
        Column("trainable params", "params.trainable", "lower", digits=0),
        Column("size MB", "artifact.bytes", "lower", scale=1 / MB, digits=2),
        Column("s/epoch", "time.epoch_mean_seconds", "lower", digits=1),
    ]
    return [c for c in columns if c.field in frame.columns]


def set_aside_trials(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Tuning trials (scored on dev only) left out of a report of the finals; and how many."""
    if frame.empty or "tuning.role" not in frame:
        return frame, 0
    trial = frame["tuning.role"] == "trial"
    return frame[~trial].copy(), int(trial.sum())


def runs_without_scores(frame: pd.DataFrame) -> list[str]:
    """Run ids of successful records with no test value for their task's main score."""
    if frame.empty or "task.main_score" not in frame:
        return []
    statuses = frame["status"] if "status" in frame else ["success"] * len(frame)
    missing = []
    for position, (run_id, status, main) in enumerate(zip(frame["run_id"], statuses, frame["task.main_score"])):
        column = f"scores.test.{main}"
        if status == "success" and (column not in frame or pd.isna(frame[column].iat[position])):
            missing.append(str(run_id))
    return missing


def _fmt(value: float, digits: int | None) -> str:
    if digits is None:  # a setting: show it as written
        return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1e4 else (
            str(int(value)) if float(value).is_integer() else f"{value:.6g}")
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _welch_p(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:  # no spread at all: the test is undefined
        return 0.0 if a[0] != b[0] else 1.0
    return significance.welch_t_test(a, b)


def _cell(values: list, column: Column) -> tuple[str, float | None, list[float]]:
    """One group's cell: (text, mean or None, the scaled samples)."""
    present = [v for v in values if not _absent(v)]
    if not present:
        return "", None, []
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        scaled = [float(v) * column.scale for v in present]
        mean = statistics.fmean(scaled)
        text = _fmt(mean, column.digits)
        if len(set(scaled)) > 1:
            text += f" ± {_fmt(statistics.stdev(scaled), column.digits)}"
        return text, mean, scaled
    distinct = dict.fromkeys(",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in present)
    return ", ".join(distinct), None, []


def _aggregate(groups: list[pd.DataFrame], columns: list[Column]):
    """Rows of cells, plus per column the group means and samples (for best marks and tests)."""
    rows: list[dict[str, Any]] = []
    numeric: dict[str, list[float | None]] = {c.header: [] for c in columns}
    samples: dict[str, list[list[float]]] = {c.header: [] for c in columns}
    for group in groups:
        row: dict[str, Any] = {}
        for column in columns:
            values = group[column.field].tolist() if column.field in group else []
            if all(_absent(v) for v in values) and column.fallback and column.fallback in group:
                values = group[column.fallback].tolist()
            row[column.header], mean, scaled = _cell(values, column)
            numeric[column.header].append(mean)
            samples[column.header].append(scaled)
        row["seeds"] = int(group["config.train.seed"].nunique()) if "config.train.seed" in group else 1
        rows.append(row)
    return rows, numeric, samples


def _mark_best(table: pd.DataFrame, columns: list[Column], numeric, samples, alpha: float,
               tasks: list[Any]) -> bool:
    """Bold the best of each column with a direction (when it beats the runner-up), among the rows
    of one task at a time (scores of two tasks do not compare); True if any best was within the
    noise (marked †)."""
    within_noise = False
    for task in dict.fromkeys(tasks):
        rows = [i for i, t in enumerate(tasks) if t == task]
        for column in columns:
            if column.better is not None:
                within_noise |= _mark_column_best(table, column, [numeric[column.header][i] for i in rows],
                                                  [samples[column.header][i] for i in rows], rows, alpha)
    return within_noise


def _mark_column_best(table: pd.DataFrame, column: Column, values: list, samples: list, rows: list[int],
                      alpha: float) -> bool:
    known = sorted({v for v in values if v is not None and not math.isnan(v)}, reverse=column.better == "higher")
    if len(known) < 2:
        return False
    best = [i for i, v in enumerate(values) if v == known[0]]
    runner_up = next(i for i, v in enumerate(values) if v == known[1])
    p = _welch_p(samples[best[0]], samples[runner_up])
    mark = "**{}**" if p is None or p < alpha else "{} †"
    for i in best:
        table.loc[rows[i], column.header] = mark.format(table.loc[rows[i], column.header])
    return p is not None and p >= alpha


def build_table(frame: pd.DataFrame, columns: list[Column], sort_by: str | None = None,
                require_fields: bool = True, alpha: float = 0.05, baseline: str | None = None,
                compare_options: dict[str, Any] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Group seeds, aggregate, format and mark the best value per column. Returns (table, notes).

    With several seeds a best value is bold only when a Welch t-test says it
    differs from the runner-up at ``alpha``; otherwise it is marked † (best mean,
    within the noise). ``baseline`` ("field=value", e.g. "method.name=full")
    adds ``compare``'s columns against that configuration (``compare_options``
    are its test, metric, adjustment, ...). Every table lists the confounds under
    it (``compare_options["strict"]``: a confound is an error). With
    ``require_fields`` (user-chosen columns) a field no record has is an error; a
    named layout leaves such cells empty.
    """
    if frame.empty:
        raise ConfigError("no successful run records to report", "run `peftbench run ...` first, or pass --all")
    for column in columns if require_fields else ():
        if column.field not in frame.columns and (column.fallback is None or column.fallback not in frame.columns):
            raise ConfigError(f"column {column.header!r}: no record has the field {column.field!r}",
                              "see `peftbench report --fields` for the fields records have")
    from .analysis import check_confounds, configurations

    options = dict(compare_options or {}, alpha=alpha)
    # A comparison runs the confound check itself.
    confound_lines = [] if baseline else check_confounds(frame, options.get("strict", False))
    groups = configurations(frame)
    rows, numeric, samples = _aggregate(groups, columns)
    table = pd.DataFrame(rows)
    tasks = [group["task.name"].iat[0] if "task.name" in group else None for group in groups]
    within_noise = _mark_best(table, columns, numeric, samples, alpha, tasks)
    if (table["seeds"] > 1).any():
        notes = [f"cells: mean ± std over seeds; bold = best and different from the runner-up "
                 f"(Welch t-test, alpha={alpha})" + ("; † = best mean but within the noise" if within_noise else "")]
    else:
        notes = ["bold = best in column (single runs: no significance test possible; run several seeds)"]
    if len(set(tasks)) > 1:
        notes.append("best marks compare the rows of one task at a time")
    if baseline:
        notes += _add_comparison(frame, table, baseline, options, confound_lines)
    if options.get("groups"):
        from .groups import add_group_column

        notes += add_group_column(frame, table, options)
    notes += _add_floor_column(frame, groups, table, alpha, options.get("resamples"))
    from .analysis import varying_columns

    notes += tuning_notes(groups, varying_columns(frame))
    notes += merge_notes(groups, varying_columns(frame))
    notes += [f"confound: {line}" for line in confound_lines]
    if sort_by and all(value is None for value in numeric[sort_by]):  # a text column, e.g. the method
        table = table.iloc[sorted(range(len(rows)), key=lambda i: str(table[sort_by].iloc[i]))].reset_index(drop=True)
    elif sort_by:
        order = sorted(range(len(rows)), key=lambda i: (numeric[sort_by][i] is None, numeric[sort_by][i] or 0))
        table = table.iloc[order].reset_index(drop=True)
    if (table["seeds"] <= 1).all():
        table = table.drop(columns="seeds")
    return table, notes


def _add_comparison(frame: pd.DataFrame, table: pd.DataFrame, baseline: str, options: dict[str, Any],
                    confound_lines: list[str]) -> list[str]:
    """Columns of ``compare`` against the baseline configuration: Δ with its interval, raw and
    adjusted p. Returns the notes that explain them; ``confound_lines`` gets compare's confounds."""
    from .analysis import compare

    result = compare(frame, baseline, **{k: v for k, v in options.items() if k != "groups"})
    confound_lines.extend(result.attrs["confounds"])
    metric, test, adjust = result["metric"].iloc[0], result["test"].iloc[0], result.attrs["adjust"]
    level = int(result.attrs["confidence"] * 100)
    table[f"test {metric} {level}% CI"] = [_span(lo, hi) for lo, hi in zip(result["ci_low"], result["ci_high"])]
    table[f"Δ {metric} vs baseline"] = ["baseline" if b else ("" if _absent(d) else f"{d:+.4f}")
                                        for b, d in zip(result["baseline"], result["delta"])]
    if result["delta_low"].notna().any():
        table[f"{level}% CI of Δ"] = [_span(lo, hi) for lo, hi in zip(result["delta_low"], result["delta_high"])]
    table[f"p ({test})"] = ["" if _absent(p) else f"{p:.3g}" for p in result["p"]]
    table[f"p adj. ({adjust})"] = ["" if _absent(p) else f"{p:.3g}" + (" *" if sig else "")
                                   for p, sig in zip(result["p_adjusted"], result["significant"])]
    tested = result[result["p"].notna()]
    notes = [f"Δ = row - baseline test {metric}; p: {tested['note'].iloc[0] if len(tested) else _TEST_NAMES[test]}; "
             f"p adj.: {_ADJUST_NAMES[adjust]} over the {len(tested)} row(s) compared; "
             f"* = significant at alpha={result.attrs['alpha']} after adjustment"]
    notes += [f"not tested: {label}: {note}" for label, note, p, b in
              zip(result["configuration"], result["note"], result["p"], result["baseline"]) if _absent(p) and not b]
    return notes


FLOOR_HEADER = "vs majority floor"
DID_NOT_LEARN = "did not learn"


def _add_floor_column(frame: pd.DataFrame, groups: list[pd.DataFrame], table: pd.DataFrame,
                      alpha: float, resamples: int | None = None) -> list[str]:
    """The column that says whether each configuration learned anything: its test main score
    minus the majority floor, or ``did not learn`` where a one-sided test over the test examples
    (seeds pooled) does not put it above that floor at ``alpha``. Returns the notes naming them."""
    from .analysis import configuration_label, floor_checks, varying_columns

    if "task.main_score" not in frame or "record_path" not in frame:
        return []
    resamples = resamples or significance.FLOOR_RESAMPLES
    checks = floor_checks(frame, alpha=alpha, resamples=resamples, groups=groups)
    if all(check.learned is None and not check.loss_never_fell for check in checks):
        return []
    cells, notes, varying = [], [], varying_columns(frame)
    for group, check in zip(groups, checks):
        label = configuration_label(group, varying)
        if check.learned is None:
            cells.append("")
        elif check.learned:
            cells.append(f"{check.delta:+.4f}")
        else:
            cells.append(f"{DID_NOT_LEARN} ({check.delta:+.4f}, p {check.p:.2g})")
            main = group["task.main_score"].iat[0]
            notes.append(f"{DID_NOT_LEARN}: {label}: test {main} {check.floor + check.delta:.4f} does not beat the "
                         f"majority floor {check.floor:.4f} (p {check.p:.2g}, {check.note})")
        if check.loss_never_fell:
            notes.append(f"training loss never fell below its first value: {label} (seed "
                         f"{', '.join(map(str, check.loss_never_fell))})")
    table[FLOOR_HEADER] = cells
    tested = [c for c in checks if c.learned is not None]
    if tested:
        notes.insert(0, f"{FLOOR_HEADER}: test main score minus the score of the task's trivial predictor (its "
                        f"majority floor); '{DID_NOT_LEARN}' = not above it at alpha={alpha}, one-sided "
                        f"bootstrap over the test examples with the seeds pooled, {resamples} resamples")
    return notes


_TEST_NAMES = {"bootstrap": "paired bootstrap", "randomization": "approximate randomization",
               "mcnemar": "exact McNemar", "t": "paired t-test over shared seeds"}
_ADJUST_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "not adjusted"}


def _span(low: Any, high: Any) -> str:
    return "" if _absent(low) or _absent(high) else f"[{low:.4f}, {high:.4f}]"


def stats_table(frame: pd.DataFrame, confidence: float = 0.95, strict: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Long form: per configuration and test score, n, mean, std and the t interval over seeds;
    for the task's main score also the bootstrap interval over seeds x examples (where the runs'
    predictions are at hand). Returns (table, notes), the confounds among the notes."""
    from .analysis import bootstrap_intervals, check_confounds, configuration_label, configurations, varying_columns

    if frame.empty:
        raise ConfigError("no successful run records to report")
    confound_lines = check_confounds(frame, strict)
    groups, varying = configurations(frame), varying_columns(frame)
    metrics = sorted(c for c in frame.columns if c.startswith("scores.test."))
    mains = set(frame["task.main_score"].dropna()) if "task.main_score" in frame else set()
    level = int(confidence * 100)
    boot = bootstrap_intervals(frame, next(iter(mains)), confidence) if len(mains) == 1 else [None] * len(groups)
    rows = []
    for group, interval in zip(groups, boot):
        for metric in metrics:
            values = group[metric].dropna().astype(float)
            n, mean = len(values), values.mean()
            std = values.std(ddof=1) if n > 1 else float("nan")
            low, high = significance.t_interval(values.tolist(), confidence) if n > 1 else (math.nan, math.nan)
            row = {"configuration": configuration_label(group, varying), "metric": metric.rsplit(".", 1)[-1],
                   "n": n, "mean": round(mean, 4), "std": round(std, 4),
                   f"t CI{level} low": round(low, 4), f"t CI{level} high": round(high, 4)}
            if metric.rsplit(".", 1)[-1] in mains and interval is not None:
                row[f"bootstrap CI{level} low"], row[f"bootstrap CI{level} high"] = (round(v, 4) for v in interval)
            rows.append(row)
    notes = [f"t CI: t-based {level}% interval over seeds (n = seeds); bootstrap CI: percentile interval "
             "resampling seeds and test examples (main score, where predictions were saved)"]
    return pd.DataFrame(rows), notes + [f"confound: {line}" for line in confound_lines]


def provenance(frame: pd.DataFrame) -> list[str]:
    """Which backbone, data and device produced the numbers: printed under every table."""
    lines = []
    for col, label in (("backbone.info.source", "backbone"), ("data.source", "data"),
                       ("environment.device", "device")):
        if col in frame:
            values = list(dict.fromkeys(str(v) for v in frame[col].dropna()))
            if values:
                lines.append(f"{label}: {'; '.join(values)}")
    size_cols = [c for c in ("data.sizes.train", "data.sizes.dev", "data.sizes.test") if c in frame]
    if size_cols:
        sizes = frame[size_cols].drop_duplicates().map(lambda v: "?" if pd.isna(v) else str(int(v))).agg(
            "/".join, axis=1)
        lines.append(f"examples train/dev/test: {'; '.join(dict.fromkeys(sizes))}")
    lines.append(f"runs: {len(frame)}; size MB = 10^6 bytes of the saved artefact; time/epoch excludes evaluation, "
                 "train time includes the per-epoch dev evaluation")
    return lines


def render(table: pd.DataFrame, fmt: str, notes: list[str], title: str | None = None) -> str:
    """The table as md (with its notes), csv or json."""
    if fmt == "md":
        return to_markdown(table, notes, title)
    if fmt == "csv":
        return table.to_csv(index=False)
    return table.to_json(orient="records", force_ascii=False, indent=2)


def to_markdown(table: pd.DataFrame, notes: list[str], title: str | None = None) -> str:
    parts = [f"### {title}", ""] if title else []
    parts.append(table.astype(object).where(table.notna(), "").to_markdown(index=False, disable_numparse=True))
    parts.append("")
    parts.extend(f"_{line}_  " for line in notes)
    return "\n".join(parts).rstrip() + "\n"
