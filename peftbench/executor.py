"""Executors run a suite's runs. The suite logic (expand, skip, resume) never
changes with the executor; an executor only has to run `peftbench run ...`
command lines and report each exit code.

The contract is here (`Executor`, `Job`, and `ConfiguredExecutor`, the base every
executor with `--set` settings shares); the built-in `local` executor is in
`peftbench.suite.local_executor`. A distributed engine (Ray, Slurm through
submitit, ...) plugs in as a plugin registering another Executor via the
`register_executors` hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable


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


class ConfiguredExecutor:
    """What every executor shares: its ``name``, ``description`` and settings dataclass ``Config``
    (``--set`` values of ``suite run --executor NAME``), held as ``self.config``; ``configure``
    returns a new executor with other settings. Subclasses add ``execute``."""

    name: str
    description: str
    Config: type

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    def configure(self, config: Any) -> "ConfiguredExecutor":
        return type(self)(config)
