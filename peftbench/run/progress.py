"""Progress bars (rich) for long work, silent when asked to be."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


_active: list["Progress"] = []
# Off a terminal (CI logs, `| tee`, a suite's run logs) a long loop prints a line at most this often.
LINE_EVERY_SECONDS = 30.0


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
        """Yield ``advance(n=1, loss=None)``: a bar on a terminal (the loss in its description);
        elsewhere a line (step, loss, s/step, time left) at most every LINE_EVERY_SECONDS."""
        if self._bars is None:
            yield self._lines(label, total) if not self.quiet else (lambda n=1, loss=None: None)
            return
        task_id = self._bars.add_task(label, total=total)

        def advance(n: int = 1, loss: float | None = None) -> None:
            self._bars.update(task_id, advance=n, **({"description": f"{label} loss {loss:.4f}"}
                                                     if loss is not None else {}))

        try:
            yield advance
        finally:
            self._bars.remove_task(task_id)

    def _lines(self, label: str, total: int) -> Callable[..., None]:
        start = last = time.perf_counter()
        done = 0

        def advance(n: int = 1, loss: float | None = None) -> None:
            nonlocal done, last
            done += n
            now = time.perf_counter()
            if now - last < LINE_EVERY_SECONDS or done >= total:
                return
            last, per_step = now, (now - start) / done
            shown = "" if loss is None else f", loss {loss:.4f}"
            self.log(f"{label}: step {done}/{total}{shown}, {per_step:.2f} s/step, "
                     f"{per_step * (total - done):.0f} s left")

        return advance

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, highlight=False)
