"""`peftbench suite run --executor ray`: the runs on Ray, one actor per slot.

With no address it starts a local Ray instance for the suite (``workers`` CPUs, default: one per
core) and stops it at the end; ``--set address=auto`` or ``address=ray://HOST:10001`` joins a
running cluster instead. A slot is ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs; there are as
many slots as the instance has room for (at most one per run). Each slot is an actor holding a warm
worker (`peftbench.suite.workers`, as the local executor's slots do): it imports torch and the plugins
once and runs job after job, renewed when it dies, after ``runs_per_worker`` runs or past
``worker_memory_gb``. With ``warm=false`` each run is instead a Ray task that starts its own
process. The suite logic (skip what is done, keep going past failures, resume) stays in the core;
records are written where ``--results`` says, which every node must see (a shared filesystem).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from peftbench.sdk import ConfigError, ConfiguredExecutor, Job, hookimpl, renewed

from .child import run_command


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: a local instance for this suite; "auto" or "ray://HOST:10001": a cluster
    workers: int | None = None  # a local instance's CPUs (default: CPU cores)
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    poll_seconds: float = 1.0
    warm: bool = True  # a warm worker per slot (imports once); false: a fresh process per run
    runs_per_worker: int = 25  # a slot's worker is replaced after this many runs ...
    worker_memory_gb: float = 8.0  # ... or once its resident memory after a run exceeds this

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1 or self.cpus_per_run <= 0 or self.gpus_per_run < 0:
            raise ValueError("workers must be >= 1, cpus_per_run > 0, gpus_per_run >= 0")
        if self.runs_per_worker < 1 or self.worker_memory_gb <= 0:
            raise ValueError("runs_per_worker must be >= 1 and worker_memory_gb > 0")


class WarmSlot:
    """A slot's actor: a warm worker that runs job after job. Threaded (two at once), so that
    `interrupt` reaches a run in progress: Ray does not interrupt a running actor method."""

    def __init__(self, runs_per_worker: int, memory_gb: float) -> None:
        self.runs_per_worker, self.memory_gb, self.worker = runs_per_worker, memory_gb, None

    def run(self, args: list[str], log: str) -> int:
        self.worker = renewed(self.worker, None, self.runs_per_worker, self.memory_gb)
        return self.worker.run(args, Path(log))

    def interrupt(self) -> None:
        """Ctrl-C of the suite: the run in progress gets SIGINT, so its record says cancelled."""
        if self.worker is not None:
            self.worker.send_signal(signal.SIGINT)


class RayExecutor(ConfiguredExecutor):
    name = "ray"
    description = ("one Ray actor per slot with a warm worker: a local Ray instance, or a cluster with "
                   "--set address=auto|ray://...")
    Config = RayConfig

    def _start(self) -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs ray, which is not installed", 'pip install "peftbench[ray]"') from None
        cfg = self.config
        if cfg.address is None:
            ray.init(num_cpus=cfg.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=cfg.address, log_to_driver=False, configure_logging=False)
        return ray

    def execute(self, jobs: Sequence[Job], on_start: Callable[[Job], None],
                on_done: Callable[[Job, int], None], devices: Sequence[str] | None = None) -> None:
        if not jobs:
            return
        for job in jobs:
            job.log.parent.mkdir(parents=True, exist_ok=True)
        ray = self._start()
        try:
            (self._run_warm if self.config.warm else self._run_tasks)(ray, list(jobs), on_start, on_done)
        finally:
            ray.shutdown()  # ends the actors, and with them their workers

    def _slots(self, ray: Any, jobs: int) -> int:
        """How many runs fit at once: the instance's CPUs (and GPUs) over what one run asks for."""
        room = ray.cluster_resources()
        fits = [room.get("CPU", 1) / self.config.cpus_per_run]
        if self.config.gpus_per_run:
            fits.append(room.get("GPU", 0) / self.config.gpus_per_run)
        return max(1, min(jobs, int(min(fits))))

    def _run_warm(self, ray: Any, jobs: list[Job], on_start, on_done) -> None:
        cfg = self.config
        slot = ray.remote(num_cpus=cfg.cpus_per_run, num_gpus=cfg.gpus_per_run, max_concurrency=2)(WarmSlot)
        running: dict = {}  # the run's result ref -> (actor, job)

        def start(actor: Any) -> None:
            job = jobs.pop(0)
            running[actor.run.remote(list(job.args), str(job.log))] = (actor, job)
            on_start(job)

        for _ in range(self._slots(ray, len(jobs))):
            start(slot.remote(cfg.runs_per_worker, cfg.worker_memory_gb))
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=cfg.poll_seconds)
                for ref in ready:
                    actor, job = running.pop(ref)
                    code, actor_lost = _result(ray, ref)
                    on_done(job, code)
                    if jobs:  # the slot takes the next run (a lost actor is replaced)
                        start(slot.remote(cfg.runs_per_worker, cfg.worker_memory_gb) if actor_lost else actor)
        except KeyboardInterrupt:
            for actor, _ in running.values():
                actor.interrupt.remote()
            ray.wait(list(running), num_returns=len(running), timeout=60)  # their records say cancelled
            raise

    def _run_tasks(self, ray: Any, jobs: list[Job], on_start, on_done) -> None:
        """warm=false: each run a Ray task starting its own `peftbench run` process."""
        task = ray.remote(num_cpus=self.config.cpus_per_run, num_gpus=self.config.gpus_per_run,
                          max_retries=0)(run_command)
        pending: dict = {}
        for job in jobs:
            pending[task.remote(list(job.args), str(job.log))] = job
            on_start(job)  # submitted: Ray starts it when a worker is free
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.config.poll_seconds)
                for ref in ready:
                    on_done(pending.pop(ref), _result(ray, ref)[0])
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # the task passes the interrupt on: the run records cancelled
            raise


def _result(ray: Any, ref: Any) -> tuple[int, bool]:
    """(the run's exit code, whether the actor that ran it is gone); a task or actor that died is a failure."""
    try:
        return int(ray.get(ref)), False
    except ray.exceptions.RayActorError:
        return 1, True
    except Exception:  # noqa: BLE001 - the task itself died (worker lost, cancelled): a failure
        return 1, False


@hookimpl
def register_executors(register) -> None:
    register(RayExecutor())
