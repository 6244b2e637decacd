"""What a remote worker (a Slurm job, a Ray task) runs for one suite job: `peftbench run ...` as a
child process, its output in the suite's log for that run, its exit code returned."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Sequence


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
