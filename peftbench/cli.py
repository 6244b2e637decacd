"""Command line: a thin Typer layer over runner, records and report."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, PeftbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fair, reproducible benchmarks of full fine-tuning vs parameter-efficient methods.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect task data.")
app.add_typer(data_app, name="data")
suite_app = typer.Typer(no_args_is_help=True, help="Run suites: grids x seeds from a TOML file.")
app.add_typer(suite_app, name="suite")

out = Console()
err = Console(stderr=True)

DEFAULT_RESULTS = Path("results")


def _components():
    from . import plugins

    return plugins.default()


def _quiet_libraries() -> None:
    # Library chatter ("Some weights were not initialized...") would bury peftbench's own output.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    import logging

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    logging.getLogger("adapters").setLevel(logging.ERROR)


@app.command("list")
def list_components(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Methods, tasks, backbones and report tables, with their plugin and settings."""
    from .config import TrainConfig, describe_fields

    comps = _components()
    listing = {}
    for kind, registry in (("methods", comps.methods), ("tasks", comps.tasks), ("backbones", comps.backbones)):
        listing[kind] = [
            {"name": e.name, "plugin": e.source, "description": e.component.description,
             "settings": [dict(zip(("name", "type", "default"), row)) for row in describe_fields(e.component.Config)]}
            for e in registry
        ]
    for kind, registry in (("tables", comps.tables), ("executors", comps.executors)):
        listing[kind] = [{"name": e.name, "plugin": e.source, "description": e.component.description}
                         for e in registry]
    listing["train settings"] = [dict(zip(("name", "type", "default"), row)) for row in describe_fields(TrainConfig)]
    if as_json:
        out.print_json(json.dumps(listing))
        return
    for kind in ("methods", "tasks", "backbones", "tables", "executors"):
        table = Table(title=kind, title_justify="left", show_lines=False)
        with_settings = kind in ("methods", "tasks")
        for header in ("name", "plugin", "description", *(["settings (--set key=value)"] if with_settings else [])):
            table.add_column(header, overflow="fold")
        for item in listing[kind]:
            settings = ", ".join(f"{s['name']}={s['default']}" for s in item.get("settings", []))
            table.add_row(item["name"], item["plugin"], item["description"], *([settings] if with_settings else []))
        out.print(table)
        if kind == "backbones":
            out.print("Any other --backbone value goes to the plugins' resolve_backbone hook "
                      "(built in: a Hugging Face hub id or a local model directory).")
    out.print("train settings (any run): " + ", ".join(f"{s['name']}={s['default']}" for s in listing["train settings"]))


@app.command()
def run(
    method: Annotated[str, typer.Option("--method", "-m", help="method name (see `peftbench list`)")],
    task: Annotated[str, typer.Option("--task", "-t", help="task name (see `peftbench list`)")],
    backbone: Annotated[Optional[str], typer.Option(help="backbone name, hub id or local dir; default: the task's")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="key=value, e.g. r=8, lr=5e-4, epochs=3")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count params and artefact size; no data, no weights")] = False,
    results: Annotated[Path, typer.Option(help="folder for run records")] = DEFAULT_RESULTS,
    mixed_precision: Annotated[Optional[str], typer.Option(help="no, fp16 or bf16 (same as --set mixed_precision=)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or logs")] = False,
    match_params: Annotated[Optional[int], typer.Option(help="choose the method's size setting (LoRA r, adapter "
                                                             "bottleneck) closest to this many method params "
                                                             "(head excluded)")] = None,
) -> None:
    """Train, evaluate and measure one configuration; write its run record."""
    from . import runner
    from .progress import Progress

    _quiet_libraries()
    sets = list(set_ or [])
    if mixed_precision:
        sets.append(f"mixed_precision={mixed_precision}")
    comps = _components()
    if match_params is not None:
        resolved = runner.match_params(comps, method, task, backbone, sets, match_params)
        b = resolved.budget
        out.print(f"budget {b['target']:,}: {b['setting']}={b['value']} gives {b['achieved']:,} method params "
                  f"({100 * b['deviation']:+.2f}%)", highlight=False)
    else:
        resolved = runner.resolve(comps, method, task, backbone, sets)
    if dry_run:
        _print_dry_run(resolved, runner.dry_run(resolved))
        return
    with Progress(err, quiet=quiet) as progress:
        record, path = runner.run(comps, resolved, results, progress)
    main = record["task"]["main_score"]
    test = record["scores"].get("test", {})
    out.print(f"run {record['run_id']}: test {main} {test.get(main, float('nan')):.4f}, "
              f"trainable params {record['params']['trainable']:,}, record {path}")


def _print_dry_run(resolved, stages: list[dict]) -> None:
    cfg = resolved.config
    out.print(f"dry run: method {cfg.method}, task {cfg.task}, backbone {cfg.backbone} "
              f"(architecture built from its config, no weights, no data); config hash {cfg.hash}", highlight=False)
    for row in stages:
        p = row["params"]
        out.print(
            f"[bold]{row['stage']}[/]: trainable params {p['trainable']:,} = adapter {p['adapter']:,} "
            f"+ head {p['head']:,} + backbone {p['backbone_trainable']:,}; model total {p['total']:,} "
            f"({100 * p['trainable'] / p['total']:.3f}% trainable)\n"
            f"  saved artefact: {row['artifact_tensor_bytes']:,} bytes of tensors "
            f"= {row['artifact_tensor_bytes'] / 1e6:.2f} MB (10^6 B) = {row['artifact_tensor_bytes'] / 2**20:.2f} MiB"
            + (f"\n  auxiliary (trained, not saved): {p['auxiliary']:,} params" if p.get("auxiliary") else ""),
            highlight=False)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="folder of run records")] = DEFAULT_RESULTS,
    fmt: Annotated[str, typer.Option("--format", help="md, csv or json")] = "md",
    table_name: Annotated[Optional[str], typer.Option("--table", help="a named layout (see `peftbench list`)")] = None,
    columns: Annotated[Optional[str], typer.Option(help="comma-separated record fields to show")] = None,
    task: Annotated[Optional[str], typer.Option(help="only runs of this task")] = None,
    include_failed: Annotated[bool, typer.Option("--all", help="also failed/cancelled runs")] = False,
    fields: Annotated[bool, typer.Option("--fields", help="list the record fields usable as columns")] = False,
    output: Annotated[Optional[Path], typer.Option("--out", help="write to this file instead of stdout")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="paired comparison against the row where FIELD=VALUE, "
                                                         "e.g. method.name=full")] = None,
    alpha: Annotated[float, typer.Option(help="significance level for best marks and paired tests")] = 0.05,
    show_stats: Annotated[bool, typer.Option("--stats", help="per configuration: n, mean, std, 95% CI of "
                                                             "every test score")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="also write plots (PNG and SVG) into this folder")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="with --plot: also plot scores, size and time against "
                                                     "this setting, e.g. r")] = None,
) -> None:
    """Comparison tables (Markdown) from run records."""
    from . import records
    from .api import Column
    from .report import build_table, default_columns, provenance, stats_table, to_markdown

    if fmt not in ("md", "csv", "json"):
        raise ConfigError(f"--format {fmt!r} is not md, csv or json")
    statuses = ("success", "failed", "cancelled") if include_failed else ("success",)
    frame = records.load_frame(results, statuses)
    if fields:
        for name in frame.columns:
            out.print(name, highlight=False)
        return
    if task is not None and not frame.empty:
        frame = frame[frame["task.name"] == task]
    title = None
    sort_by = None
    if table_name:
        spec = _components().tables.get(table_name)
        cols = list(spec.columns)
        title, sort_by = spec.description, spec.sort_by
        if spec.where is not None and not frame.empty:
            frame = frame[spec.where(frame)]
            if frame.empty:
                raise ConfigError(f"no run in {results} fits table {table_name!r} ({spec.description})")
    elif columns:
        fields = [name.strip() for name in columns.split(",") if name.strip()]
        short = [name.rsplit(".", 1)[-1] for name in fields]
        # The last part of the path as header, unless two columns would share it.
        cols = [Column(head if short.count(head) == 1 else name, name, digits=None)
                for head, name in zip(short, fields)]
    else:
        cols = default_columns(frame) if not frame.empty else []
    if include_failed and not table_name and not columns:
        cols = [Column("status", "status"), *cols]
    if show_stats:
        table, notes = stats_table(frame), ["t-based 95% confidence intervals over seeds (n = seeds)"]
    else:
        table, notes = build_table(frame, cols, sort_by, require_fields=not table_name, alpha=alpha,
                                   baseline=baseline)
    if plot:
        from .plots import write_plots

        for path in write_plots(frame, plot, sweep):
            err.print(f"wrote {path}")
    if fmt == "md":
        text = to_markdown(table, [*notes, *provenance(frame)], title)
    elif fmt == "csv":
        text = table.to_csv(index=False)
    else:
        text = table.to_json(orient="records", force_ascii=False, indent=2)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@data_app.command("check")
def data_check(
    task: Annotated[str, typer.Argument(help="task name")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="task settings, e.g. data_dir=PATH")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="also encode with this backbone's tokenizer and "
                                                         "report what encoding loses (truncation)")] = None,
) -> None:
    """Load a task's data and print what the loader found, per split."""
    from .config import apply_sets, parse_sets

    _quiet_libraries()
    comps = _components()
    task_obj = comps.tasks.get(task)
    cfg = apply_sets({"task": task_obj.default_config()}, parse_sets(list(set_ or [])))["task"]
    splits = task_obj.load(cfg)
    per_split: dict[str, dict[str, object]] = {name: {"examples": len(examples)} for name, examples in splits.items()}
    other = {}
    for key, value in splits.info.items():
        if isinstance(value, dict) and set(value) == set(per_split) and all(isinstance(v, dict) for v in value.values()):
            for split, counts in value.items():
                per_split[split].update(counts)
        else:
            other[key] = value
    if backbone:
        tokenizer = comps.resolve_backbone(backbone).load(task_obj.head(cfg)).tokenizer
        for split, examples in splits.items():
            encoded = task_obj.encode(examples, tokenizer, cfg)
            per_split[split].update(task_obj.encoding_report(examples, encoded, cfg))
            per_split[split]["max tokens"] = max((len(e["input_ids"]) for e in encoded), default=0)
    table = Table(title=f"{task}: {splits.info.get('source', '')}", title_justify="left")
    table.add_column("")
    for split in per_split:
        table.add_column(split, justify="right")
    rows = list(dict.fromkeys(k for counts in per_split.values() for k in counts))
    for row in rows:
        table.add_row(row, *(f"{per_split[s].get(row, 0):,}" if isinstance(per_split[s].get(row, 0), int)
                             else str(per_split[s][row]) for s in per_split))
    out.print(table)
    for key, value in other.items():
        if key != "source":
            out.print(f"{key}: {value}", highlight=False)


@suite_app.command("run")
def suite_run(
    file: Annotated[Path, typer.Argument(help="suite file (TOML)")],
    results: Annotated[Path, typer.Option(help="folder for run records")] = DEFAULT_RESULTS,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the plan (runs, config hashes, state) only")] = False,
    rerun_failed: Annotated[bool, typer.Option("--rerun-failed", help="run again the runs whose record failed")] = False,
    executor: Annotated[str, typer.Option(help="how runs are executed (see executors in `peftbench list`)")] = "local",
    devices: Annotated[Optional[str], typer.Option(help="GPU ids, one run at a time on each, e.g. 0,1")] = None,
) -> None:
    """Expand a suite and run what is not done yet; keeps going past failures; safe to re-run."""
    import fcntl

    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

    from . import suite
    from .executor import Job

    comps = _components()
    description, planned = suite.expand(file, comps)
    states = suite.run_states(results) if results.exists() else {}
    table = Table(title=f"{file}: {description}", title_justify="left")
    for header in ("#", "block", "grid point", "config hash", "state"):
        table.add_column(header, overflow="fold")
    todo = []
    for number, run in enumerate(planned, 1):
        state = states.get(run.hash, "todo")
        will_run = state in ("todo", "cancelled") or (state == "failed" and rerun_failed)
        if will_run:
            todo.append(run)
        label = {"success": "done", "cancelled": "interrupted (re-run)",
                 "failed": "failed" + (" (re-run)" if rerun_failed else " (skip; --rerun-failed)")}.get(state, state)
        table.add_row(str(number), run.block, " ".join(run.point), run.hash, label)
    out.print(table)
    out.print(f"{len(planned)} runs: {sum(s == 'success' for s in map(states.get, (r.hash for r in planned)))} done, "
              f"{len(todo)} to run", highlight=False)
    if dry_run or not todo:
        return
    from . import records

    records.ensure_writable(results)
    lock_file = (results / ".suite.lock").open("w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"another suite is running on {results}",
                          "wait for it, or use another --results folder") from None
    runner_exec = comps.executors.get(executor)
    jobs = [Job(run.hash, tuple(run.cli_args(results)), results / "suite-logs" / f"{run.hash}.log") for run in todo]
    failures: list[str] = []
    with RichProgress(TextColumn("[bold]suite"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=err) as bar:
        overall = bar.add_task("", total=len(jobs))

        def on_start(job: Job) -> None:
            bar.update(overall, description=f"running {job.key}")

        def on_done(job: Job, code: int) -> None:
            bar.advance(overall)
            if code != 0:
                failures.append(job.key)
                err.print(f"run {job.key} failed (exit {code}); its log: {job.log}", highlight=False)

        runner_exec.execute(jobs, on_start, on_done, devices.split(",") if devices else None)
    out.print(f"suite finished: {len(jobs) - len(failures)} succeeded, {len(failures)} failed"
              + (" (re-run with --rerun-failed after fixing)" if failures else ""), highlight=False)
    if failures:
        raise typer.Exit(1)


@functools.cache
def _add_plugin_commands() -> None:
    # Once per process: main() may run several times in one process (tests).
    _components().manager.hook.register_commands(app=app)


def main() -> None:
    # Typer handles usage errors itself; expected failures become one line + exit 1.
    try:
        _add_plugin_commands()
        app()
    except PeftbenchError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted (a started run's record says status cancelled)")
        sys.exit(130)


if __name__ == "__main__":
    main()
