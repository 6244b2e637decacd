"""`peftbench suite run --executor ray`: each run a Ray task.

With no address it starts a local Ray instance for the suite (``workers`` runs at once, default:
one per CPU core) and stops it at the end; ``--set address=auto`` or ``address=ray://HOST:10001``
joins a running cluster instead. Each run asks Ray for ``cpus_per_run`` CPUs and
``gpus_per_run`` GPUs. The suite logic (skip what is done, keep going past failures, resume)
stays in the core; records are written where ``--results`` says, which every node must see (a
shared filesystem).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from peftbench.sdk import ConfigError, Job, hookimpl

from .child import run_command


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: a local instance for this suite; "auto" or "ray://HOST:10001": a cluster
    workers: int | None = None  # a local instance's CPUs, i.e. runs at once (default: CPU cores)
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    poll_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1 or self.cpus_per_run <= 0 or self.gpus_per_run < 0:
            raise ValueError("workers must be >= 1, cpus_per_run > 0, gpus_per_run >= 0")


class RayExecutor:
    name = "ray"
    description = "one Ray task per run: a local Ray instance, or a cluster with --set address=auto|ray://..."
    Config = RayConfig

    def __init__(self, config: RayConfig | None = None) -> None:
        self.config = config or RayConfig()

    def configure(self, config: RayConfig) -> "RayExecutor":
        return RayExecutor(config)

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
        ray = self._start()
        pending: dict = {}
        try:
            task = ray.remote(num_cpus=self.config.cpus_per_run, num_gpus=self.config.gpus_per_run,
                              max_retries=0)(run_command)
            for job in jobs:
                job.log.parent.mkdir(parents=True, exist_ok=True)
                pending[task.remote(list(job.args), str(job.log))] = job
                on_start(job)  # submitted: Ray starts it when a worker is free
            self._wait(ray, pending, on_done)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # the worker passes the interrupt on: the run records cancelled
            raise
        finally:
            ray.shutdown()

    def _wait(self, ray: Any, pending: dict, on_done: Callable[[Job, int], None]) -> None:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.config.poll_seconds)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    code = int(ray.get(ref))
                except Exception:  # noqa: BLE001 - the task itself died (worker lost, cancelled): a failure
                    code = 1
                on_done(job, code)


@hookimpl
def register_executors(register) -> None:
    register(RayExecutor())
