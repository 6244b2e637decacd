"""Executors run a suite's runs. The suite logic (expand, skip, resume) never
changes with the executor; an executor only has to run `peftbench run ...`
command lines and report each exit code.

The built-in `local` executor runs each run as a child process on this
machine, one at a time per device slot (`--devices 0,1` runs two at once,
each child seeing one GPU through CUDA_VISIBLE_DEVICES). A distributed
engine (Ray, Slurm through submitit, ...) plugs in as a plugin registering
another Executor via the `register_executors` hook.
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
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Job:
    key: str  # the run's config hash
    args: tuple[str, ...]  # arguments after `peftbench`
    log: Path  # where the run's output goes


@runtime_checkable
class Executor(Protocol):
    """How a suite's runs execute. Checked when a plugin registers one."""

    name: str
    description: str

    def execute(self, jobs: Sequence[Job], on_start: Callable[[Job], None],
                on_done: Callable[[Job, int], None], devices: Sequence[str] | None = None) -> None:
        """Run every job; call on_start/on_done (with the exit code) as each starts/ends.

        On KeyboardInterrupt: start no further job, interrupt (or cancel) the ones under way,
        and re-raise once they have stopped."""


def _die_with_parent() -> None:
    # If the suite process is killed (even SIGKILL), its children die too, so a
    # resumed suite never races an orphaned run of the same config.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _interrupt(processes: list[subprocess.Popen], grace: float = 3.0) -> None:
    """Ctrl-C in a terminal reached the runs too (one process group); a SIGINT sent to the suite
    alone did not: after a grace period, interrupt the ones still running."""
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)


class LocalExecutor:
    """One worker thread per device slot takes the next job from a shared queue, so nothing is
    committed ahead of time: on Ctrl-C no further job starts, the ones in flight get SIGINT (their
    records say cancelled) and ``execute`` raises KeyboardInterrupt as soon as they have exited."""

    name = "local"
    description = "child processes on this machine; one run per device slot (--devices)"

    def execute(self, jobs: Sequence[Job], on_start: Callable[[Job], None],
                on_done: Callable[[Job, int], None], devices: Sequence[str] | None = None) -> None:
        pending: queue.Queue[Job] = queue.Queue()
        for job in jobs:
            pending.put(job)
        stop = threading.Event()
        running: dict[str, subprocess.Popen] = {}

        def worker(device: str | None) -> None:
            while not stop.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                on_start(job)
                code = self._run(job, device, running, stop)
                if not stop.is_set():  # a run ended by the interrupt is not a failure to report
                    on_done(job, code)

        threads = [threading.Thread(target=worker, args=(device,), daemon=True)
                   for device in (list(devices) if devices else [None])]
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

    @staticmethod
    def _run(job: Job, device: str | None, running: dict[str, subprocess.Popen], stop: threading.Event) -> int:
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device)
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with job.log.open("w", encoding="utf-8") as log:
            process = subprocess.Popen([sys.executable, "-m", "peftbench.cli", *job.args], stdout=log,
                                       stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
            running[job.key] = process
            if stop.is_set():  # started just as Ctrl-C came: the interrupt may not have seen it
                process.send_signal(signal.SIGINT)
            try:
                return process.wait()
            finally:
                running.pop(job.key, None)
