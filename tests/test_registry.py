from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftbench.components import plugins
from peftbench.errors import RegistryError, UnknownComponentError
from peftbench.sdk import hookimpl
from peftbench.components.registry import Registry


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


# The plugin index: a command imports the plugins it uses; the index follows a plugin's code.
PLUGIN = '''from peftbench.sdk import hookimpl


class Demo:
    def __init__(self, name):
        self.name, self.description = name, "a demo executor"

    def execute(self, jobs, on_start, on_done, devices=None):
        pass


@hookimpl
def register_executors(register):
    for name in NAMES:
        register(Demo(name))
'''


def _distribution(site, names: list[str], broken: bool = False, value: str = "demo_plugin",
                  entry: str = "demo") -> None:
    site.mkdir(exist_ok=True)
    (site / "demo_plugin.py").write_text(("raise RuntimeError('half installed')\n" if broken else "")
                                         + f"NAMES = {names!r}\n" + PLUGIN, encoding="utf-8")
    info = site / "demo_plugin-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[peftbench]\n{entry} = {value}\n", encoding="utf-8")


def _in_fresh_process(site, code: str) -> subprocess.CompletedProcess:
    """``code`` after ``comps = plugins.load()`` in a fresh process that also sees the distributions
    in ``site``; the session's cache (peft's catalogue read once) holds the plugin indexes."""
    env = dict(os.environ, PYTHONPATH=str(site))
    prelude = "import sys\nfrom peftbench.components import plugins\ncomps = plugins.load()\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, timeout=300)


def test_a_plugin_is_imported_on_first_look_up_and_the_index_follows_its_code(tmp_path):
    site = tmp_path / "site"
    _distribution(site, ["demo-a"])
    shown = "print(comps.executors.names(), 'demo_plugin' in sys.modules, 'peftbench_plugins.methods.lora' in sys.modules)"
    first = _in_fresh_process(site, shown)  # no index yet: every plugin imported once, the index kept
    assert first.stdout.split()[-2:] == ["True", "True"], first.stderr
    lazy = _in_fresh_process(site, shown + "\ncomps.executors.get('demo-a'); print('demo_plugin' in sys.modules)")
    assert lazy.stdout.splitlines() == ["['demo-a', 'local', 'ray', 'slurm'] False False", "True"], lazy.stderr
    newest = max((Path(os.environ["PEFTBENCH_CACHE"]) / "plugin-index").iterdir(), key=lambda p: p.stat().st_mtime)
    assert json.loads(newest.read_text())["demo-plugin/demo"] == {
        "hooks": ["register_executors"], "components": {"executors": ["demo-a"]}}
    time.sleep(0.01)
    _distribution(site, ["demo-a", "demo-b"])  # the plugin's code changed, its version did not
    changed = _in_fresh_process(site, shown)
    assert changed.stdout.startswith("['demo-a', 'demo-b', 'local'"), changed.stderr


def test_a_method_run_imports_only_the_plugins_it_names(tmp_path):
    code = ("comps.resolve_method('lora'); comps.tasks.get('livedoor-news'); comps.resolve_backbone('minilm-l6')\n"
            "print(sorted(m for m in sys.modules if m.startswith('peftbench_plugins.') and m.count('.') == 2))")
    _in_fresh_process(tmp_path, "")  # the index
    imported = eval(_in_fresh_process(tmp_path, code).stdout.splitlines()[-1])
    assert "peftbench_plugins.methods.lora" in imported and "peftbench_plugins.tasks.livedoor" in imported
    for unused in ("methods.peft_tuners", "methods.adapters_configs", "methods.multitask", "tasks.kwdlc",
                   "tasks.gsm8k", "commands.lm_eval", "executors.ray_executor"):
        assert f"peftbench_plugins.{unused}" not in imported


def test_a_plugin_that_cannot_be_imported_is_named_with_its_distribution_and_module(tmp_path):
    _distribution(tmp_path / "site", ["demo-a"], broken=True)
    done = _in_fresh_process(tmp_path / "site", "")
    assert ("plugin demo-plugin 1.0 (demo_plugin) cannot be imported: RuntimeError: half installed"
            in done.stderr), done.stderr[-800:]


def test_a_duplicate_names_both_plugins_modules():
    from peftbench_plugins.methods.lora_model import Lora

    class Clash:
        @hookimpl
        def register_methods(self, register):
            register(Lora())

    with pytest.raises(RegistryError, match=r"by peftbench \S+ \(peftbench_plugins\.methods\.lora\) and by Clash"):
        plugins.load(extra_plugins=(Clash(),))


def test_a_name_the_index_does_not_know_is_looked_for_in_every_plugin_of_its_kind(tmp_path):
    """A plugin that registers from a catalogue of its own (the built scratch backbones) registers
    names its index entry does not hold; a look-up of such a name imports the plugins of that kind."""
    site = tmp_path / "site"
    _distribution(site, ["demo-a"])
    catalogue = tmp_path / "names.txt"
    plugin = (site / "demo_plugin.py").read_text().replace(
        "NAMES = ['demo-a']", f"import pathlib\nNAMES = ['demo-a'] + pathlib.Path({str(catalogue)!r}).read_text().split()")
    (site / "demo_plugin.py").write_text(plugin)
    catalogue.write_text("")
    _in_fresh_process(site, "")  # the index: demo-a only
    catalogue.write_text("demo-built")
    found = _in_fresh_process(site, "print(comps.executors.get('demo-built').name)\n"
                              "comps.executors.get('nothing')")
    assert found.stdout.split() == ["demo-built"] and "unknown executor 'nothing'" in found.stderr, found.stderr


def test_an_entry_point_may_name_an_object_in_its_module(tmp_path):
    site = tmp_path / "site"
    _distribution(site, ["demo-a"], value="demo_plugin:PLUGIN")
    (site / "demo_plugin.py").write_text((site / "demo_plugin.py").read_text().replace(
        "@hookimpl\ndef register_executors(register):", "class Plugin:\n    @hookimpl\n    def register_executors(self, register):")
        .replace("    for name in NAMES:\n        register(Demo(name))", "        for name in NAMES:\n            register(Demo(name))")
        + "\n\nPLUGIN = Plugin()\n", encoding="utf-8")
    for _ in range(2):  # the index, then a look-up through it
        found = _in_fresh_process(site, "print(comps.executors.entry('demo-a').origin)")
        assert found.stdout.split() == ["demo-plugin", "1.0", "(demo_plugin:PLUGIN)"], found.stderr


def test_an_entry_named_like_a_builtin_one_is_loaded_too(tmp_path):
    """Entry names are labels: a distribution that calls its entry `lora` (as peftbench does) adds its
    components, where pluggy's loader skipped a second plugin of a name already registered."""
    _distribution(tmp_path / "site", ["demo-a"], entry="lora")
    for _ in range(2):  # the index, then a look-up through it
        found = _in_fresh_process(tmp_path / "site", "print(comps.executors.get('demo-a').name, "
                                  "comps.methods.entry('lora').module)")
        assert found.stdout.split() == ["demo-a", "peftbench_plugins.methods.lora"], found.stderr


def test_a_damaged_plugin_index_is_built_again(tmp_path):
    site = tmp_path / "site"
    _distribution(site, ["demo-a"])
    _in_fresh_process(site, "")
    newest = max((Path(os.environ["PEFTBENCH_CACHE"]) / "plugin-index").iterdir(), key=lambda p: p.stat().st_mtime)
    damaged = {key: {"hooks": "register_executors"} for key in json.loads(newest.read_text())}
    newest.write_text(json.dumps(damaged))
    found = _in_fresh_process(site, "print(comps.executors.get('demo-a').name)")
    assert found.stdout.split() == ["demo-a"], found.stderr
    assert json.loads(newest.read_text())["demo-plugin/demo"]["components"] == {"executors": ["demo-a"]}
