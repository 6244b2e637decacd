"""`peftbench run`: one configuration trained, evaluated and measured (or only counted, `--dry-run`),
in one process or several under torchrun."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .app import DEFAULT_RESULTS, app, components, err, out, quiet_libraries
from ..errors import ConfigError


def _resolve_for_run(comps, method: str | None, task: str | None, backbone: str | None, sets: list[str],
                     spec: Path | None, match_params: int | None):
    from ..run import spec as specs

    if spec is not None:
        if method or task or backbone or sets or match_params is not None:
            raise ConfigError("--spec holds the whole run; it cannot be combined with --method, --task, "
                              "--backbone, --set or --match-params")
        return specs.load_spec(comps, spec)
    if not method or not task:
        raise ConfigError("a run needs --method and --task (or --spec FILE)", "see `peftbench list` for names")
    if match_params is None:
        return specs.resolve(comps, method, task, backbone, sets)
    from ..run.counting import match_params as matched

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
    processes: Annotated[int, typer.Option(help="train data-parallel in this many processes (one per GPU; "
                                                       "on CPU they share its cores), started with torchrun")] = 1,
) -> None:
    """Train, evaluate and measure one configuration; write its run record."""
    from ..run import runner
    from ..run.progress import Progress

    from ..run.tracking import check

    quiet_libraries()
    track = check(track or ())  # before any work: a missing tracker package is one line
    sets = list(set_ or []) + ([f"mixed_precision={mixed_precision}"] if mixed_precision else [])
    comps = components()
    resolved = _resolve_for_run(comps, method, task, backbone, sets, spec, match_params)
    resolved, prediction = _fit_to_memory(resolved)
    if dry_run:
        from ..run.counting import dry_run as counts

        _print_dry_run(resolved, counts(resolved))
        _print_memory(resolved, prediction)
        return
    _refuse_what_cannot_run(resolved, results, force)
    if _launch_processes(processes):
        return
    _terminate_like_an_interrupt()
    try:
        with _claim(results, resolved.spec.hash), Progress(err, quiet=quiet or _not_the_main_process()) as progress:
            record, path = runner.run(comps, resolved, results, progress, track)
    except KeyboardInterrupt:
        from ..errors import Terminated

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

    if processes < 1:
        raise ConfigError(f"--processes {processes}: a run needs at least one process", "drop --processes, or give 2 or more")
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
    """SIGTERM (Slurm's time limit, preemption, `kill`) ends a run as Ctrl-C does: its record says
    cancelled. Both are also remembered, for the trainer to raise again if a library dropped them."""
    import signal

    from ..errors import Interrupted, Terminated

    def terminate(signum, frame):
        Terminated.received = True
        raise Terminated()

    def interrupt(signum, frame):
        Interrupted.requested = True
        raise KeyboardInterrupt()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored
            signal.signal(signal.SIGINT, interrupt)


def _refuse_what_cannot_run(resolved, results: Path, force: bool) -> None:
    """Before a record exists: an optimizer this machine cannot run (a dry run predicts any optimizer's
    memory, installed or not), a folder it cannot write, and a configuration that already succeeded.
    Records left running by a process that died are rewritten as cancelled on the way, as a suite would."""
    import torch

    from ..records import files
    from ..run.optimizers import check_optimizer
    from ..suite.plan import run_states

    check_optimizer(resolved.spec.train.optimizer, "cuda" if torch.cuda.is_available() else "cpu")
    files.ensure_writable(results)  # one line for a read-only folder, before anything is repaired in it
    if run_states(results, repair=True).get(resolved.spec.hash) == "success" and not force:
        raise ConfigError(f"this configuration and seed already succeeded in {results}",
                          "pass --force to run it again (the report keeps the newest), or change the seed")


def _claim(results: Path, config_hash: str):
    """The configuration's claim in the results folder while it runs (the main process of a launch)."""
    import contextlib

    from ..records import files

    if _not_the_main_process():
        return contextlib.nullcontext()
    files.ensure_writable(results)
    return files.claimed(results, config_hash, "this configuration and seed")


def _fit_to_memory(resolved):
    """With gpu_memory_gb: the run as it fits (or one line refusing it) and its prediction."""
    if resolved.spec.train.gpu_memory_gb is None:
        return resolved, None
    from ..run import memory

    before = resolved.spec.train
    resolved, prediction = memory.fit_to_memory(resolved)
    after = resolved.spec.train
    if (after.batch_size, after.eval_batch_size) != (before.batch_size, before.eval_batch_size):
        out.print(f"fit_memory=accumulate: batch_size {before.batch_size} -> {after.batch_size} with "
                  f"{after.accumulation_steps()} accumulation steps (effective batch kept), eval_batch_size "
                  f"{before.eval_batch_size} -> {after.eval_batch_size}, to fit gpu_memory_gb={after.gpu_memory_gb:g}",
                  highlight=False)
    return resolved, prediction


def _print_memory(resolved, prediction) -> None:
    from ..run import memory

    if prediction is None:
        try:
            prediction = memory.predict(resolved)
        except Exception as exc:  # noqa: BLE001 - counts above stand; say why memory could not be traced
            out.print(f"predicted peak memory: unavailable for this method or task ({type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:160]})", highlight=False)
            return
    for line in memory.described(prediction):
        out.print(escape(line), highlight=False)


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
