"""Hook specifications: the whole plugin surface of peftbench.

A plugin is a module (or object) with functions named like the hooks below,
decorated with ``peftbench.sdk.hookimpl``, and listed under the ``peftbench``
entry-point group of its distribution::

    [project.entry-points.peftbench]
    my-method = "my_package.my_method"

A hook implementation may take any subset of a hook's parameters (pluggy
passes them by name). A function named like no hook below is an error when
plugins load (``PluginManager.check_pending``), so a typo is never silently
ignored. Register hooks only *declare* components; all per-run behaviour
lives in the components themselves (see peftbench.api). docs/writing-plugins.md
documents each hook with an example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

from .api import Backbone, Method, MethodWrapper, TableSpec, Task

if TYPE_CHECKING:  # typer and the executor protocol are only needed by whoever calls these hooks
    import typer

    from .executor import Executor

hookspec = pluggy.HookspecMarker("peftbench")
hookimpl = pluggy.HookimplMarker("peftbench")


@hookspec
def register_methods(register: Callable[[Method], None]) -> None:
    """Declare methods.

    :param register: call ``register(method)`` once per Method instance this plugin provides;
        a name another plugin already registered is an error naming both plugins.
    """


@hookspec
def register_method_wrappers(register: Callable[[MethodWrapper], None]) -> None:
    """Declare methods that compose with any method (``<prefix>+<method>``, e.g. ``tapt+lora``).

    :param register: call ``register(wrapper)`` once per MethodWrapper; its ``prefix`` must be
        unique among wrappers.
    """


@hookspec
def register_tasks(register: Callable[[Task], None]) -> None:
    """Declare tasks.

    :param register: call ``register(task)`` once per Task instance this plugin provides.
    """


@hookspec
def register_backbones(register: Callable[[Backbone], None]) -> None:
    """Declare *named* backbones (e.g. ``minilm-l6``).

    :param register: call ``register(backbone)`` once per Backbone instance.
    """


@hookspec(firstresult=True)
def resolve_backbone(spec: str) -> Backbone | None:
    """Turn a free-form ``--backbone`` value (a hub id, a local path) into a Backbone.

    :param spec: the value as the user wrote it; called only when it is not a registered name.
    :return: a Backbone, or None to let the next plugin try; the first non-None answer wins.
    """


@hookspec
def register_tables(register: Callable[[TableSpec], None]) -> None:
    """Declare named report layouts (``peftbench report --table NAME``).

    :param register: call ``register(table)`` once per TableSpec.
    """


@hookspec
def register_executors(register: Callable[["Executor"], None]) -> None:
    """Declare suite executors (``peftbench suite run --executor NAME``).

    :param register: call ``register(executor)`` with an object that satisfies
        ``peftbench.sdk.Executor`` (checked when it registers).
    """


@hookspec
def register_commands(app: "typer.Typer", context: Any) -> None:
    """Add sub-commands to the ``peftbench`` command line (e.g. ``peftbench backbone build``).

    :param app: the root Typer app; add commands or sub-apps to it.
    :param context: a ``peftbench.sdk.CommandContext`` (typed loosely here, so the hook contracts
        import nothing above them): what a command may use when it runs: the loaded components, resolving a
        run's settings, a task's settings from ``--set`` pairs. Use it instead of globals.
    """


@hookspec
def register_suite_stages(register: Callable[[Any], None]) -> None:
    """Declare suite stages (``peftbench.sdk.SuiteStage``): a top-level table of a suite file named like
    the stage runs it after the suite's runs succeeded (e.g. ``[lm_eval]``).

    :param register: call ``register(stage)`` once per stage.
    """
