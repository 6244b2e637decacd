"""Plugin manager: loads every distribution's ``peftbench`` entry points."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .api import Backbone, Method, TableSpec, Task
from .errors import RegistryError
from .registry import Registry

ENTRY_POINT_GROUP = "peftbench"


@dataclass
class Components:
    methods: Registry[Method]
    tasks: Registry[Task]
    backbones: Registry[Backbone]
    tables: Registry[TableSpec]
    executors: Registry[Any]
    manager: pluggy.PluginManager

    def resolve_backbone(self, spec: str) -> Backbone:
        if spec in self.backbones:
            return self.backbones.get(spec)
        found = self.manager.hook.resolve_backbone(spec=spec)
        if found is None:
            raise RegistryError(self.backbones.unknown_message(spec))
        return found


def _source_of(manager: pluggy.PluginManager, plugin: object) -> str:
    for dist_plugin, dist in manager.list_plugin_distinfo():
        if dist_plugin is plugin:
            return f"{dist.project_name} {dist.version}"
    return getattr(plugin, "__name__", repr(plugin))


def _collect(manager: pluggy.PluginManager, hook_name: str, registry: Registry, expected: type) -> None:
    hook = getattr(manager.hook, hook_name)
    for impl in hook.get_hookimpls():
        source = _source_of(manager, impl.plugin)

        def register(component: Any, _source: str = source) -> None:
            if not isinstance(component, expected):
                raise RegistryError(
                    f"{_source} registered {component!r} via {hook_name}, "
                    f"which is not a peftbench.api.{expected.__name__}"
                )
            registry.add(component.name, component, _source)

        impl.function(register=register)


def load(extra_plugins: tuple[object, ...] = ()) -> Components:
    """Build registries from entry points (plus ``extra_plugins``, used by tests)."""
    manager = pluggy.PluginManager("peftbench")
    manager.add_hookspecs(hookspecs)
    try:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except ValueError as exc:  # pluggy: same plugin object registered twice
        raise RegistryError(f"a peftbench plugin could not be loaded: {exc}") from exc
    for plugin in extra_plugins:
        manager.register(plugin)
    components = Components(Registry("method"), Registry("task"), Registry("backbone"), Registry("table"),
                            Registry("executor"), manager)
    _collect(manager, "register_methods", components.methods, Method)
    _collect(manager, "register_tasks", components.tasks, Task)
    _collect(manager, "register_backbones", components.backbones, Backbone)
    _collect(manager, "register_tables", components.tables, TableSpec)
    from .executor import LocalExecutor

    components.executors.add(LocalExecutor.name, LocalExecutor(), "peftbench")
    _collect(manager, "register_executors", components.executors, object)
    return components


@functools.cache
def default() -> Components:
    return load()


def distributions(components: Components) -> dict[str, str]:
    return {dist.project_name: dist.version for _, dist in components.manager.list_plugin_distinfo()}
