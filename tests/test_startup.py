"""What makes a rerun start fast: listing components imports no heavy library, and a parsed
corpus is read back from the cache until its files, the config or the plugin's code change."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from peftbench.sdk import HeadSpec, Splits, Task, TaskMetadata, load_splits

HEAVY = ("torch", "transformers", "peft", "adapters", "accelerate", "pandas", "sklearn", "scipy", "matplotlib",
         "sacrebleu", "rhoknp", "fugashi", "numpy", "seqeval")


def cli_reporting_heavy_modules(argv: list[str]) -> subprocess.CompletedProcess:
    """`peftbench ARGV` in a fresh process that prints, last on stderr, `HEAVY [...]`: the heavy
    libraries it imported."""
    code = ("import sys\nfrom peftbench import cli\nsys.argv = ['peftbench', *sys.argv[1:]]\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("argv", [["list"], ["--help"], ["run", "--help"]])
def test_listing_and_help_import_no_heavy_library(argv):
    from peftbench.components import plugins

    plugins.load()  # the first listing reads peft's and adapters' methods once into the cache; later ones do not
    done = cli_reporting_heavy_modules(argv)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr, done.stderr[-500:]
    assert "lora" in done.stdout or "Usage" in done.stdout


def test_a_peftbench_process_collects_cycles_rarely_and_not_at_exit():
    """collector.tune_collection: young-generation passes every 50,000 allocations (CPython's 700 walked
    the imports' objects ~1,100 times per small run here), and the heap frozen at exit."""
    code = ("import atexit, gc, sys\n"  # registered first, so it runs after peftbench's own exit handler
            "atexit.register(lambda: print('COLLECTOR', gc.get_threshold()[0], gc.isenabled(),\n"
            "                              gc.get_freeze_count() > 0))\n"
            "from peftbench import cli\nsys.argv = ['peftbench', 'list']\ncli.main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "COLLECTOR 50000 False True", done.stdout[-300:]


def test_a_suite_process_imports_no_heavy_library(tiny_bert, tmp_path):
    """The suite's own process only schedules: its runs import torch in their worker, so each suite
    (every tuning study too) does not pay that import a second time."""
    suite = tmp_path / "suite.toml"
    suite.write_text(f"""[defaults]
task = "livedoor-news"
backbone = "{tiny_bert}"
[defaults.set]
data_dir = "{Path(__file__).resolve().parents[1] / 'examples' / 'livedoor-sample'}"
per_category = 10
max_length = 16
inference_repeats = 0
[[runs]]
method = "lora"
""", encoding="utf-8")
    done = cli_reporting_heavy_modules(["suite", "run", str(suite), "--results", str(tmp_path / "r")])
    assert "suite finished: 1 succeeded, 0 failed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "HEAVY []" in done.stderr, done.stderr[-500:]


@dataclass(frozen=True)
class Settings:
    lowercase: bool = False


class CountingTask(Task):
    """A task whose `load` counts its calls and reads one text file (a line per example)."""

    name = "counting"
    Config = Settings
    metadata = TaskMetadata(kind="classification", language="en", description="", main_score="accuracy",
                            corpus="", source="", license="", default_backbone="")

    def __init__(self, path, files=True, as_tuples=False) -> None:
        self.path, self.files, self.as_tuples, self.loads = path, files, as_tuples, 0

    def data_files(self, config):
        return [str(self.path)] if self.files else []

    def load(self, config) -> Splits:
        self.loads += 1
        lines = self.path.read_text().splitlines()
        examples = [{"text": line.lower() if config.lowercase else line,
                     "label": (0, 1) if self.as_tuples else i % 2} for i, line in enumerate(lines)]
        return Splits(examples, examples[:1], examples[:1], {"source": str(self.path)})

    def head(self, config):
        return HeadSpec("sequence-classification", ("a", "b"))

    def encode(self, examples, tokenizer, config):
        return []

    def decode(self, logits, batch, config):
        return [], []

    def score(self, predictions, references, config):
        return {"accuracy": 0.0}


def test_parsed_splits_come_from_the_cache_until_files_or_config_change(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data.txt"
    data.write_text("One\nTwo\nThree\n")
    task = CountingTask(data)
    first = load_splits(task, Settings())
    again = load_splits(task, Settings())
    assert task.loads == 1 and again == first
    data.write_text("One\nTwo\nThree\nFour\n")  # the file changed: parse again
    assert len(load_splits(task, Settings()).train) == 4 and task.loads == 2
    load_splits(task, Settings(lowercase=True))  # another config: parse again
    assert task.loads == 3
    assert load_splits(task, Settings(lowercase=True)).train[0]["text"] == "one" and task.loads == 3
    for entry in (tmp_path / "cache" / "parsed").glob("*.json"):
        entry.write_text("{not json")  # a corrupt entry is parsed again, not an error
    for _ in range(2):
        load_splits(task, Settings())
    assert task.loads == 4


@pytest.mark.parametrize("kind", ["no data files", "values JSON would change"])
def test_splits_are_not_cached_when_they_cannot_be(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data.txt"
    data.write_text("One\nTwo\n")
    task = CountingTask(data, files=kind != "no data files", as_tuples=kind != "no data files")
    first, second = load_splits(task, Settings()), load_splits(task, Settings())
    assert task.loads == 2 and first == second
    assert second.train[0]["label"] == ((0, 1) if task.as_tuples else 0)  # never a list in place of a tuple
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_cache_stays_valid_when_python_writes_bytecode(tmp_path, monkeypatch):
    """The plugin-code part of the key covers .py files only: a __pycache__ written by the first
    run must not make the second run miss."""
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    package = tmp_path / "plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from test_startup import CountingTask\n\n\n"
                                         "class PackagedTask(CountingTask):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import plugin_pkg

    data = tmp_path / "data.txt"
    data.write_text("One\nTwo\n")
    task = plugin_pkg.PackagedTask(data)
    load_splits(task, Settings())
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"new bytecode")
    load_splits(task, Settings())
    assert task.loads == 1
    (package / "helpers.py").write_text("# the plugin's code changed\n")
    load_splits(task, Settings())
    assert task.loads == 2
    monkeypatch.delitem(sys.modules, "plugin_pkg")
