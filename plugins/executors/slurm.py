"""`peftbench suite run --executor slurm`: each run a Slurm job, submitted through submitit.

The suite logic (skip what is done, keep going past failures, resume) stays in the core; this
executor only submits `peftbench run --spec FILE` command lines and reports their exit codes.
Settings come from `--set` (see `peftbench list`): partition, time limit, GPUs / CPUs / memory per
run, account, qos, and how many array tasks run at once. Runs are submitted as one job array.

`--set cluster=local` uses submitit's local mode instead (child processes on this machine): how
this executor is tested where there is no Slurm. A run that the scheduler stops (time limit,
preemption) gets SIGTERM and records itself as cancelled; the next `suite run` runs it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from peftbench.sdk import ConfigError, Job, hookimpl

from .child import run_command


@dataclass(frozen=True)
class SlurmConfig:
    cluster: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    time_min: int = 240  # per run; a run past it is stopped, recorded as cancelled and rerun next time
    gpus_per_run: int = 1
    cpus_per_run: int = 4
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 32  # array tasks running at once
    poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.time_min < 1 or self.cpus_per_run < 1 or self.gpus_per_run < 0 or self.array_parallelism < 1:
            raise ValueError("time_min, cpus_per_run and array_parallelism must be >= 1, gpus_per_run >= 0")


class SlurmExecutor:
    name = "slurm"
    description = "one Slurm job per run through submitit (array); --set cluster=local runs them here"
    Config = SlurmConfig

    def __init__(self, config: SlurmConfig | None = None) -> None:
        self.config = config or SlurmConfig()

    def configure(self, config: SlurmConfig) -> "SlurmExecutor":
        return SlurmExecutor(config)

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
        with executor.batch():  # one job array
            submitted = [executor.submit(run_command, list(job.args), str(job.log)) for job in jobs]
        waiting = dict(zip(jobs, submitted))
        started: set[Job] = set()
        try:
            self._wait(waiting, started, on_start, on_done)
        except KeyboardInterrupt:
            for handle in waiting.values():
                handle.cancel(check=False)  # Slurm (or the local child) sends SIGTERM: the run records cancelled
            raise

    def _wait(self, waiting: dict, started: set, on_start, on_done) -> None:
        while waiting:
            for job, handle in list(waiting.items()):
                state = handle.state
                if job not in started and state not in ("PENDING", "UNKNOWN", "REQUEUED"):
                    started.add(job)
                    on_start(job)
                if handle.done():
                    del waiting[job]
                    on_done(job, _exit_code(handle))
            time.sleep(self.config.poll_seconds)


def _exit_code(handle: Any) -> int:
    try:
        return int(handle.result())
    except Exception:  # noqa: BLE001 - the job itself failed (cancelled, killed, node lost): a failure
        return 1


@hookimpl
def register_executors(register) -> None:
    register(SlurmExecutor())
