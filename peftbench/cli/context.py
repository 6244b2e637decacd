"""What a plugin's command may use when it runs: the ``context`` of the ``register_commands`` hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # loaded when a command runs, so adding commands costs nothing to `peftbench --help`
    from ..api import Task
    from ..components.plugins import Components
    from ..run.spec import Resolved


class CommandContext:
    """What a plugin's command may use when it runs (``register_commands``' ``context``).

    The components load on first use, so adding commands costs nothing to
    ``peftbench --help``.
    """

    def __init__(self, load: Callable[[], Components]) -> None:
        self._load = load

    @property
    def components(self) -> Components:
        return self._load()

    def resolve(self, method: str, task: str, backbone: str | None = None,
                sets: Sequence[str] = ()) -> "Resolved":
        """A run's components and validated settings, exactly as ``peftbench run`` resolves them."""
        from ..run.spec import resolve

        return resolve(self.components, method, task, backbone, list(sets))

    def task_config(self, task: str, sets: Sequence[str] = ()) -> tuple[Task, Any]:
        """A task and its settings from ``--set`` pairs (only the task's keys are accepted)."""
        from ..config import apply_sets, parse_sets

        task_obj = self.components.tasks.get(task)
        return task_obj, apply_sets({"task": task_obj.default_config()}, parse_sets(list(sets)))["task"]
