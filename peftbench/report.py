"""Markdown comparison tables from a folder of run records.

Rows are configurations: runs that differ only in their seed are grouped,
numeric cells show the mean (and ``± std`` with the number of seeds when
there are several). The best value of each column with a known direction is
marked in bold.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .api import Column
from .errors import ConfigError

MB = 1e6  # storage in MB = 10^6 bytes (as S2 reports it)
MIB = 2**20


def default_columns(frame: pd.DataFrame) -> list[Column]:
    """method, task, backbone, every config key that varies, test scores and costs."""
    columns = [Column("method", "method.name"), Column("task", "task.name"), Column("backbone", "backbone.name")]
    config_cols = [c for c in frame.columns if c.startswith(("config.method_config.", "config.task_config.",
                                                              "config.train.")) and c != "config.train.seed"]
    for col in config_cols:
        # Shown when runs differ in it; a key only some methods have (e.g. a rank) counts once.
        if frame[col].dropna().map(repr).nunique() > 1:
            columns.append(Column(col.rsplit(".", 1)[-1], col, digits=None))
    directions: dict[str, bool] = {}
    for col in frame.columns:
        if col.startswith("task.greater_is_better."):
            directions.setdefault(col.rsplit(".", 1)[-1], bool(frame[col].dropna().iloc[0]) if frame[col].notna().any() else True)
    for col in sorted(c for c in frame.columns if c.startswith("scores.test.")):
        metric = col.rsplit(".", 1)[-1]
        columns.append(Column(f"test {metric}", col, "higher" if directions.get(metric, True) else "lower"))
    columns += [
        Column("trainable params", "params.trainable", "lower", digits=0),
        Column("size MB", "artifact.bytes", "lower", scale=1 / MB, digits=2),
        Column("time/epoch s", "time.epoch_mean_seconds", "lower", digits=1),
        Column("train time s", "time.train_seconds", "lower", digits=1),
    ]
    for col in sorted(c for c in frame.columns if c.startswith("inference.modes.") and c.endswith(".seconds")):
        mode = col.split(".")[2]
        columns.append(Column(f"test inference s ({mode})", col, "lower", digits=2))
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


def _group_key(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("config.") and c != "config.train.seed"]


def _fmt(value: float, digits: int | None) -> str:
    if digits is None:  # a setting: show it as written
        return str(int(value)) if float(value).is_integer() else f"{value:g}"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def build_table(frame: pd.DataFrame, columns: list[Column], sort_by: str | None = None,
                require_fields: bool = True) -> pd.DataFrame:
    """Group seeds, aggregate, format and mark the best value per column.

    With ``require_fields`` (user-chosen columns) a field no record has is an
    error; a named layout leaves such cells empty instead.
    """
    if frame.empty:
        raise ConfigError("no successful run records to report", "run `peftbench run ...` first, or pass --all")
    for column in columns if require_fields else ():
        if column.field not in frame.columns and (column.fallback is None or column.fallback not in frame.columns):
            raise ConfigError(f"column {column.header!r}: no record has the field {column.field!r}",
                              "see `peftbench report --fields` for the fields records have")
    keys = _group_key(frame)
    frame = frame.copy()
    frame["_group"] = frame[keys].map(repr).agg("|".join, axis=1) if keys else "all"
    rows: list[dict[str, Any]] = []
    numeric: dict[str, list[float | None]] = {c.header: [] for c in columns}
    for _, group in frame.groupby("_group", sort=False):
        row: dict[str, Any] = {}
        for column in columns:
            values = group[column.field] if column.field in group else pd.Series([None] * len(group))
            if values.isna().all() and column.fallback and column.fallback in group:
                values = group[column.fallback]
            present = values.dropna()
            if present.empty:
                row[column.header] = ""
                numeric[column.header].append(None)
            elif pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
                scaled = present.astype(float) * column.scale
                mean = scaled.mean()
                numeric[column.header].append(mean)
                text = _fmt(mean, column.digits)
                if len(scaled) > 1 and column.digits is not None:
                    text += f" ± {_fmt(scaled.std(ddof=1), column.digits)}"
                row[column.header] = text
            else:
                distinct = list(dict.fromkeys(",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                                              for v in present))
                row[column.header] = ", ".join(distinct)
                numeric[column.header].append(None)
        seeds = sorted(group["config.train.seed"].dropna().astype(int).tolist()) if "config.train.seed" in group else []
        row["seeds"] = len(seeds)
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in columns:
        values = numeric[column.header]
        known = [v for v in values if v is not None and not math.isnan(v)]
        if column.better is None or len(known) < 2 or len(set(known)) < 2:
            continue
        best = max(known) if column.better == "higher" else min(known)
        for i, value in enumerate(values):
            if value == best:
                table.loc[i, column.header] = f"**{table.loc[i, column.header]}**"
    if sort_by:
        order = sorted(range(len(rows)), key=lambda i: (numeric[sort_by][i] is None, numeric[sort_by][i] or 0))
        table = table.iloc[order].reset_index(drop=True)
    if (table["seeds"] <= 1).all():
        table = table.drop(columns="seeds")
    return table


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
        sizes = frame[size_cols].drop_duplicates().astype("Int64").astype(str).agg("/".join, axis=1)
        lines.append(f"examples train/dev/test: {'; '.join(dict.fromkeys(sizes))}")
    lines.append(f"runs: {len(frame)}; size MB = 10^6 bytes of the saved artefact; time/epoch excludes evaluation, "
                 "train time includes the per-epoch dev evaluation; "
                 "bold = best in column" + ("" if "config.train.seed" not in frame or frame["config.train.seed"].nunique() < 2
                                            else " by mean (not a significance test)"))
    return lines


def to_markdown(table: pd.DataFrame, notes: list[str], title: str | None = None) -> str:
    parts = [f"### {title}", ""] if title else []
    parts.append(table.to_markdown(index=False, disable_numparse=True))
    parts.append("")
    parts.extend(f"_{line}_  " for line in notes)
    return "\n".join(parts).rstrip() + "\n"
