"""Hook specifications: the whole plugin surface of peftbench.

A plugin is a module (or object) with functions named like the hooks below,
decorated with ``peftbench.hookimpl``, and listed under the ``peftbench``
entry-point group of its distribution::

    [project.entry-points.peftbench]
    my-method = "my_package.my_method"

Register hooks only *declare* components; all per-run behaviour lives in the
components themselves (see peftbench.api).
"""

from __future__ import annotations

from typing import Callable

import pluggy

from .api import Backbone, Method, TableSpec, Task

hookspec = pluggy.HookspecMarker("peftbench")
hookimpl = pluggy.HookimplMarker("peftbench")


@hookspec
def register_methods(register: Callable[[Method], None]) -> None:
    """Call ``register(method)`` for each Method this plugin provides."""


@hookspec
def register_tasks(register: Callable[[Task], None]) -> None:
    """Call ``register(task)`` for each Task this plugin provides."""


@hookspec
def register_backbones(register: Callable[[Backbone], None]) -> None:
    """Call ``register(backbone)`` for each *named* Backbone this plugin provides."""


@hookspec(firstresult=True)
def resolve_backbone(spec: str) -> Backbone | None:
    """Return a Backbone for a free-form spec (a hub id, a local path) or None.

    Called only when ``spec`` is not a registered backbone name; the first
    non-None answer wins.
    """


@hookspec
def register_tables(register: Callable[[TableSpec], None]) -> None:
    """Call ``register(table)`` for each named report layout (``peftbench report --table NAME``)."""


@hookspec
def register_executors(register: Callable[[object], None]) -> None:
    """Call ``register(executor)`` for each suite executor (see peftbench.executor.Executor)."""


@hookspec
def register_commands(app: object) -> None:
    """Add sub-commands to the `peftbench` Typer app (e.g. `peftbench backbone build`)."""
