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
from concurrent.futures import ThreadPoolExecutor
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
        """Run every job; call on_start/on_done (with the exit code) as each starts/ends."""


def _die_with_parent() -> None:
    # If the suite process is killed (even SIGKILL), its children die too, so a
    # resumed suite never races an orphaned run of the same config.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalExecutor:
    name = "local"
    description = "child processes on this machine; one run per device slot (--devices)"

    def execute(self, jobs: Sequence[Job], on_start: Callable[[Job], None],
                on_done: Callable[[Job, int], None], devices: Sequence[str] | None = None) -> None:
        slot_devices = list(devices) if devices else [None]
        slots: queue.Queue = queue.Queue()
        for device in slot_devices:
            slots.put(device)

        def work(job: Job) -> None:
            device = slots.get()
            try:
                env = dict(os.environ)
                if device is not None:
                    env["CUDA_VISIBLE_DEVICES"] = str(device)
                on_start(job)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with job.log.open("w", encoding="utf-8") as log:
                    code = subprocess.run([sys.executable, "-m", "peftbench.cli", *job.args], stdout=log,
                                          stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent).returncode
                on_done(job, code)
            finally:
                slots.put(device)

        with ThreadPoolExecutor(max_workers=len(slot_devices)) as pool:
            for future in [pool.submit(work, job) for job in jobs]:
                future.result()
