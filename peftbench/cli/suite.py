"""`peftbench suite run`: a suite's grid (or its `[tune]` studies, then the finals) on an executor,
resumable and locked against a second suite on the same results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .app import DEFAULT_RESULTS, components, err, out, suite_app
from ..errors import ConfigError


MEMORY_SETTINGS = ("gpu_memory_gb", "fit_memory")  # `suite run --set` keys for every run, not the executor


def _memory_plan(planned: list, sets: list[str]) -> tuple[list, dict[str, str], list[str]]:
    """With gpu_memory_gb (from --set or the suite file): each run's predicted peak, refitted to the
    memory where fit_memory=accumulate; returns (runs, hash -> label, the runs that do not fit)."""
    import dataclasses

    from ..config import apply_sets, parse_sets

    overrides = parse_sets(sets)
    if not overrides and all(run.resolved.spec.train.gpu_memory_gb is None for run in planned):
        return planned, {}, []
    from ..run import memory

    runs, labels, misfits, seen = [], {}, [], {}
    for number, run in enumerate(planned, 1):
        train = apply_sets({"train": run.resolved.spec.train}, overrides)["train"]
        resolved = dataclasses.replace(run.resolved, spec=dataclasses.replace(run.resolved.spec, train=train))
        key = dataclasses.replace(resolved.spec, train=dataclasses.replace(train, seed=0)).hash  # seeds share one
        if key not in seen:
            seen[key] = memory.fitted(resolved) if train.gpu_memory_gb is not None else (resolved, None)
        chosen, prediction = seen[key]  # the batch sizes it chose hold for every seed
        fitted = dataclasses.replace(resolved, spec=dataclasses.replace(resolved.spec, train=dataclasses.replace(
            chosen.spec.train, seed=train.seed)))
        run = dataclasses.replace(run, resolved=fitted)
        runs.append(run)
        if prediction is None:
            continue
        ok = memory.fits(prediction, fitted.spec.train)
        batch = fitted.spec.train.batch_size
        labels[run.hash] = (f"{'fits' if ok else 'DOES NOT FIT'}: {memory.shown(memory.peak_bytes(prediction))} "
                            f"at batch {batch}" + (f" x {fitted.spec.train.accumulation_steps()} accumulated"
                                                   if fitted.spec.train.accumulation_steps() > 1 else ""))
        if not ok:
            misfits.append(f"#{number} {run.block}")
    return runs, labels, misfits


def _refuse_misfits(misfits: list[str], planned: list) -> None:
    if misfits:
        from ..run.memory import FIT_HINT

        limit = planned[0].resolved.spec.train.gpu_memory_gb
        raise ConfigError(f"{len(misfits)} of {len(planned)} runs do not fit gpu_memory_gb={limit:g}: "
                          f"{', '.join(misfits)}", FIT_HINT)


def _plan(file: Path, results: Path, rerun_failed: bool, dry_run: bool, memory_sets: list[str]):
    """The suite's runs, the ones still to run, and the plan printed as a table."""
    from ..suite import plan as suite

    description, planned = suite.expand(file, components())
    planned, memory_labels, misfits = _memory_plan(planned, memory_sets)
    states = suite.run_states(results, repair=not dry_run) if results.exists() else {}
    table = Table(title=escape(f"{file}: {description}"), title_justify="left")
    for header in ("#", "block", "grid point", "config hash", "state", *(["predicted memory"] if memory_labels else [])):
        table.add_column(header, overflow="fold")
    todo = []
    for number, planned_run in enumerate(planned, 1):
        state = states.get(planned_run.hash, "todo")
        if state in ("todo", "cancelled") or (state == "failed" and rerun_failed):
            todo.append(planned_run)
        label = {"success": "done", "cancelled": "interrupted (re-run)",
                 "failed": "failed" + (" (re-run)" if rerun_failed else " (skip; --rerun-failed)")}.get(state, state)
        table.add_row(str(number), escape(planned_run.block), escape(" ".join(planned_run.point)), planned_run.hash,
                      escape(label), *([memory_labels.get(planned_run.hash, "")] if memory_labels else []))
    done = sum(states.get(r.hash) == "success" for r in planned)
    return planned, todo, table, done, misfits


def _lock(results: Path):
    import fcntl

    from ..records import files

    files.ensure_writable(results)
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
    from ..config import apply_sets, parse_sets

    chosen = components().executors.get(name)
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
                                                                         "partition=gpu (see `peftbench list`); "
                                                                         "gpu_memory_gb=N and fit_memory= apply "
                                                                         "to every run")] = None,
    storage: Annotated[Optional[str], typer.Option(help="with \\[tune]: the Optuna storage URL its studies live in "
                                                        "(default sqlite:///RESULTS/tuning.db; any Optuna RDB "
                                                        "URL, so trials on many machines share one study)")] = None,
) -> None:
    """Expand a suite and run what is not done yet; keeps going past failures; safe to re-run.
    With a \\[tune] table: the same number of trials per method, chosen on dev, then the finals."""
    from ..suite import plan as suite
    from ..run.tracking import check

    trackers = check([*suite.trackers(file), *(track or ())])
    if storage:  # before any executor starts a worker: the trials' processes read it from their environment
        from ..suite.tuning import share_storage

        share_storage(storage)
    memory_sets = [pair for pair in set_ or [] if pair.partition("=")[0].strip() in MEMORY_SETTINGS]
    runner_exec = _configured_executor(executor, [pair for pair in set_ or [] if pair not in memory_sets])
    try:
        _run_suite(file, results, dry_run, rerun_failed, runner_exec, devices, trackers, storage, memory_sets)
    finally:
        getattr(runner_exec, "close", lambda: None)()  # an executor that keeps workers between batches
    if not dry_run:  # every run succeeded (a failure exits above): the file's stages, e.g. [lm_eval]
        _run_stages(file, results)


def _run_stages(file: Path, results: Path) -> None:
    from ..stages import planned_stages
    from ..suite.plan import read_suite

    for stage, table in planned_stages(read_suite(file), components()):
        out.print(f"stage [{stage.name}]", highlight=False, markup=False)
        stage.run(table, results, components(), lambda line: out.print(line, highlight=False, markup=False))


def _run_suite(file: Path, results: Path, dry_run: bool, rerun_failed: bool, runner_exec, devices: str | None,
               trackers: list, storage: str | None, memory_sets: list[str]) -> None:
    from ..suite import plan as suite

    tune = suite.tune_settings(file)
    if tune is not None:
        from ..suite.tuning import default_storage

        _run_tuned_suite(file, results, tune, storage or default_storage(results), dry_run, rerun_failed,
                         lambda jobs, finished: _execute(runner_exec, jobs, devices, finished), trackers,
                         memory_sets)
        return

    if not dry_run:  # a read-only folder is one line before any stale record in it is repaired
        from ..records import files

        files.ensure_writable(results)
    planned, todo, table, done, misfits = _plan(file, results, rerun_failed, dry_run, memory_sets)
    out.print(table)
    out.print(f"{len(planned)} runs: {done} done, {len(todo)} to run", highlight=False)
    _refuse_misfits(misfits, planned)
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
                     execute, trackers, memory_sets: list[str]) -> None:
    """[tune]: trials in rounds (every study the same budget), then the finals like any suite's runs."""
    from ..suite import plan as suite, tuned as tuned_suite
    from ..suite.tuning import masked, plan_studies

    _, planned = suite.expand(file, components())
    planned, memory_labels, misfits = _memory_plan(planned, memory_sets)
    for run in planned if memory_labels else ():
        out.print(f"  memory, {run.block} {' '.join(run.point)}: {memory_labels[run.hash]}", highlight=False,
                  markup=False)
    _refuse_misfits(misfits, planned)
    studies = plan_studies(planned, tune)
    # Each study's own metric: a suite over several tasks chooses each on its own task's score.
    metrics = ", ".join(dict.fromkeys(study.metric for study in studies))
    out.print(f"{file}: {len(studies)} studies x {tune.trials} trials (sampler {tune.sampler}, pruner "
              f"{tune.pruner}, chosen on dev {metrics}), then {len(planned)} finals; storage {masked(storage)}",
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
            states.get(run.hash) != "failed" or rerun_failed or _is_trial(run))]
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
        for reason in without:
            err.print(reason, highlight=False, markup=False)
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


def _is_trial(run) -> bool:
    """A tuning trial that failed runs again (its study asked for it); another failed run only with --rerun-failed."""
    tuning = run.resolved.spec.tuning
    return tuning is not None and tuning.role == "trial"
