from __future__ import annotations

import pytest

from peftbench import plugins
from peftbench.errors import RegistryError, UnknownComponentError
from peftbench.sdk import hookimpl
from peftbench.registry import Registry


def test_duplicate_name_is_an_error_naming_both_sources():
    registry: Registry[str] = Registry("method")
    registry.add("lora", "a", "pkg-a 1.0")
    with pytest.raises(RegistryError, match="pkg-a 1.0 and by pkg-b 2.0"):
        registry.add("lora", "b", "pkg-b 2.0")


def test_unknown_name_suggests_close_ones():
    registry: Registry[str] = Registry("task")
    registry.add("livedoor-news", "x", "peftbench")
    with pytest.raises(UnknownComponentError, match="did you mean 'livedoor-news'"):
        registry.get("livedoor-new")


def test_builtins_come_from_entry_points():
    comps = plugins.load()
    assert {"full", "lora"} <= {e.name for e in comps.methods}
    assert "livedoor-news" in comps.tasks
    assert "minilm-l6" in comps.backbones
    assert comps.methods.entry("lora").source.startswith("peftbench ")


def test_a_plugin_cannot_silently_replace_a_builtin():
    from peftbench_plugins.methods.lora_model import Lora

    class Clash:
        @hookimpl
        def register_methods(self, register):
            register(Lora())

    with pytest.raises(RegistryError, match="registered twice"):
        plugins.load(extra_plugins=(Clash(),))


def test_registering_a_non_component_is_rejected():
    class Broken:
        @hookimpl
        def register_tasks(self, register):
            register("not a task")

    with pytest.raises(RegistryError, match="not a peftbench.sdk.Task"):
        plugins.load(extra_plugins=(Broken(),))


def test_unknown_backbone_string_goes_to_resolver():
    comps = plugins.load()
    backbone = comps.resolve_backbone("some-org/some-model")
    assert backbone.name == "some-org/some-model"
