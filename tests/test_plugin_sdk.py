"""The plugin surface: every hook documented and exercised by a test plugin, typos rejected,
executors checked against their protocol, commands given what they need."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from peftbench import hookspecs, sdk
from peftbench.components import plugins
from peftbench.errors import RegistryError
from peftbench.sdk import Column, HeadSpec, LoadedBackbone, TableSpec, hookimpl
from peftbench_plugins.backbones.huggingface import HuggingFaceBackbone
from peftbench_plugins.methods.full_model import FullFineTuning
from peftbench_plugins.tasks.livedoor_corpus import LivedoorNews

REPO = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(f, "peftbench_spec"))


class CopyMethod(FullFineTuning):
    name = "sdk-test-method"


class CopyTask(LivedoorNews):
    name = "sdk-test-task"


class InlineExecutor:
    name = "sdk-test-executor"
    description = "runs nothing; records what it was asked"

    def execute(self, jobs, on_start, on_done, devices=None) -> None:
        for job in jobs:
            on_start(job)
            on_done(job, 0)


class TwiceWrapper(sdk.MethodWrapper):
    """Doubles the inner method's learning rate: the smallest composition."""

    prefix = "sdk-test-twice"

    @dataclasses.dataclass(frozen=True)
    class Config:
        pass

    def wrap(self, inner):
        class Twice(type(inner)):
            name = f"{self.prefix}+{inner.name}"

            def learning_rate(self, config, stage):
                return 2 * super().learning_rate(config, stage)

        return Twice()


class CountingStage(sdk.SuiteStage):
    """A suite stage that writes how many records the suite's results folder holds."""

    name = "sdk_test_stage"

    def check(self, table, where):
        if not isinstance(table.get("out"), str):
            raise sdk.ConfigError(f"{where}: out must be a file name")

    def run(self, table, results, components, log):
        (results / table["out"]).write_text(str(len(list(sdk.iter_records(results)))), encoding="utf-8")


class AllHooks:
    """A plugin that implements every hook, so each one is exercised."""

    @hookimpl
    def register_methods(self, register):
        register(CopyMethod())

    @hookimpl
    def register_method_wrappers(self, register):
        register(TwiceWrapper())

    @hookimpl
    def register_tasks(self, register):
        register(CopyTask())

    @hookimpl
    def register_backbones(self, register):
        register(HuggingFaceBackbone("some/local-folder", name="sdk-test-backbone"))

    @hookimpl
    def resolve_backbone(self, spec):
        return HuggingFaceBackbone(spec, name=spec) if spec.startswith("sdk-test:") else None

    @hookimpl
    def register_tables(self, register):
        register(TableSpec("sdk-test-table", "accuracy only", (Column("accuracy", "scores.test.accuracy"),)))

    @hookimpl
    def register_executors(self, register):
        register(InlineExecutor())

    @hookimpl
    def register_suite_stages(self, register):
        register(CountingStage())

    @hookimpl
    def register_commands(self, app, context):
        @app.command("sdk-test-count")
        def count() -> None:
            typer.echo(f"{len(context.components.methods)} methods; "
                       f"{context.resolve('sdk-test-method', 'sdk-test-task').spec.method}")


def test_the_test_plugin_implements_every_hook():
    assert sorted(name for name in vars(AllHooks) if not name.startswith("_")) == HOOKS


def test_every_hook_is_documented_with_each_parameter():
    guide = (REPO / "docs" / "writing-plugins.md").read_text(encoding="utf-8")
    for name in HOOKS:
        spec = getattr(hookspecs, name)
        params = list(inspect.signature(spec).parameters)
        assert f"### `{name}({', '.join(params)})`" in guide, name
        assert all(f":param {p}:" in spec.__doc__ for p in params), name


def test_every_hook_takes_effect(tmp_path):
    comps = plugins.load(extra_plugins=(AllHooks(),))
    assert "sdk-test-method" in comps.methods and "sdk-test-task" in comps.tasks
    twice = comps.resolve_method("sdk-test-twice+sdk-test-method")
    assert twice.name == "sdk-test-twice+sdk-test-method" and twice.learning_rate(twice.Config(), None) == \
        2 * comps.methods.get("sdk-test-method").learning_rate(twice.Config(), None)
    assert comps.backbones.get("sdk-test-backbone").spec == "some/local-folder"
    assert comps.resolve_backbone("sdk-test:x").name == "sdk-test:x"
    assert comps.tables.get("sdk-test-table").columns[0].field == "scores.test.accuracy"
    ran = []
    comps.executors.get("sdk-test-executor").execute([sdk.Job("k", ("run",), Path("log"))], ran.append,
                                                     lambda job, code: ran.append(code))
    assert len(ran) == 2
    stage = comps.stages.get("sdk_test_stage")
    with pytest.raises(sdk.ConfigError, match=r"\[sdk_test_stage\]: out must be a file name"):
        stage.check({}, "[sdk_test_stage]")
    (tmp_path / "results").mkdir()
    stage.run({"out": "count.txt"}, tmp_path / "results", comps, print)
    assert (tmp_path / "results" / "count.txt").read_text(encoding="utf-8") == "0"
    app = typer.Typer()
    app.command("noop")(lambda: None)
    comps.hook("register_commands")(app=app, context=sdk.CommandContext(lambda: comps))
    result = CliRunner().invoke(app, ["sdk-test-count"])
    assert result.exit_code == 0 and re.search(r"\d+ methods; sdk-test-method", result.output), result.output


def test_a_misspelled_hook_is_an_error_naming_it():
    class Typo:
        @hookimpl
        def register_method(self, register):  # missing "s"
            register(CopyMethod())

    with pytest.raises(RegistryError, match="register_method"):
        plugins.load(extra_plugins=(Typo(),))


def test_an_executor_without_execute_is_rejected():
    class NotAnExecutor:
        name = "half"
        description = "has no execute"

    class Plugin:
        @hookimpl
        def register_executors(self, register):
            register(NotAnExecutor())

    with pytest.raises(RegistryError, match="not a peftbench.sdk.Executor"):
        plugins.load(extra_plugins=(Plugin(),))


def test_the_sdk_exports_what_it_lists():
    assert all(hasattr(sdk, name) for name in sdk.__all__)
    assert LoadedBackbone is sdk.LoadedBackbone and HeadSpec is sdk.HeadSpec
