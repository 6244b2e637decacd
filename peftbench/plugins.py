"""Plugin manager: loads every distribution's ``peftbench`` entry points into registries."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .api import Backbone, Method, MethodWrapper, TableSpec, Task
from .errors import RegistryError, UnknownComponentError
from .executor import Executor, LocalExecutor
from .registry import Registry

ENTRY_POINT_GROUP = "peftbench"


@dataclass
class Components:
    methods: Registry[Method]
    tasks: Registry[Task]
    backbones: Registry[Backbone]
    tables: Registry[TableSpec]
    executors: Registry[Executor]
    wrappers: Registry[MethodWrapper]
    manager: pluggy.PluginManager
    stages: Registry[Any] = field(default_factory=lambda: Registry("suite stage"))  # SuiteStage (stages.py)

    def resolve_method(self, name: str) -> Method:
        """A registered method, or ``<prefix>+<method>``: the wrapper named by the prefix around
        the method after the ``+`` (itself resolved the same way)."""
        if name in self.methods:
            return self.methods.get(name)
        prefix, plus, inner = name.partition("+")
        if not plus:
            raise UnknownComponentError(self.methods.unknown_message(name) + self._composition_hint())
        if prefix not in self.wrappers:
            raise UnknownComponentError(f"{self.wrappers.unknown_message(prefix)}; in {name!r} the part before "
                                        f"'+' names a method wrapper")
        composed = self.wrappers.get(prefix).wrap(self.resolve_method(inner))
        if composed.name != name:
            raise RegistryError(f"method wrapper {prefix!r} named its composition {composed.name!r}, not {name!r}")
        return composed

    def method_source(self, name: str) -> str | None:
        if name in self.methods:
            return self.methods.entry(name).source
        prefix, _, inner = name.partition("+")
        return f"{self.wrappers.entry(prefix).source} + {self.method_source(inner)}"

    def _composition_hint(self) -> str:
        prefixes = ", ".join(f"{e.name}+<method>" for e in self.wrappers)
        return f"; compositions: {prefixes}" if prefixes else ""

    def resolve_backbone(self, spec: str) -> Backbone:
        if spec in self.backbones:
            return self.backbones.get(spec)
        close = difflib.get_close_matches(spec, [e.name for e in self.backbones], n=2, cutoff=0.8)
        if close and "/" not in spec and not Path(spec).expanduser().exists():  # a typo, not a hub id or a folder
            raise UnknownComponentError(f"unknown backbone {spec!r}; did you mean {' or '.join(map(repr, close))}?",
                                        "or pass a Hugging Face hub id (org/name) or a local model folder")
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
                    f"which is not a peftbench.sdk.{expected.__name__}"
                )
            registry.add(component.name, component, _source)

        impl.function(register=register)


def load(extra_plugins: tuple[object, ...] = ()) -> Components:
    """Build registries from entry points (plus ``extra_plugins``, used by tests)."""
    manager = pluggy.PluginManager("peftbench")
    manager.add_hookspecs(hookspecs)
    try:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in extra_plugins:
            manager.register(plugin)
        manager.check_pending()  # a function named like no hook (a typo) is an error, not ignored
    except pluggy.PluginValidationError as exc:
        raise RegistryError(f"plugin {_source_of(manager, exc.plugin)} is invalid: {exc}",
                            "rename the function to one of the hooks in docs/writing-plugins.md") from None
    except ValueError as exc:  # pluggy: same plugin object registered twice
        raise RegistryError(f"a peftbench plugin could not be loaded: {exc}") from exc
    components = Components(Registry("method"), Registry("task"), Registry("backbone"), Registry("table"),
                            Registry("executor"), Registry("method wrapper"), manager)
    _collect(manager, "register_methods", components.methods, Method)
    _collect(manager, "register_method_wrappers", components.wrappers, MethodWrapper)
    _collect(manager, "register_tasks", components.tasks, Task)
    _collect(manager, "register_backbones", components.backbones, Backbone)
    _collect(manager, "register_tables", components.tables, TableSpec)
    components.executors.add(LocalExecutor.name, LocalExecutor(), "peftbench")
    _collect(manager, "register_executors", components.executors, Executor)
    from .stages import SuiteStage

    _collect(manager, "register_suite_stages", components.stages, SuiteStage)
    return components


@functools.cache
def default() -> Components:
    return load()


def distributions(components: Components) -> dict[str, str]:
    return {dist.project_name: dist.version for _, dist in components.manager.list_plugin_distinfo()}
