"""docs/writing-plugins.md, executed: its files are copied out of the page, installed with pip as a
separate distribution, and used through the real command line, as a reader would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench.records import record as records

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "writing-plugins.md"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n```\w*\n(?P<body>.*?)```", re.S)


def tutorial_files() -> dict[str, str]:
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(TUTORIAL.read_text(encoding="utf-8"))}


def test_the_tutorial_names_its_files():
    assert set(tutorial_files()) == {"pyproject.toml", "peftbench_tutorial/__init__.py",
                                     "peftbench_tutorial/toplayers.py", "peftbench_tutorial/sentiment.py",
                                     "tests/test_plugins.py"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The tutorial's package, pip-installed into its own folder; the environment that sees it."""
    root = tmp_path_factory.mktemp("tutorial")
    package, site = root / "peftbench-tutorial", root / "site"
    for relative, body in tutorial_files().items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(body, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(site), str(package)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"package": str(package), **os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}


def peftbench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftbench.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def sentiment_data(folder: Path) -> Path:
    words = {"positive": ["良い", "最高", "楽しい"], "negative": ["悪い", "最低", "退屈"]}
    for split, count in (("train", 24), ("dev", 6), ("test", 6)):
        rows = [{"text": f"この映画は{words[label][i % 3]}。", "label": label}
                for i in range(count) for label in ("positive", "negative")]
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                                               encoding="utf-8")
    return folder


def test_installed_tutorial_plugins_list_run_and_pass_their_tests(installed, tiny_bert, tmp_path):
    listed = json.loads(peftbench(installed, "list", "--json").stdout)
    method = next(m for m in listed["methods"] if m["name"] == "top-layers")
    assert method["plugin"] == "peftbench-tutorial 0.1.0"
    assert [s["name"] for s in method["settings"]] == ["layers", "lr"]
    assert any(t["name"] == "jsonl-sentiment" for t in listed["tasks"])

    data = sentiment_data(tmp_path)
    common = ["--task", "jsonl-sentiment", "--backbone", str(tiny_bert), "--set", f"data_dir={data}"]
    dry = peftbench(installed, "run", "--method", "top-layers", *common, "--set", "layers=1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # tiny BERT layer (hidden 32, intermediate 64) = 8,544 parameters; head = 32 x 2 + 2
    assert "trainable params 8,610 = adapter 0 + head 66 + backbone 8,544" in dry.stdout

    results = tmp_path / "results"
    done = peftbench(installed, "run", "--method", "top-layers", *common, "--results", str(results),
                     "--set", "epochs=2", "--set", "lr=1e-3", "--quiet")
    assert done.returncode == 0, done.stderr
    (_, record), = records.iter_records(results)
    assert record["status"] == "success" and record["method"]["plugin"] == "peftbench-tutorial 0.1.0"
    assert record["environment"]["packages"]["safetensors"]
    assert (Path(record["artifact"]["path"]) / "top_layers.safetensors").exists()
    report = peftbench(installed, "report", str(results))
    assert report.returncode == 0 and "top-layers" in report.stdout and "jsonl-sentiment" in report.stdout

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(Path(installed["package"]) / "tests")], capture_output=True, text=True,
                           timeout=300, env=installed)
    assert tests.returncode == 0 and "4 passed" in tests.stdout, tests.stdout + tests.stderr


def test_the_tutorial_imports_peftbench_only_through_the_sdk():
    import ast

    for name, body in tutorial_files().items():
        if name.endswith(".py"):
            modules = {n.module for n in ast.walk(ast.parse(body)) if isinstance(n, ast.ImportFrom) and n.module}
            modules |= {a.name for n in ast.walk(ast.parse(body)) if isinstance(n, ast.Import) for a in n.names}
            assert {m for m in modules if m.split(".")[0] == "peftbench"} <= {"peftbench.sdk"}, name
