"""Progress bars (rich) for long work, silent when asked to be."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


_active: list["Progress"] = []


def current() -> "Progress":
    """The progress display of the work under way (a silent one when none is): plugins doing long
    work inside a run (e.g. scoring data with a model while encoding) draw their bars on it."""
    return _active[-1] if _active else Progress(enabled=False, quiet=True)


class Progress:
    def __init__(self, console: Console | None = None, enabled: bool = True, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.enabled = enabled and not quiet and self.console.is_terminal
        self.quiet = quiet
        self._bars: RichProgress | None = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._bars = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bars.__enter__()
        _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _active:
            _active.remove(self)
        if self._bars is not None:
            self._bars.__exit__(*exc)
            self._bars = None

    @contextlib.contextmanager
    def steps(self, label: str, total: int) -> Iterator[Callable[..., None]]:
        """Yield ``advance(n=1)``."""
        if self._bars is None:
            yield lambda n=1: None
            return
        task_id = self._bars.add_task(label, total=total)
        try:
            yield lambda n=1: self._bars.advance(task_id, n)
        finally:
            self._bars.remove_task(task_id)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, highlight=False)
