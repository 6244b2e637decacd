"""One self-contained HTML file: the comparison table with its notes, interactive Pareto plots
(main test score against trainable parameters and against artefact size, seed std as error bars,
hover showing each configuration's settings and record folders), learning curves from every
run's per-epoch log, and the environment. plotly.js is inlined, so the file opens offline."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd

from .plots import LABELLED_POINTS
from ..records.record import EPOCHS_FILE
from .analysis import configuration_label, configurations, varying_columns

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
p.note { font-size: 0.85em; color: #555; margin: 0.2em 0; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
"""


def _table_html(table: pd.DataFrame) -> str:
    """The report table, its Markdown bold turned into <b>."""
    cells = table.astype(str).map(lambda text: re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text)))
    return cells.to_html(index=False, escape=False, border=0)


def _points(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per configuration: mean and std of the test metric, trainable params, artefact MB, and
    the hover text (settings, record folders)."""
    varying, rows = varying_columns(frame), []
    for group in configurations(frame):
        scores = group[f"scores.test.{metric}"].astype(float)
        label = configuration_label(group, varying)
        paths = "<br>".join(html.escape(str(p)) for p in group.get("record_path", pd.Series(dtype=str)))
        method = str(group["method.name"].iloc[0]) if "method.name" in group else label
        rows.append({"label": label, "method": method, "mean": scores.mean(),
                     "std": scores.std(ddof=1) if len(scores) > 1 else 0.0,
                     "params": float(group["params.trainable"].iloc[0]) if "params.trainable" in group else None,
                     "size_mb": (group["artifact.bytes"].astype(float).mean() / 1e6
                                 if "artifact.bytes" in group else None),
                     "hover": f"<b>{html.escape(label)}</b><br>{metric}: {scores.mean():.4f} (n={len(scores)})"
                              f"<br>{paths}"})
    return pd.DataFrame(rows)


# Per x axis: the plot's title part and the axis label.
_AXES = {"params": ("trainable parameters", "trainable parameters"),
         "size_mb": ("artefact size (MB)", "artefact size (MB, 10^6 bytes)")}
LEGEND_CURVES = 20


def _pareto_figure(points: pd.DataFrame, x: str, title: str, metric: str):
    import plotly.graph_objects as go

    shown = points.dropna(subset=[x])
    # Labels on the plot while they can be read; with many configurations (a method zoo) they
    # overlap into a smear, and the hover names each point instead.
    figure = go.Figure(go.Scatter(
        x=shown[x], y=shown["mean"], mode="markers+text" if len(shown) <= LABELLED_POINTS else "markers",
        text=shown["method"] if shown["method"].is_unique else shown["label"], textposition="top center",
        error_y={"type": "data", "array": shown["std"], "visible": True}, hovertext=shown["hover"],
        hoverinfo="text", marker={"size": 10}))
    figure.update_layout(title=title, xaxis={"title": _AXES[x][1], "type": "log"},
                         yaxis={"title": f"test {metric}"}, width=620, height=440, showlegend=False)
    return figure


def _groups_figure(points: pd.DataFrame, letters: dict[str, str], metric: str):
    """Each configuration's mean (seed std as error bars), best at the top, coloured by its first
    significance group and labelled with all its letters: rows sharing a letter are not told apart."""
    import plotly.graph_objects as go

    shown = points[points["label"].isin(letters)].sort_values("mean")
    group = [letters[label] for label in shown["label"]]
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
    colours = [palette[(ord(g[0]) - ord("a")) % len(palette)] if g else "#999999" for g in group]
    figure = go.Figure(go.Scatter(
        x=shown["mean"], y=shown["label"], mode="markers+text", text=group, textposition="middle right",
        error_x={"type": "data", "array": shown["std"], "visible": True}, hovertext=shown["hover"],
        hoverinfo="text", marker={"size": 11, "color": colours}))
    figure.update_layout(title=f"significance groups: test {metric} (a shared letter = not told apart)",
                         xaxis={"title": f"test {metric}"}, width=900, height=160 + 24 * len(shown), showlegend=False)
    return figure


def _curves_figure(frame: pd.DataFrame, metric: str):
    """Dev ``metric`` per epoch of every run (each stage's own epochs)."""
    import plotly.graph_objects as go

    figure, varying = go.Figure(), varying_columns(frame)
    for group in configurations(frame):
        label = configuration_label(group, varying)
        for _, row in group.iterrows():
            epochs = _epochs(Path(str(row.get("record_path", ""))))
            points = [(e["epoch"], e["dev_scores"][metric]) for e in epochs if metric in (e.get("dev_scores") or {})]
            if points:
                figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                            name=f"{label} seed {row.get('config.train.seed')}"))
    # A legend beside the plot squeezes it to nothing once names are long; below it, it is read
    # while short, and past that the hover names each curve.
    legend = len(figure.data) <= LEGEND_CURVES
    figure.update_layout(title=f"learning curves: dev {metric} per epoch", xaxis={"title": "epoch"},
                         yaxis={"title": f"dev {metric}"}, width=900,
                         height=440 + (22 * len(figure.data) if legend else 0), showlegend=legend,
                         legend={"orientation": "h", "yanchor": "top", "y": -0.15})
    return figure


def _epochs(run_dir: Path) -> list[dict]:
    path = run_dir / EPOCHS_FILE
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line) if line.strip() else None
        except (ValueError, RecursionError):  # a line a killed writer cut short: its curve point is left out
            continue
        if isinstance(entry, dict) and "epoch" in entry:
            entries.append(entry)
    return entries


def _environment(frame: pd.DataFrame) -> str:
    rows = []
    for column in sorted(c for c in frame.columns if c.startswith("environment.") and c != "environment.hostname"):
        values = list(dict.fromkeys(str(v) for v in frame[column].dropna()))
        if values:
            rows.append(f"<tr><th>{html.escape(column.split('.', 1)[1])}</th><td>{html.escape('; '.join(values))}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def write_html(path: Path, frame: pd.DataFrame, table: pd.DataFrame, notes: list[str], title: str | None) -> None:
    """The report as one file: nothing is fetched when it is opened."""
    from plotly.offline import get_plotlyjs

    parts = [f"<h1>{html.escape(title or 'peftbench report')}</h1>", _table_html(table)]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in notes]
    for task, runs in frame.groupby("task.name", sort=False) if "task.name" in frame else ():
        metric = str(runs["task.main_score"].dropna().iloc[0])
        points = _points(runs, metric)
        axes = [x for x in _AXES if points[x].fillna(0).gt(0).any()]  # runs that saved no artefact: no size plot
        figures = [_pareto_figure(points, x, f"{task}: test {metric} vs {_AXES[x][0]}", metric) for x in axes]
        if table.attrs.get("groups"):
            figures.insert(0, _groups_figure(points, table.attrs["groups"], metric))
        figures.append(_curves_figure(runs, metric))
        parts.append(f"<h2>{html.escape(str(task))}</h2><div class=\"plots\">")
        parts += [figure.to_html(full_html=False, include_plotlyjs=False) for figure in figures]
        parts.append("</div>")
    parts += ["<h2>Environment</h2>", _environment(frame)]
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title or 'peftbench report')}"
            f"</title><style>{_STYLE}</style><script>{get_plotlyjs()}</script></head><body>{''.join(parts)}"
            "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
