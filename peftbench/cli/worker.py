"""The warm worker's side (`python -m peftbench.cli.worker`): read one job per JSON line on stdin,
run `peftbench <args>` in this process with its output in the job's log, answer one JSON line per
job on stdout. The suite's side is `peftbench.suite.workers.WarmWorker`.

Isolation: before each run the worker puts back what it saw at start-up (environment, working
directory, signal handlers, torch threads and deterministic flags, warning filters, accelerate's
process-wide state); the run seeds itself as a fresh process does.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


@dataclass
class _ProcessState:
    """What a run may change in its process and the next run must not inherit."""

    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: str = field(default_factory=os.getcwd)
    warning_filters: list = field(default_factory=lambda: list(warnings.filters))
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    signals: dict[int, Any] = field(default_factory=lambda: {sig: signal.getsignal(sig)
                                                             for sig in (signal.SIGINT, signal.SIGTERM)})
    torch: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        self.torch = {"threads": torch.get_num_threads(), "dtype": torch.get_default_dtype(),
                      "deterministic": torch.are_deterministic_algorithms_enabled(),
                      "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)}

    def restore(self, collect: bool = True) -> None:
        import torch
        from accelerate.state import AcceleratorState, GradientState

        from ..errors import Interrupted, Terminated

        os.environ.clear()
        os.environ.update(self.environ)
        os.chdir(self.cwd)
        warnings.filters[:] = self.warning_filters
        sys.argv[:] = self.argv
        for sig, handler in self.signals.items():  # a run installs its own (cli_run); they end with it
            signal.signal(sig, handler)
        Interrupted.requested = Terminated.received = False
        torch.set_num_threads(self.torch["threads"])
        torch.set_default_dtype(self.torch["dtype"])
        torch.use_deterministic_algorithms(self.torch["deterministic"])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self.torch["cudnn"]
        # Accelerator() keeps its device and mixed precision process-wide; the next run sets its own.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        if "torch._dynamo" in sys.modules:  # compile=true: the next run compiles afresh, as in its own
            torch._dynamo.reset()           # process (and never meets dynamo's recompile limit)
        if not collect:
            return
        gc.collect()  # the last run's model and data, before the next one allocates its own
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run_in_process(args: Sequence[str], log: Path, start: _ProcessState) -> int:
    """`peftbench <args>` in this process, its output (Python's and C's alike) into ``log``."""
    from . import entry as cli

    start.restore(collect=False)
    os.environ["PEFTBENCH_RUN_STARTED"] = repr(time.time())  # a run's startup marks count from here
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            sys.argv[:] = ["peftbench", *args]
            cli.main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # noqa: BLE001  (a plugin's bug fails its run, not the worker)
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    start.restore()
    return code


def _resident_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def serve() -> None:
    """The worker's loop: read a job, run it, answer; until the suite closes the pipe."""
    jobs = os.fdopen(os.dup(0), "r", encoding="utf-8")
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # a run reads no stdin, and nothing but answers may reach the suite's pipe
        os.dup2(devnull, fd)
    try:
        from .. import collector
        from . import app as cli_app, entry  # noqa: F401  (the imports every run needs, once)

        collector.tune_collection()  # before the heavy imports, which make most of the collector's work
        import accelerate  # noqa: F401
        import transformers  # noqa: F401

        cli_app.components()
        start = _ProcessState()
        # What the imports made lives as long as the worker: frozen, it is not walked again by the
        # collection between runs (_ProcessState.restore; 0.12 s per run here) or by a run's own passes.
        gc.freeze()
        answers.write(json.dumps({"ready": os.getpid()}) + "\n")
        for line in jobs:
            request = json.loads(line)
            code = run_in_process(request["args"], Path(request["log"]), start)
            answers.write(json.dumps({"code": code, "rss": _resident_bytes()}) + "\n")
    except KeyboardInterrupt:
        pass  # Ctrl-C between runs: the suite is stopping


if __name__ == "__main__":
    serve()
