"""What a remote worker (a Slurm job, a Ray task) runs for suite jobs: one `peftbench run ...` as a
child process (`run_command`), or a batch of them one after another in one warm worker
(`run_batch`), each run's output in the suite's log for that run, the exit codes returned."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from peftbench.sdk import WarmWorker, renewed


def _die_with_parent() -> None:
    # The run dies with the worker that started it (a killed Ray worker, a cancelled job), so a
    # resumed suite never races an orphaned run of the same configuration.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_command(args: Sequence[str], log: str) -> int:
    """One `peftbench run`; an interrupt or SIGTERM of the worker is passed on to it as SIGINT, so
    its record says cancelled."""
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen([sys.executable, "-m", "peftbench.cli", *args], stdout=handle,
                                   stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            return process.wait()
        except BaseException:
            process.send_signal(signal.SIGINT)
            process.wait()
            raise


def _stop(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def run_batch(runs: Sequence[tuple[Sequence[str], str]], runs_per_worker: int = 25, memory_gb: float = 8.0) -> list[int]:
    """Several runs in one job: one after another in a warm worker (`peftbench.suite.workers`: torch and
    the plugins imported once), renewed as the local executor renews its own. A SIGTERM (a time
    limit, a cancel) or an interrupt of the job reaches the run in progress as SIGINT, so its record
    says cancelled; the runs after it do not start, and their logs say so (the next suite run runs
    them)."""
    previous = signal.signal(signal.SIGTERM, _stop)
    codes: list[int] = []
    worker = None
    try:
        for args, log in runs:
            worker = renewed(worker, None, runs_per_worker, memory_gb)
            codes.append(worker.run(list(args), Path(log)))
    except BaseException:
        if worker is not None and worker.process.poll() is None:
            worker.send_signal(signal.SIGINT)  # the run in progress records cancelled ...
            worker.process.stdin.close()  # ... and the worker ends after it
            worker.process.wait(60)
        for _, log in runs[len(codes) + 1:]:
            Path(log).write_text("peftbench: not started: its job was stopped before this run's turn; the next "
                                 "`suite run` runs it\n", encoding="utf-8")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if worker is not None:
            worker.close()
    return codes
