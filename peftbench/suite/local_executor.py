"""The built-in `local` executor: runs a suite's runs on this machine, one at a time per
device slot (`--devices 0,1` runs two at once, each slot seeing one GPU through
CUDA_VISIBLE_DEVICES; without devices `--set slots=N` runs N at once on the CPU,
each on its share of the cores), in warm worker processes that outlive one run
(`peftbench.suite.workers`), or with `--set warm=false` each in a fresh child process.
It registers itself like any executor plugin (an entry point of peftbench's own).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import ConfigError
from ..executor import ConfiguredExecutor, Job
from ..hookspecs import hookimpl
from .workers import WarmWorker, die_with_parent, renewed


def _interrupt(runs: list, grace: float = 3.0) -> None:
    """Ctrl-C in a terminal reached the runs too (one process group); a SIGINT sent to the suite
    alone did not: after a grace period, interrupt the ones still running. ``runs`` are child
    processes or warm workers (each has wait(timeout) and send_signal)."""
    deadline = time.monotonic() + grace
    for run in runs:
        try:
            ended = run.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            ended = False
        if ended is False:
            run.send_signal(signal.SIGINT)


@dataclass(frozen=True)
class LocalConfig:
    warm: bool = True  # runs in warm workers (imports once per worker); false: one fresh process per run
    runs_per_worker: int = 25  # a worker is replaced after this many runs ...
    worker_memory_gb: float = 8.0  # ... or once its resident memory after a run exceeds this
    # Runs at once without --devices, each slot's torch on cores / slots threads: on a CPU, several
    # small runs side by side use the cores better than one run on all of them.
    slots: int = 1

    def __post_init__(self) -> None:
        if self.runs_per_worker < 1 or self.worker_memory_gb <= 0 or self.slots < 1:
            raise ValueError("runs_per_worker and slots must be >= 1 and worker_memory_gb > 0")


class LocalExecutor(ConfiguredExecutor):
    """One thread per device slot takes the next job from a shared queue, so nothing is committed
    ahead of time. Each slot runs its jobs in a warm worker (`peftbench.workers`), replaced when it
    dies, after ``runs_per_worker`` runs or past ``worker_memory_gb``; with ``warm=false`` each run is
    a fresh child process. On Ctrl-C no further job starts, the ones in flight get SIGINT (their
    records say cancelled) and ``execute`` raises KeyboardInterrupt as soon as they have stopped."""

    name = "local"
    description = ("runs on this machine in warm worker processes; one run per device slot (--devices) or per "
                   "CPU slot (--set slots=N)")
    Config = LocalConfig

    def __init__(self, config: LocalConfig | None = None) -> None:
        super().__init__(config)
        # A slot's worker outlives one execute(): a tuned suite calls it once per round of trials.
        self._idle: dict[str | None, WarmWorker] = {}

    def close(self) -> None:
        """End the idle workers (the suite is done); a worker also ends when the suite process does."""
        while self._idle:
            self._idle.popitem()[1].close()

    def execute(self, jobs: Sequence[Job], on_start: Callable[[Job], None],
                on_done: Callable[[Job, int], None], devices: Sequence[str] | None = None) -> None:
        pending: queue.Queue[Job] = queue.Queue()
        for job in jobs:
            pending.put(job)
        stop = threading.Event()
        running: dict[str, object] = {}
        slots = self._slots(devices)
        # Workers start here, in the thread that outlives the slots, so they can be kept for the next call:
        # PR_SET_PDEATHSIG kills a child when the *thread* that started it ends, and a slot's thread ends
        # with this call (a replacement a slot starts itself ends with it).
        workers = {device: self._kept_or_new(device) for device in slots} if self.config.warm else {}
        threads = [threading.Thread(target=self._slot, args=(device, workers.get(device), pending, stop, running,
                                                             on_start, on_done), daemon=True)
                   for device in slots]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # a timed join lets the main thread receive KeyboardInterrupt
        except KeyboardInterrupt:
            stop.set()
            _interrupt(list(running.values()))
            for thread in threads:
                thread.join()
            raise

    def _slots(self, devices: Sequence[str] | None) -> list[str | None]:
        """One slot per device; without devices, ``slots`` CPU slots (named cpu:N)."""
        if devices and self.config.slots > 1:
            raise ConfigError("the local executor's slots are for runs without --devices (each device is a slot)",
                              "drop --set slots, or --devices")
        if devices:
            return list(devices)
        return [None] if self.config.slots == 1 else [f"cpu:{n}" for n in range(self.config.slots)]

    def _slot_env(self, device: str | None) -> dict[str, str]:
        env = dict(os.environ)
        if device is not None and device.startswith("cpu:"):
            # Each slot's share of the cores (torch reads it at start), unless the user set it.
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            env.setdefault("OMP_NUM_THREADS", str(max(1, cores // self.config.slots)))
        elif device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device)
        return env

    def _kept_or_new(self, device: str | None) -> WarmWorker:
        kept = self._idle.pop(device, None)
        return kept if kept is not None and kept.alive else WarmWorker(self._slot_env(device))

    def _slot(self, device: str | None, worker: WarmWorker | None, pending: queue.Queue, stop: threading.Event,
              running: dict, on_start: Callable[[Job], None], on_done: Callable[[Job, int], None]) -> None:
        env, handed_in = self._slot_env(device), worker
        try:
            while not stop.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                on_start(job)
                if self.config.warm:
                    worker = renewed(worker, env, self.config.runs_per_worker, self.config.worker_memory_gb)
                    code = self._run_warm(worker, job, running, stop)
                else:
                    code = self._run_child(job, env, running, stop)
                if not stop.is_set():  # a run ended by the interrupt is not a failure to report
                    on_done(job, code)
        finally:
            if worker is not None and worker is handed_in and worker.alive and not stop.is_set():
                self._idle[device] = worker  # for the next execute() on this slot
            elif worker is not None:
                worker.close()

    @staticmethod
    def _run_warm(worker, job: Job, running: dict, stop: threading.Event) -> int:
        running[job.key] = worker
        try:
            if stop.is_set():  # Ctrl-C came as the job was taken: it never starts
                return 130
            return worker.run(job.args, job.log)
        finally:
            running.pop(job.key, None)

    @staticmethod
    def _run_child(job: Job, env: dict[str, str], running: dict, stop: threading.Event) -> int:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with job.log.open("w", encoding="utf-8") as log:
            process = subprocess.Popen([sys.executable, "-m", "peftbench.cli", *job.args], stdout=log,
                                       stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
            running[job.key] = process
            if stop.is_set():  # started just as Ctrl-C came: the interrupt may not have seen it
                process.send_signal(signal.SIGINT)
            try:
                return process.wait()
            finally:
                running.pop(job.key, None)


@hookimpl
def register_executors(register) -> None:
    register(LocalExecutor())
