"""Plots from run records (matplotlib, PNG and SVG)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import ConfigError

LABELLED_POINTS = 12


def _label(group: pd.DataFrame, varying: list[str]) -> str:
    parts = [str(group["method.name"].iloc[0])]
    for column in varying:
        value = group[column].iloc[0]
        if column != "config.method" and not (isinstance(value, float) and pd.isna(value)):
            parts.append(f"{column.rsplit('.', 1)[-1]}={value:g}" if isinstance(value, float)
                         else f"{column.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts)


def _summary(frame: pd.DataFrame, metric: str, sweep: str | None) -> pd.DataFrame:
    keys = [c for c in frame.columns if c.startswith("config.") and c != "config.train.seed"]
    varying = [c for c in keys if frame[c].dropna().map(repr).nunique() > 1]
    rows = []
    for _, group in frame.groupby(frame[keys].map(repr).agg("|".join, axis=1), sort=False):
        scores = group[metric].astype(float)
        rows.append({"label": _label(group, varying), "params": float(group["params.trainable"].iloc[0]),
                     "mean": scores.mean(), "std": scores.std(ddof=1) if len(scores) > 1 else 0.0,
                     "sweep": group[sweep].iloc[0] if sweep else None,
                     "size_mb": group["artifact.bytes"].astype(float).mean() / 1e6 if "artifact.bytes" in group else None,
                     "train_s": group["time.train_seconds"].astype(float).mean(), "n": len(scores)})
    return pd.DataFrame(rows)


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Rows not dominated by one with fewer (or equal) trainable params and a higher score."""
    ordered = points.sort_values(["params", "mean"], ascending=[True, False])
    front, best = [], float("-inf")
    for _, row in ordered.iterrows():
        if row["mean"] > best:
            front.append(row)
            best = row["mean"]
    return pd.DataFrame(front)


def _save(fig, folder: Path, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = [folder / f"{stem}.{suffix}" for suffix in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def write_plots(frame: pd.DataFrame, folder: Path, sweep: str | None = None) -> list[Path]:
    """pareto.{png,svg}; with ``sweep`` (a method/task setting, e.g. "r") also sweep.{png,svg}:
    score, artefact size and training time against that setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frame.empty:
        raise ConfigError("no successful run records to plot")
    mains = frame["task.main_score"].dropna().unique()
    if len(mains) != 1:
        raise ConfigError("plots need runs of tasks sharing one main score", "filter with --task")
    metric = f"scores.test.{mains[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    sweep_column = None
    if sweep:
        candidates = [f"config.method_config.{sweep}", f"config.task_config.{sweep}", f"config.train.{sweep}"]
        sweep_column = next((c for c in candidates if c in frame), None)
        if sweep_column is None:
            raise ConfigError(f"--sweep {sweep}: no record has that setting")
    summary = _summary(frame, metric, sweep_column)
    written = []

    fig, ax = plt.subplots(figsize=(6.4, 4.2) if len(summary) <= LABELLED_POINTS else (9.6, 6.3))
    ax.errorbar(summary["params"], summary["mean"], yerr=summary["std"], fmt="o", capsize=3)
    front = pareto_front(summary)
    # Every point labelled while a dozen or fewer; past that (a method zoo) the labels overlap
    # into a smear, so only the front, the points worth reading, is named.
    for _, row in (summary if len(summary) <= LABELLED_POINTS else front).iterrows():
        ax.annotate(row["label"], (row["params"], row["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.plot(front["params"], front["mean"], "--", color="tab:red", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log)")
    ax.set_ylabel(f"test {mains[0]}" + (" (mean ± std over seeds)" if (summary["n"] > 1).any() else ""))
    ax.legend()
    written += _save(fig, folder, "pareto")

    if sweep_column:
        points = summary.dropna(subset=["sweep"]).sort_values("sweep")
        if points["sweep"].nunique() < 2:
            raise ConfigError(f"--sweep {sweep}: fewer than two values of it among the runs")
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        for ax, column, label in zip(axes, ("mean", "size_mb", "train_s"),
                                     (f"test {mains[0]}", "artefact MB", "train time s")):
            ax.plot(points["sweep"], points[column], "o-")
            if points["sweep"].min() > 0 and points["sweep"].max() / points["sweep"].min() >= 8:
                ax.set_xscale("log", base=2)
            ax.set_xlabel(sweep)
            ax.set_ylabel(label)
        written += _save(fig, folder, f"sweep-{sweep}")
    return written
