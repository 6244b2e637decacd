"""Plugin manager: every distribution's ``peftbench`` entry points, as registries.

A plugin is imported when one of its components is first looked up (or a hook it implements is
called): the plugin index (index.py) says which names each plugin registers. Without an index (the
first start after an install or a code change) every plugin is imported once and the index kept."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pluggy

from .. import hookspecs
from ..api import Backbone, Method, MethodWrapper, TableSpec, Task
from ..errors import RegistryError, UnknownComponentError
from ..executor import Executor
from ..stages import SuiteStage
from .index import PluginEntry, index_key, plugin_entries, read_index, write_index
from .registry import Pending, Registry

# registry field -> (hook that fills it, what a component must be)
KINDS: dict[str, tuple[str, type]] = {
    "methods": ("register_methods", Method), "wrappers": ("register_method_wrappers", MethodWrapper),
    "tasks": ("register_tasks", Task), "backbones": ("register_backbones", Backbone),
    "tables": ("register_tables", TableSpec), "executors": ("register_executors", Executor),
    "stages": ("register_suite_stages", SuiteStage),
}


@dataclass
class Components:
    methods: Registry[Method]
    tasks: Registry[Task]
    backbones: Registry[Backbone]
    tables: Registry[TableSpec]
    executors: Registry[Executor]
    wrappers: Registry[MethodWrapper]
    manager: pluggy.PluginManager
    stages: Registry[SuiteStage] = field(default_factory=lambda: Registry("suite stage"))
    entries: list[PluginEntry] = field(default_factory=list)  # every installed plugin, loaded or not
    _hooks: dict[str, list[Callable[[], None]]] = field(default_factory=dict)  # hook -> loaders of its plugins

    def hook(self, name: str) -> Any:
        """``manager.hook.<name>``, every plugin that implements it imported first."""
        for load in self._hooks.get(name, ()):
            load()
        return getattr(self.manager.hook, name)

    def resolve_method(self, name: str) -> Method:
        """A registered method, or ``<prefix>+<method>``: the wrapper named by the prefix around
        the method after the ``+`` (itself resolved the same way)."""
        prefix, plus, inner = name.partition("+")
        if name in self.methods or not plus:
            try:
                return self.methods.get(name)
            except UnknownComponentError as exc:
                raise UnknownComponentError(f"{exc.what}{self._composition_hint()}") from None
        if not self.wrappers.find(prefix):
            raise UnknownComponentError(f"{self.wrappers.unknown_message(prefix)}; in {name!r} the part before "
                                        f"'+' names a method wrapper")
        composed = self.wrappers.get(prefix).wrap(self.resolve_method(inner))
        if composed.name != name:
            raise RegistryError(f"method wrapper {prefix!r} ({self.wrappers.entry(prefix).origin}) named its "
                                f"composition {composed.name!r}, not {name!r}")
        return composed

    def method_source(self, name: str) -> str | None:
        if name in self.methods:
            return self.methods.entry(name).source
        prefix, _, inner = name.partition("+")
        return f"{self.wrappers.entry(prefix).source} + {self.method_source(inner)}"

    def _composition_hint(self) -> str:
        prefixes = ", ".join(f"{name}+<method>" for name in self.wrappers.names())
        return f"; compositions: {prefixes}" if prefixes else ""

    def resolve_backbone(self, spec: str) -> Backbone:
        if self.backbones.find(spec):
            return self.backbones.get(spec)
        close = difflib.get_close_matches(spec, self.backbones.names(), n=2, cutoff=0.8)
        if close and "/" not in spec and not Path(spec).expanduser().exists():  # a typo, not a hub id or a folder
            raise UnknownComponentError(f"unknown backbone {spec!r}; did you mean {' or '.join(map(repr, close))}?",
                                        "or pass a Hugging Face hub id (org/name) or a local model folder")
        found = self.hook("resolve_backbone")(spec=spec)
        if found is None:
            raise RegistryError(self.backbones.unknown_message(spec))
        return found


def _register(manager: pluggy.PluginManager, plugin: object, name: str | None, origin: str) -> None:
    try:
        manager.register(plugin, name=name)
        manager.check_pending()  # a function named like no hook (a typo) is an error, not ignored
    except pluggy.PluginValidationError as exc:
        manager.unregister(plugin)
        raise RegistryError(f"plugin {origin} is invalid: {exc}",
                            "rename the function to one of the hooks in docs/writing-plugins.md") from None
    except ValueError as exc:  # pluggy: same plugin object registered twice
        raise RegistryError(f"plugin {origin} could not be loaded: {exc}") from exc


def _collect(components: Components, plugin: object, source: str, module: str) -> dict[str, list[str]]:
    """Call the plugin's register hooks into the registries; returns registry field -> names."""
    registered: dict[str, list[str]] = {}
    origin = f"{source} ({module})" if module else source
    for kind, (hook_name, expected) in KINDS.items():
        registry = getattr(components, kind)
        for impl in getattr(components.manager.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue

            def register(component: Any, _registry: Registry = registry, _kind: str = kind,
                         _hook: str = hook_name, _expected: type = expected) -> None:
                if not isinstance(component, _expected):
                    raise RegistryError(f"{origin} registered {component!r} via {_hook}, "
                                        f"which is not a peftbench.sdk.{_expected.__name__}")
                _registry.add(component.name, component, source, module)
                registered.setdefault(_kind, []).append(component.name)

            impl.function(register=register)
    return registered


def _import_plugin(entry: PluginEntry) -> object:
    import importlib

    module, _, attribute = entry.module.partition(":")  # "module" or "module:object", as entry points allow
    try:
        plugin = importlib.import_module(module)
        for name in attribute.split(".") if attribute else ():
            plugin = getattr(plugin, name)
        return plugin
    except Exception as exc:  # noqa: BLE001 - any failure of a plugin's import: one line naming the plugin
        raise RegistryError(f"plugin {entry.origin} cannot be imported: {type(exc).__name__}: {exc}",
                            f"reinstall {entry.dist}, or uninstall it") from exc


def _hooks_of(manager: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(caller.name for caller in manager.get_hookcallers(plugin) or ())


def _loader(components: Components, entry: PluginEntry) -> Callable[[], None]:
    loaded: list[bool] = []

    def load() -> None:
        if not loaded:
            loaded.append(True)
            plugin = _import_plugin(entry)
            _register(components.manager, plugin, entry.key, entry.origin)
            _collect(components, plugin, entry.source, entry.module)

    return load


def _load_all(components: Components) -> dict[str, dict[str, Any]]:
    """Import every plugin now; returns the index they make."""
    index = {}
    for entry in components.entries:
        plugin = _import_plugin(entry)
        _register(components.manager, plugin, entry.key, entry.origin)
        registered = _collect(components, plugin, entry.source, entry.module)
        index[entry.key] = {"hooks": _hooks_of(components.manager, plugin), "components": registered}
    return index


def _load_lazily(components: Components, index: dict[str, dict[str, Any]]) -> None:
    for entry in components.entries:
        load = _loader(components, entry)
        for kind, names in index[entry.key]["components"].items():
            for name in names:
                getattr(components, kind).add_pending(name, Pending(entry.source, entry.module, load))
        for hook_name in index[entry.key]["hooks"]:
            components._hooks.setdefault(hook_name, []).append(load)
        for kind, (hook_name, _) in KINDS.items():
            if hook_name in index[entry.key]["hooks"]:
                getattr(components, kind).add_loader(load)


def load(extra_plugins: tuple[object, ...] = ()) -> Components:
    """Registries of every installed plugin (imported on first look-up where the plugin index is
    kept), plus ``extra_plugins`` (objects, used by tests), registered at once."""
    manager = pluggy.PluginManager("peftbench")
    manager.add_hookspecs(hookspecs)
    components = Components(Registry("method"), Registry("task"), Registry("backbone"), Registry("table"),
                            Registry("executor"), Registry("method wrapper"), manager, entries=plugin_entries())
    key = index_key(components.entries)
    index = read_index(key, components.entries, set(KINDS))
    if index is None:
        write_index(key, _load_all(components))
    else:
        _load_lazily(components, index)
    for plugin in extra_plugins:
        origin = getattr(plugin, "__name__", type(plugin).__name__)
        _register(manager, plugin, None, origin)
        _collect(components, plugin, origin, "")
    return components


@functools.cache
def default() -> Components:
    return load()


def distributions(components: Components) -> dict[str, str]:
    """The distributions that ship plugins, loaded or not: what a record keeps."""
    return {entry.dist: entry.version for entry in components.entries}
