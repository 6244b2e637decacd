"""Command line: a thin Typer layer over runner, records and report."""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ConfigError, PeftbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fair, reproducible benchmarks of full fine-tuning vs parameter-efficient methods.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect task data.")
app.add_typer(data_app, name="data")
suite_app = typer.Typer(no_args_is_help=True, help="Run suites: grids x seeds from a TOML file.")
app.add_typer(suite_app, name="suite")

# soft_wrap: a long line stays one line when output is not a terminal (CI logs, `| tee`).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

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


def _settings_text(settings: list[dict]) -> str:
    return ", ".join(f"{s['name']}={s['default']}" for s in settings)


def _listing(comps) -> dict[str, list[dict]]:
    from .config import TrainConfig, describe_fields

    def settings(config_cls) -> list[dict]:
        return [dict(zip(("name", "type", "default"), row)) for row in describe_fields(config_cls)]

    listing: dict[str, list[dict]] = {}
    for kind, registry in (("methods", comps.methods), ("tasks", comps.tasks), ("backbones", comps.backbones)):
        listing[kind] = [{"name": e.name, "plugin": e.source, "description": e.component.description,
                          "settings": settings(e.component.Config)} for e in registry]
    listing["method wrappers"] = [{"name": f"{e.name}+<method>", "plugin": e.source,
                                   "description": e.component.description,
                                   "settings": settings(e.component.Config) if e.component.Config else []}
                                  for e in comps.wrappers]
    listing["tables"] = [{"name": e.name, "plugin": e.source, "description": e.component.description}
                         for e in comps.tables]
    listing["executors"] = [{"name": e.name, "plugin": e.source, "description": e.component.description,
                             "settings": settings(getattr(e.component, "Config", None))} for e in comps.executors]
    listing["train settings"] = settings(TrainConfig)
    return listing


@app.command("list")
def list_components(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Methods, tasks, backbones and report tables, with their plugin and settings."""
    listing = _listing(_components())
    if as_json:
        out.print_json(json.dumps(listing))
        return
    with_settings = ("methods", "method wrappers", "tasks", "executors")
    for kind in ("methods", "method wrappers", "tasks", "backbones", "tables", "executors"):
        table = Table(title=kind, title_justify="left", show_lines=kind in with_settings)
        # A name is never cut (it is what users type); descriptions and settings wrap instead.
        table.add_column("name", no_wrap=True, style="bold")
        table.add_column("description (plugin)", overflow="fold", ratio=2)
        if kind in with_settings:
            table.add_column("settings (--set key=value)", overflow="fold", ratio=3)
        for item in listing[kind]:
            about = f"{escape(item['description'])} [dim]({escape(item['plugin'])})[/]"
            extra = [escape(_settings_text(item["settings"]))] if kind in with_settings else []
            table.add_row(item["name"], about, *extra)
        out.print(table)
        if kind == "method wrappers":
            out.print("A wrapper composes with any method above, from any plugin: --method <prefix>+<method>; "
                      "its settings come on top of the method's.", soft_wrap=False)
        if kind == "backbones":
            out.print("Any other --backbone value goes to the plugins' resolve_backbone hook "
                      "(built in: a Hugging Face hub id or a local model directory).", soft_wrap=False)
    out.print("train settings (any run): " + escape(_settings_text(listing["train settings"])), highlight=False,
              soft_wrap=False)


def _resolve_for_run(comps, method: str | None, task: str | None, backbone: str | None, sets: list[str],
                     spec: Path | None, match_params: int | None):
    from . import spec as specs

    if spec is not None:
        if method or task or backbone or sets or match_params is not None:
            raise ConfigError("--spec holds the whole run; it cannot be combined with --method, --task, "
                              "--backbone, --set or --match-params")
        return specs.load_spec(comps, spec)
    if not method or not task:
        raise ConfigError("a run needs --method and --task (or --spec FILE)", "see `peftbench list` for names")
    if match_params is None:
        return specs.resolve(comps, method, task, backbone, sets)
    from .counting import match_params as matched

    resolved = matched(comps, method, task, backbone, sets, match_params)
    b = resolved.spec.budget
    out.print(f"budget {b.target:,}: {b.setting}={b.value} gives {b.achieved:,} method params "
              f"({100 * b.deviation:+.2f}%)", highlight=False)
    return resolved


@app.command()
def run(
    method: Annotated[Optional[str], typer.Option("--method", "-m", help="method name (see `peftbench list`)")] = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="task name (see `peftbench list`)")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="backbone name, hub id or local dir; default: the task's")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="key=value, e.g. r=8, lr=5e-4, epochs=3")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count params and artefact size; no data, no weights")] = False,
    results: Annotated[Path, typer.Option(help="folder for run records")] = DEFAULT_RESULTS,
    mixed_precision: Annotated[Optional[str], typer.Option(help="no, fp16 or bf16 (same as --set mixed_precision=)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or logs")] = False,
    match_params: Annotated[Optional[int], typer.Option(help="choose the method's size setting (e.g. a rank) "
                                                             "closest to this many method params "
                                                             "(head excluded)")] = None,
    spec: Annotated[Optional[Path], typer.Option(help="a run spec (JSON) instead of --method/--task/--set; "
                                                      "what suites hand their child runs")] = None,
    track: Annotated[Optional[list[str]], typer.Option(help="experiment tracker: tensorboard, mlflow or wandb "
                                                           "(repeat for several); written under --results")] = None,
    force: Annotated[bool, typer.Option("--force", help="run even if this configuration and seed already "
                                                        "succeeded in --results")] = False,
    processes: Annotated[int, typer.Option(min=1, help="train data-parallel in this many processes (one per GPU; "
                                                       "on CPU they share its cores), started with torchrun")] = 1,
) -> None:
    """Train, evaluate and measure one configuration; write its run record."""
    from . import runner
    from .progress import Progress

    from .tracking import check

    _quiet_libraries()
    track = check(track or ())  # before any work: a missing tracker package is one line
    sets = list(set_ or []) + ([f"mixed_precision={mixed_precision}"] if mixed_precision else [])
    comps = _components()
    resolved = _resolve_for_run(comps, method, task, backbone, sets, spec, match_params)
    if dry_run:
        from .counting import dry_run as counts

        _print_dry_run(resolved, counts(resolved))
        return
    if not force:
        _refuse_a_second_success(results, resolved.spec.hash)
    if _launch_processes(processes):
        return
    _terminate_like_an_interrupt()
    try:
        with Progress(err, quiet=quiet or _not_the_main_process()) as progress:
            record, path = runner.run(comps, resolved, results, progress, track)
    except KeyboardInterrupt:
        from .errors import Terminated

        if not Terminated.received:
            raise
        err.print("terminated by SIGTERM (its record says status cancelled)")
        raise typer.Exit(143) from None
    if path is None:  # not the main process of a data-parallel run: the main one reports
        return
    main = record.task.main_score
    test = record.scores.get("test", {})
    out.print(f"run {record.run_id}: test {main} {test.get(main, float('nan')):.4f}, "
              f"trainable params {record.params.trainable:,}, record {path}", highlight=False)


def _not_the_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) > 0


def _launch_processes(processes: int) -> bool:
    """With --processes N > 1, start this same command N times under torchrun (which sets the
    variables accelerate reads) and exit with its status; True once that is done. Inside such a
    launch (or `accelerate launch`), False: this process is one of them."""
    import os
    import subprocess

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if processes == 1 or launched > 1:
        if processes > 1 and launched != processes:
            raise ConfigError(f"--processes {processes} inside a launch of {launched} processes",
                              "drop --processes when a launcher (accelerate launch, torchrun) starts the run")
        return False
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "peftbench", *sys.argv[1:]]
    done = subprocess.run(command)
    if done.returncode:
        raise typer.Exit(done.returncode)
    return True


def _terminate_like_an_interrupt() -> None:
    """SIGTERM (Slurm's time limit, preemption, `kill`) ends a run as Ctrl-C does: its record says cancelled."""
    import signal

    from .errors import Terminated

    def terminate(signum, frame):
        Terminated.received = True
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)


def _refuse_a_second_success(results: Path, config_hash: str) -> None:
    from .suite import run_states

    if results.exists() and run_states(results, repair=False).get(config_hash) == "success":
        raise ConfigError(f"this configuration and seed already succeeded in {results}",
                          "pass --force to run it again (the report keeps the newest), or change the seed")


def _print_dry_run(resolved, stages: list[dict]) -> None:
    spec = resolved.spec
    out.print(f"dry run: method {spec.method}, task {spec.task}, backbone {spec.backbone} "
              f"(architecture built from its config, no weights, no data); config hash {spec.hash}", highlight=False)
    for row in stages:
        p = row["params"]
        out.print(
            f"[bold]{escape(row['stage'])}[/]: trainable params {p['trainable']:,} = adapter {p['adapter']:,} "
            f"+ head {p['head']:,} + backbone {p['backbone_trainable']:,}; model total {p['total']:,} "
            f"({100 * p['trainable'] / p['total']:.3f}% trainable)\n"
            f"  saved artefact: {row['artifact_tensor_bytes']:,} bytes of tensors "
            f"= {row['artifact_tensor_bytes'] / 1e6:.2f} MB (10^6 B) = {row['artifact_tensor_bytes'] / 2**20:.2f} MiB"
            + (f"\n  auxiliary (trained, not saved): {p['auxiliary']:,} params" if p.get("auxiliary") else ""),
            highlight=False)


def _deduplicated(frame):
    from .records import set_aside_duplicates

    frame, duplicates = set_aside_duplicates(frame)
    if duplicates:
        err.print(f"set aside {duplicates} duplicate record(s): the same configuration and seed succeeded more "
                  "than once; the newest of each is reported", highlight=False, markup=False)
    return frame


def _report_frame(results: Path, include_failed: bool, task: str | None):
    """The records a report reads: duplicates and tuning trials set aside (each said on stderr)."""
    from .results import load_results

    frame = load_results(results, ("success", "failed", "cancelled") if include_failed else ("success",),
                         deduplicate=False)
    frame = _without_trials(_deduplicated(frame))
    _note_record_problems(frame)
    if task is not None and not frame.empty and "task.name" in frame:
        frame = frame[frame["task.name"] == task]
    return frame


def _without_trials(frame):
    from .report import set_aside_trials

    frame, trials = set_aside_trials(frame)
    if trials:
        err.print(f"{trials} tuning trial record(s) set aside: they score dev only; the report shows the finals "
                  "(each final's record says how it was tuned)", highlight=False, markup=False)
    return frame


def _note_record_problems(frame) -> None:
    from .report import runs_without_scores

    missing = runs_without_scores(frame)
    if missing:
        err.print(f"{len(missing)} successful run(s) have no test score for their task's main score "
                  f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); their score cells are empty",
                  highlight=False, markup=False)


def _report_columns(frame, results: Path, table_name: str | None, columns: str | None, all_columns: bool):
    """(columns, title, sort_by, frame): a named layout, the user's fields, every column, or the compact default."""
    from .api import Column
    from .report import compact_columns, default_columns, settings_label

    if table_name:
        spec = _components().tables.get(table_name)
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
    include_failed: Annotated[bool, typer.Option("--all", help="also failed/cancelled runs")] = False,
    fields: Annotated[bool, typer.Option("--fields", help="list the record fields usable as columns")] = False,
    output: Annotated[Optional[Path], typer.Option("--out", help="write to this file instead of stdout")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="compare every row with the row where FIELD=VALUE, "
                                                         "e.g. method.name=full")] = None,
    test: Annotated[str, typer.Option(help="with --baseline: bootstrap (seeds x test examples), randomization, "
                                           "mcnemar (one run each, accuracy) or t (over seeds)")] = "bootstrap",
    adjust: Annotated[str, typer.Option(help="with --baseline: holm, bh (Benjamini-Hochberg) or none")] = "holm",
    metric: Annotated[Optional[str], typer.Option(help="with --baseline: the test score compared "
                                                       "(default: the task's main score)")] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples / randomization swaps")] = 2000,
    strict: Annotated[bool, typer.Option(help="refuse to compare runs that differ in train, task, data, "
                                              "backbone or library settings")] = False,
    alpha: Annotated[float, typer.Option(help="significance level for best marks and paired tests")] = 0.05,
    show_stats: Annotated[bool, typer.Option("--stats", help="per configuration: n, mean, std, 95% CI of "
                                                             "every test score")] = False,
    html: Annotated[Optional[Path], typer.Option(help="also write a self-contained HTML report (tables, "
                                                      "interactive Pareto plots, learning curves) to this file")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="also write plots (PNG and SVG) into this folder")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="with --plot: also plot scores, size and time against "
                                                     "this setting, e.g. r")] = None,
) -> None:
    """Comparison tables (Markdown) from run records."""
    from .api import Column
    from .report import build_table, stats_table

    if fmt not in ("md", "csv", "json"):
        raise ConfigError(f"--format {fmt!r} is not md, csv or json")
    frame = _report_frame(results, include_failed, task)
    if fields:
        for name in frame.columns:
            out.print(name, highlight=False)
        return
    cols, title, sort_by, frame = _report_columns(frame, results, table_name, columns, all_columns)
    if include_failed and not table_name and not columns:
        cols = [Column("status", "status"), *cols]
    options = {"test": test, "adjust": adjust, "metric": metric, "resamples": resamples, "strict": strict}
    if show_stats:
        table, notes = stats_table(frame, strict=strict)
    else:
        table, notes = build_table(frame, cols, sort_by, require_fields=not table_name, alpha=alpha,
                                   baseline=baseline, compare_options=options)
    if baseline:  # one warning per confound where the user asked for a comparison
        for line in notes:
            if line.startswith("confound: "):
                err.print(f"warning: {line}", highlight=False, markup=False)
    _write_report(frame, table, notes, title, fmt, output, html, plot, sweep)


def _write_report(frame, table, notes: list[str], title: str | None, fmt: str, output: Path | None,
                  html: Path | None, plot: Path | None, sweep: str | None) -> None:
    """The table to stdout or --out, and the HTML report and plots where asked for."""
    from .report import provenance, render

    notes = [*notes, *provenance(frame)]
    if html:
        from .html_report import write_html

        write_html(html, frame, table, notes, title)
        err.print(f"wrote {html}", highlight=False)
    if plot:
        from .plots import write_plots

        for path in write_plots(frame, plot, sweep):
            err.print(f"wrote {path}", highlight=False)
    text = render(table, fmt, notes, title)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)


def _data_table(task: str, splits, per_split: dict[str, dict[str, object]]) -> Table:
    table = Table(title=f"{task}: {splits.info.get('source', '')}", title_justify="left")
    table.add_column("")
    for split in per_split:
        table.add_column(split, justify="right")
    rows = list(dict.fromkeys(k for counts in per_split.values() for k in counts))
    for row in rows:
        table.add_row(row, *(f"{per_split[s].get(row, 0):,}" if isinstance(per_split[s].get(row, 0), int)
                             else str(per_split[s][row]) for s in per_split))
    return table


@data_app.command("check")
def data_check(
    task: Annotated[str, typer.Argument(help="task name")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="task settings, e.g. data_dir=PATH")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="also encode with this backbone's tokenizer and "
                                                         "report what encoding loses (truncation)")] = None,
) -> None:
    """Load a task's data and print what the loader found, per split."""
    from .command_context import CommandContext

    _quiet_libraries()
    task_obj, cfg = CommandContext(_components).task_config(task, list(set_ or []))
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
        tokenizer = _components().resolve_backbone(backbone).load(task_obj.head(cfg)).tokenizer
        for split, examples in splits.items():
            encoded = task_obj.encode(examples, tokenizer, cfg)
            per_split[split].update(task_obj.encoding_report(examples, encoded, cfg))
            per_split[split]["max tokens"] = max((len(e["input_ids"]) for e in encoded), default=0)
    out.print(_data_table(task, splits, per_split))
    for key, value in other.items():
        if key != "source":
            out.print(f"{key}: {value}", highlight=False, markup=False)


def _plan(file: Path, results: Path, rerun_failed: bool, dry_run: bool):
    """The suite's runs, the ones still to run, and the plan printed as a table."""
    from . import suite

    description, planned = suite.expand(file, _components())
    states = suite.run_states(results, repair=not dry_run) if results.exists() else {}
    table = Table(title=escape(f"{file}: {description}"), title_justify="left")
    for header in ("#", "block", "grid point", "config hash", "state"):
        table.add_column(header, overflow="fold")
    todo = []
    for number, planned_run in enumerate(planned, 1):
        state = states.get(planned_run.hash, "todo")
        if state in ("todo", "cancelled") or (state == "failed" and rerun_failed):
            todo.append(planned_run)
        label = {"success": "done", "cancelled": "interrupted (re-run)",
                 "failed": "failed" + (" (re-run)" if rerun_failed else " (skip; --rerun-failed)")}.get(state, state)
        table.add_row(str(number), escape(planned_run.block), escape(" ".join(planned_run.point)), planned_run.hash,
                      escape(label))
    done = sum(states.get(r.hash) == "success" for r in planned)
    return planned, todo, table, done


def _lock(results: Path):
    import fcntl

    from . import records

    records.ensure_writable(results)
    lock_file = (results / ".suite.lock").open("w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"another suite is running on {results}",
                          "wait for it, or use another --results folder") from None
    return lock_file


def _execute(executor, jobs: list, devices: str | None, finished: list[str]) -> list[str]:
    """Run the jobs with a progress bar; returns the config hashes of the runs that failed
    (``finished`` collects every run that ended, as it ends)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

    failures: list[str] = []
    with RichProgress(TextColumn("[bold]suite"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=err) as bar:
        overall = bar.add_task("", total=len(jobs))

        def on_start(job) -> None:
            bar.update(overall, description=f"running {job.key}")

        def on_done(job, code: int) -> None:
            finished.append(job.key)
            bar.advance(overall)
            if code != 0:
                failures.append(job.key)
                err.print(f"run {job.key} failed (exit {code}); its log: {job.log}", highlight=False, markup=False)

        executor.execute(jobs, on_start, on_done, devices.split(",") if devices else None)
    return failures


def _configured_executor(name: str, sets: list[str]):
    """The executor, with its `--set` settings where it declares a Config (a dataclass)."""
    from .config import apply_sets, parse_sets

    chosen = _components().executors.get(name)
    config_cls = getattr(chosen, "Config", None)
    if config_cls is None:
        if sets:
            raise ConfigError(f"executor {name!r} takes no settings", "drop --set")
        return chosen
    return chosen.configure(apply_sets({"executor": config_cls()}, parse_sets(sets))["executor"])


@suite_app.command("run")
def suite_run(
    file: Annotated[Path, typer.Argument(help="suite file (TOML)")],
    results: Annotated[Path, typer.Option(help="folder for run records")] = DEFAULT_RESULTS,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the plan (runs, config hashes, state) only")] = False,
    rerun_failed: Annotated[bool, typer.Option("--rerun-failed", help="run again the runs whose record failed")] = False,
    executor: Annotated[str, typer.Option(help="how runs are executed (see executors in `peftbench list`)")] = "local",
    devices: Annotated[Optional[str], typer.Option(help="GPU ids, one run at a time on each, e.g. 0,1")] = None,
    track: Annotated[Optional[list[str]], typer.Option(help="experiment tracker for every run: tensorboard, "
                                                           "mlflow or wandb (adds to the file's track list)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="executor setting key=value, e.g. "
                                                                         "partition=gpu (see `peftbench list`)")] = None,
    storage: Annotated[Optional[str], typer.Option(help="with \\[tune]: the Optuna storage URL its studies live in "
                                                        "(default sqlite:///RESULTS/tuning.db; any Optuna RDB "
                                                        "URL, so trials on many machines share one study)")] = None,
) -> None:
    """Expand a suite and run what is not done yet; keeps going past failures; safe to re-run.
    With a \\[tune] table: the same number of trials per method, chosen on dev, then the finals."""
    from . import suite
    from .tracking import check

    trackers = check([*suite.trackers(file), *(track or ())])
    runner_exec = _configured_executor(executor, set_ or [])
    tune = suite.tune_settings(file)
    if tune is not None:
        from .tuning import default_storage

        _run_tuned_suite(file, results, tune, storage or default_storage(results), dry_run, rerun_failed,
                         lambda jobs, finished: _execute(runner_exec, jobs, devices, finished), trackers)
        return

    planned, todo, table, done = _plan(file, results, rerun_failed, dry_run)
    out.print(table)
    out.print(f"{len(planned)} runs: {done} done, {len(todo)} to run", highlight=False)
    if dry_run or not todo:
        return
    lock = _lock(results)
    jobs = [suite.job(planned_run, results, trackers) for planned_run in todo]
    finished: list[str] = []
    try:
        failures = _execute(runner_exec, jobs, devices, finished)
    except KeyboardInterrupt:
        err.print(f"interrupted: {len(finished)} of {len(jobs)} runs finished, {len(jobs) - len(finished)} did not "
                  f"(a run in flight is recorded as cancelled); `peftbench suite run {file}` runs what is left",
                  highlight=False, markup=False)
        raise typer.Exit(130) from None
    finally:
        lock.close()
    out.print(f"suite finished: {len(jobs) - len(failures)} succeeded, {len(failures)} failed"
              + (" (re-run with --rerun-failed after fixing)" if failures else ""), highlight=False)
    if failures:
        raise typer.Exit(1)


def _run_tuned_suite(file: Path, results: Path, tune, storage: str, dry_run: bool, rerun_failed: bool,
                     execute, trackers) -> None:
    """[tune]: trials in rounds (every study the same budget), then the finals like any suite's runs."""
    from . import suite, tuned_suite
    from .tuning import plan_studies

    _, planned = suite.expand(file, _components())
    studies = plan_studies(planned, tune)
    out.print(f"{file}: {len(studies)} studies x {tune.trials} trials (sampler {tune.sampler}, pruner "
              f"{tune.pruner}, chosen on dev {studies[0].metric}), then {len(planned)} finals; storage {storage}",
              highlight=False)
    for study in studies:
        space = ", ".join(f"{k} {s.describe()}" for k, s in study.space.items())
        out.print(f"  {study.name}: {space}", highlight=False, markup=False)
    if dry_run:
        return
    lock = _lock(results)
    failures: list[str] = []

    def run_batch(batch: list) -> None:
        todo = [run for run in batch if states.get(run.hash) != "success" and (
            states.get(run.hash) != "failed" or rerun_failed or run.resolved.spec.tuning["role"] == "trial")]
        finished: list[str] = []
        try:
            failures.extend(execute([suite.job(run, results, trackers) for run in todo], finished))
        except KeyboardInterrupt:
            err.print(f"interrupted: {len(finished)} of {len(todo)} runs of this round finished; `peftbench suite "
                      f"run {file}` goes on from there (interrupted trials are not counted)",
                      highlight=False, markup=False)
            raise typer.Exit(130) from None

    try:
        states = suite.run_states(results)
        opened = tuned_suite.run_trials(studies, tune, storage, results, run_batch, states,
                                        lambda line: err.print(line, highlight=False, markup=False))
        final_runs, without = tuned_suite.finals(studies, opened, tune)
        for name in without:
            err.print(f"study {name}: no trial completed, so no settings to choose; its finals do not run "
                      "(see the trials' logs in suite-logs/)", highlight=False, markup=False)
        states = suite.run_states(results)
        done = sum(states.get(run.hash) == "success" for run in final_runs)
        out.print(f"finals: {len(final_runs)} runs, {done} done, {len(final_runs) - done} to run", highlight=False)
        trial_failures = len(failures)
        run_batch(final_runs)
    finally:
        lock.close()
    final_failures = len(failures) - trial_failures
    out.print(f"suite finished: {len(final_runs) - final_failures} finals succeeded, {final_failures} failed; "
              f"{trial_failures} trial(s) failed", highlight=False)
    if final_failures or without:
        raise typer.Exit(1)


@functools.cache
def _add_plugin_commands() -> None:
    # Once per process: main() may run several times in one process (tests).
    from .command_context import CommandContext

    _components().manager.hook.register_commands(app=app, context=CommandContext(_components))


def _names_a_builtin_command(argv: list[str]) -> bool:
    """Whether the command line names one of the core's commands (plugin commands are then not
    needed, and loading every plugin to add them would cost e.g. a report most of a second)."""
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first in names


def main() -> None:
    # Typer handles usage errors itself; expected failures become one line + exit 1.
    try:
        if not _names_a_builtin_command(sys.argv[1:]):
            _add_plugin_commands()
        app()
    except PeftbenchError as exc:
        # One line, whatever a library's message holds (tarfile lists one failure per line).
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted (a started run's record says status cancelled)")
        sys.exit(130)


if __name__ == "__main__":
    main()
