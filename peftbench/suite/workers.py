"""Warm workers: processes that run one suite job after another, so a study of hundreds of short runs
pays for Python, torch, transformers and the plugins once per worker instead of once per run.

The suite side (`WarmWorker`, here) talks to a worker (`python -m peftbench.cli.worker`) over two
pipes: one JSON line per job in (`{"args": [...], "log": "..."}`), one JSON line per finished job out
(`{"code": N, "rss": bytes}`). The worker runs `peftbench <args>` in its own process with stdout and
stderr sent to the job's log at the file-descriptor level, exactly where a per-run child process
would have written them.

Isolation: before each run the worker puts back what it saw at start-up (environment, working
directory, torch threads and deterministic flags, warning filters, accelerate's process-wide
state); the run seeds itself as a fresh process does. A test runs A then B in one worker and checks
B's record against B run alone. A run that kills its worker (a segfault, the OOM killer) fails that
run only: the suite side reports the signal in the run's log and starts a new worker for the next.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence


def die_with_parent() -> None:
    # If the suite process is killed (even SIGKILL), its children (runs, warm workers) die too, so a
    # resumed suite never races an orphaned run of the same config.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class WarmWorker:
    """The suite's handle on one worker process; used by one thread (its device slot)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "peftbench.cli.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
                                        preexec_fn=die_with_parent)
        self.runs = 0
        self.resident = 0
        self.idle = threading.Event()
        self.idle.set()
        self._ready: bool | None = None  # read at the first run: starting many workers does not wait on each

    @property
    def ready(self) -> bool:
        if self._ready is None:
            self._ready = self._answer() is not None
        return self._ready

    def _answer(self) -> dict | None:
        line = self.process.stdout.readline()
        return json.loads(line) if line else None

    def run(self, args: Sequence[str], log: Path) -> int:
        """The run's exit code; a worker that died during it gives the signal's (negative) code."""
        self.idle.clear()
        try:
            if not self.ready:
                return self._died(log)
            try:
                self.process.stdin.write(json.dumps({"args": list(args), "log": str(log)}) + "\n")
                self.process.stdin.flush()
            except BrokenPipeError:
                return self._died(log)
            answer = self._answer()
            if answer is None:
                return self._died(log)
            self.runs += 1
            self.resident = answer["rss"]
            return answer["code"]
        finally:
            self.idle.set()

    def _died(self, log: Path) -> int:
        self._ready = False
        code = self.process.wait()
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as handle:
            cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            handle.write(f"\npeftbench: the warm worker running this run died ({cause}); "
                         "the suite starts a new one for the next run\n")
        return code if code != 0 else 1

    @property
    def alive(self) -> bool:
        return self._ready is not False and self.process.poll() is None

    def wait(self, timeout: float) -> bool:
        """Whether the run in progress (if any) ended within ``timeout`` seconds."""
        return self.idle.wait(timeout)

    def send_signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def close(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()  # end of jobs: the worker's loop ends
            except BrokenPipeError:
                pass
        if self.idle.is_set() and self.process.poll() is None:
            # Between runs a worker holds nothing unsaved (a run writes its record before it answers):
            # ending it now spares the suite the second or so of an interpreter shutting torch down.
            self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def renewed(worker: WarmWorker | None, env: dict[str, str] | None, runs_per_worker: int,
            memory_gb: float) -> WarmWorker:
    """``worker``, or a new one in its place when there is none, or it died, ran ``runs_per_worker``
    runs or grew past ``memory_gb`` of resident memory (what a run leaves behind never piles up)."""
    if worker is not None and worker.alive and worker.runs < runs_per_worker and worker.resident <= memory_gb * 2**30:
        return worker
    if worker is not None:
        worker.close()
    return WarmWorker(env)
