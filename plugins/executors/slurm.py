"""`peftbench suite run --executor slurm`: the runs as Slurm jobs, submitted through submitit.

The suite logic (skip what is done, keep going past failures, resume) stays in the core; this
executor only submits `peftbench run --spec FILE` command lines and reports their exit codes.
Settings come from `--set` (see `peftbench list`): partition, time limit, GPUs / CPUs / memory per
job, account, qos, and how many array tasks run at once. Runs are submitted as one job array.

`--set runs_per_job=N` gives each job N runs, one after another in one warm worker (torch and the
plugins imported once per job, as the local executor's slots do): fewer, longer jobs for a study
of many short runs (set ``time_min`` for all N). With 1 (the default) a job is one run in a fresh
process. A job's runs are reported when the job ends.

`--set cluster=local` uses submitit's local mode instead (child processes on this machine): how
this executor is tested where there is no Slurm. A run that the scheduler stops (time limit,
preemption) gets SIGTERM and records itself as cancelled; the next `suite run` runs it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from peftbench.sdk import ConfigError, ConfiguredExecutor, Job, hookimpl

from .child import run_batch, run_command


@dataclass(frozen=True)
class SlurmConfig:
    cluster: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    time_min: int = 240  # per job; a run past it is stopped, recorded as cancelled and rerun next time
    runs_per_job: int = 1  # runs one after another in one job's warm worker (1: a fresh process per run)
    gpus_per_run: int = 1
    cpus_per_run: int = 4
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 32  # array tasks running at once
    poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        if min(self.time_min, self.cpus_per_run, self.array_parallelism, self.runs_per_job) < 1 or self.gpus_per_run < 0:
            raise ValueError("time_min, cpus_per_run, array_parallelism and runs_per_job must be >= 1, "
                             "gpus_per_run >= 0")


class SlurmExecutor(ConfiguredExecutor):
    name = "slurm"
    description = ("Slurm jobs through submitit (an array; runs_per_job runs each); --set cluster=local runs "
                   "them here")
    Config = SlurmConfig

    def _executor(self, folder: Path) -> Any:
        try:
            import submitit
        except ImportError:
            raise ConfigError("--executor slurm needs submitit, which is not installed",
                              'pip install "peftbench[slurm]"') from None
        cfg = self.config
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cfg.cluster)
        extra = {"slurm_partition": cfg.partition, "slurm_account": cfg.account, "slurm_qos": cfg.qos,
                 "mem_gb": cfg.mem_gb}
        executor.update_parameters(timeout_min=cfg.time_min, gpus_per_node=cfg.gpus_per_run,
                                   cpus_per_task=cfg.cpus_per_run, slurm_array_parallelism=cfg.array_parallelism,
                                   name="peftbench", **{k: v for k, v in extra.items() if v is not None})
        return executor

    def execute(self, jobs: Sequence[Job], on_start: Callable[[Job], None],
                on_done: Callable[[Job, int], None], devices: Sequence[str] | None = None) -> None:
        if not jobs:
            return
        for job in jobs:
            job.log.parent.mkdir(parents=True, exist_ok=True)
        executor = self._executor(jobs[0].log.parent.parent / "submitit")
        size = self.config.runs_per_job
        batches = [tuple(jobs[i:i + size]) for i in range(0, len(jobs), size)]
        with executor.batch():  # one job array
            submitted = [self._submit(executor, batch) for batch in batches]
        waiting = dict(zip(batches, submitted))
        started: set[tuple[Job, ...]] = set()
        try:
            self._wait(waiting, started, on_start, on_done)
        except KeyboardInterrupt:
            for handle in waiting.values():
                handle.cancel(check=False)  # Slurm (or the local child) sends SIGTERM: the run records cancelled
            raise

    def _submit(self, executor: Any, batch: tuple[Job, ...]) -> Any:
        if len(batch) == 1 and self.config.runs_per_job == 1:
            return executor.submit(run_command, list(batch[0].args), str(batch[0].log))
        return executor.submit(run_batch, [(list(job.args), str(job.log)) for job in batch])

    def _wait(self, waiting: dict, started: set, on_start, on_done) -> None:
        while waiting:
            for batch, handle in list(waiting.items()):
                state = handle.state
                if batch not in started and state not in ("PENDING", "UNKNOWN", "REQUEUED"):
                    started.add(batch)
                    for job in batch:
                        on_start(job)
                if handle.done():
                    del waiting[batch]
                    for job, code in zip(batch, _exit_codes(handle, len(batch))):
                        on_done(job, code)
            time.sleep(self.config.poll_seconds)


def _exit_codes(handle: Any, runs: int) -> list[int]:
    """Each run's exit code; every run of a job that itself failed (cancelled, killed, node lost) failed."""
    try:
        result = handle.result()
    except Exception:  # noqa: BLE001
        return [1] * runs
    return [int(code) for code in result] if isinstance(result, list) else [int(result)]


@hookimpl
def register_executors(register) -> None:
    register(SlurmExecutor())
