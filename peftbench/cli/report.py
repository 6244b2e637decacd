"""`peftbench report`: run records into comparison tables (Markdown, HTML, CSV, JSON) with notes,
paired tests and plots."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import DEFAULT_RESULTS, app, components, err, out
from ..errors import ConfigError


def _deduplicated(frame):
    from ..records.record import set_aside_duplicates

    frame, duplicates = set_aside_duplicates(frame)
    if duplicates:
        err.print(f"set aside {duplicates} duplicate record(s): the same configuration and seed succeeded more "
                  "than once; the newest of each is reported", highlight=False, markup=False)
    return frame


def _report_frame(results: Path, include_failed: bool, task: str | None):
    """The records a report reads: duplicates and tuning trials set aside (each said on stderr)."""
    from ..results.analysis import load_results

    frame = load_results(results, ("success", "failed", "cancelled", "running", "died") if include_failed
                         else ("success",), deduplicate=False)
    frame = _without_trials(_deduplicated(frame))
    _note_record_problems(frame)
    if task is not None and not frame.empty and "task.name" in frame:
        frame = frame[frame["task.name"] == task]
    return frame


def _without_trials(frame):
    from ..results.report import set_aside_trials

    frame, trials = set_aside_trials(frame)
    if trials:
        err.print(f"{trials} tuning trial record(s) set aside: they score dev only; the report shows the finals "
                  "(each final's record says how it was tuned)", highlight=False, markup=False)
    return frame


def _note_record_problems(frame) -> None:
    from ..results.report import runs_without_scores

    missing = runs_without_scores(frame)
    if missing:
        err.print(f"{len(missing)} successful run(s) have no test score for their task's main score "
                  f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); their score cells are empty",
                  highlight=False, markup=False)


def _report_columns(frame, results: Path, table_name: str | None, columns: str | None, all_columns: bool):
    """(columns, title, sort_by, frame): a named layout, the user's fields, every column, or the compact default."""
    from ..api import Column
    from ..results.report import compact_columns, default_columns, settings_label

    if table_name:
        spec = components().tables.get(table_name)
        if spec.where is not None and not frame.empty:
            frame = frame[spec.where(frame)]
            if frame.empty:
                raise ConfigError(f"no run in {results} fits table {table_name!r} ({spec.description})")
        return list(spec.columns), spec.description, spec.sort_by, frame
    if columns:
        fields = [name.strip() for name in columns.split(",") if name.strip()]
        short = [name.rsplit(".", 1)[-1] for name in fields]
        # The last part of the path as header, unless two columns would share it.
        return [Column(head if short.count(head) == 1 else name, name, digits=None)
                for head, name in zip(short, fields)], None, None, frame
    if frame.empty:
        return [], None, None, frame
    if all_columns:
        return default_columns(frame), None, None, frame
    frame = frame.assign(settings=settings_label(frame))  # a derived field, shown in one column
    return compact_columns(frame), None, None, frame


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="folder of run records")] = DEFAULT_RESULTS,
    fmt: Annotated[str, typer.Option("--format", help="md, csv or json")] = "md",
    table_name: Annotated[Optional[str], typer.Option("--table", help="a named layout (see `peftbench list`)")] = None,
    columns: Annotated[Optional[str], typer.Option(help="comma-separated record fields to show")] = None,
    all_columns: Annotated[bool, typer.Option("--all-columns", help="every varying setting, score, cost and "
                                                                    "memory column (default: a compact table)")] = False,
    task: Annotated[Optional[str], typer.Option(help="only runs of this task")] = None,
    include_failed: Annotated[bool, typer.Option("--all", help="also failed, cancelled, running and died runs "
                                                             "(died: left running by a process that ended)")] = False,
    fields: Annotated[bool, typer.Option("--fields", help="list the record fields usable as columns")] = False,
    output: Annotated[Optional[Path], typer.Option("--out", help="write to this file instead of stdout")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="compare every row with the row where FIELD=VALUE, "
                                                         "e.g. method.name=full")] = None,
    test: Annotated[str, typer.Option(help="with --baseline: bootstrap (seeds x test examples), randomization, "
                                           "mcnemar (one run each, accuracy) or t (over seeds)")] = "bootstrap",
    adjust: Annotated[str, typer.Option(help="with --baseline: holm, bh (Benjamini-Hochberg) or none")] = "holm",
    metric: Annotated[Optional[str], typer.Option(help="with --baseline: the test score compared "
                                                       "(default: the task's main score)")] = None,
    resamples: Annotated[Optional[int], typer.Option(
        help="bootstrap resamples / randomization swaps of the paired tests and of the 'did not learn' floor test "
             "(default: 2000 and 1000)")] = None,
    strict: Annotated[bool, typer.Option(help="refuse to compare runs that differ in train, task, data, "
                                              "backbone or library settings")] = False,
    alpha: Annotated[float, typer.Option(help="significance level for best marks and paired tests")] = 0.05,
    groups: Annotated[bool, typer.Option("--groups", help="significance groups (rows sharing a letter are not told "
                                                          "apart by --test over all pairs, --adjust over them) and "
                                                          "the minimum detectable effect")] = False,
    show_stats: Annotated[bool, typer.Option("--stats", help="per configuration: n, mean, std, 95% CI of "
                                                             "every test score")] = False,
    html: Annotated[Optional[Path], typer.Option(help="also write a self-contained HTML report (tables, "
                                                      "interactive Pareto plots, learning curves) to this file")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="also write plots (PNG and SVG) into this folder")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="with --plot: also plot scores, size and time against "
                                                     "this setting, e.g. r")] = None,
) -> None:
    """Comparison tables (Markdown) from run records."""
    from ..api import Column
    from ..results.report import build_table, stats_table

    _check_options(fmt, resamples, groups and show_stats)
    frame = _report_frame(results, include_failed, task)
    if fields:
        for name in frame.columns:
            out.print(name, highlight=False)
        return
    cols, title, sort_by, frame = _report_columns(frame, results, table_name, columns, all_columns)
    if include_failed and not table_name and not columns:
        cols = [Column("status", "status"), *cols]
    options = {"test": test, "adjust": adjust, "metric": metric, "resamples": resamples, "strict": strict,
               "groups": groups}
    if show_stats:
        table, notes = stats_table(frame, strict=strict)
    else:
        table, notes = build_table(frame, cols, sort_by, require_fields=not table_name, alpha=alpha,
                                   baseline=baseline, compare_options=options)
    if baseline:  # one warning per confound where the user asked for a comparison
        _warn_confounds(notes)
    _write_report(frame, table, notes, title, fmt, output, html, plot, sweep)


def _warn_confounds(notes: list[str]) -> None:
    for line in notes:
        if line.startswith("confound: "):
            err.print(f"warning: {line}", highlight=False, markup=False)


def _check_options(fmt: str, resamples: int | None, groups_on_stats: bool = False) -> None:
    if groups_on_stats:  # --stats prints its own table, which has no place for the letters
        raise ConfigError("--groups adds a column to the comparison table, and --stats prints another table",
                          "drop --stats, or run the two separately")
    if fmt not in ("md", "csv", "json"):
        raise ConfigError(f"--format {fmt!r} is not md, csv or json")
    if resamples is not None and resamples < 1:  # 0 would otherwise read as "the default"
        raise ConfigError(f"--resamples {resamples}: a resampling test needs at least 1 resample",
                          "drop --resamples for the defaults (2000, and 1000 for the floor test)")


def _write_report(frame, table, notes: list[str], title: str | None, fmt: str, output: Path | None,
                  html: Path | None, plot: Path | None, sweep: str | None) -> None:
    """The table to stdout or --out, and the HTML report and plots where asked for; a folder that is
    read-only or full is one line naming the file."""
    try:
        _write_outputs(frame, table, notes, title, fmt, output, html, plot, sweep)
    except OSError as exc:
        from ..errors import ResultsError

        where = exc.filename or next((str(p) for p in (output, html, plot) if p), "the output")
        raise ResultsError(f"cannot write {where} ({exc.strerror or exc})",
                           "write the report into a folder you can write to (and that has room)") from None


def _write_outputs(frame, table, notes: list[str], title: str | None, fmt: str, output: Path | None,
                   html: Path | None, plot: Path | None, sweep: str | None) -> None:
    from ..results.report import provenance, render

    notes = [*notes, *provenance(frame)]
    if html:
        from ..results.html import write_html

        write_html(html, frame, table, notes, title)
        err.print(f"wrote {html}", highlight=False)
    if plot:
        from ..results.plots import write_plots

        for path in write_plots(frame, plot, sweep):
            err.print(f"wrote {path}", highlight=False)
    text = render(table, fmt, notes, title)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)
