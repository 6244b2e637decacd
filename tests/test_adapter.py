"""Bottleneck adapters (AdapterHub `adapters`), TAPT+Adapter and parameter-matched runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peftbench.run import counting, spec
from peftbench.components import plugins
from peftbench.records import record as records
from peftbench.suite import plan as suite
from peftbench.errors import ConfigError

pytestmark = pytest.mark.adapters  # AdapterHub's library: the extra `adapters`

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "kwdlc"


def dry(method: str, *sets: str, task: str = "livedoor-news"):
    comps = plugins.load()
    return {r["stage"]: r for r in counting.dry_run(spec.resolve(comps, method, task, None, list(sets)))}


def test_houlsby_and_pfeiffer_counts_on_bert_base():
    # bottleneck 768/16 = 48; one adapter = 768x48+48 + 48x768+768 = 74,544
    pfeiffer = dry("adapter", "config=pfeiffer")["finetune"]["params"]
    houlsby = dry("adapter", "config=houlsby")["finetune"]["params"]
    assert pfeiffer["adapter"] == 12 * 74_544 and pfeiffer["head"] == 6_921
    assert houlsby["adapter"] == 24 * 74_544 and houlsby["backbone_trainable"] == 0
    assert dry("adapter", "bottleneck=7")["finetune"]["params"]["adapter"] == 12 * (768 * 7 + 7 + 7 * 768 + 768)


# Houlsby at 300k is matched by test_suite_runs_methods_at_one_budget below (the same search, through a suite).
@pytest.mark.parametrize(("method", "sets", "setting"), [("lora", [], "r"), ("adapter", ["config=pfeiffer"], "bottleneck")])
def test_match_params_within_5_percent_of_300k(method, sets, setting):
    resolved = counting.match_params(plugins.load(), method, "livedoor-news", None, sets, 300_000)
    budget = resolved.spec.budget
    assert budget.setting == setting and abs(budget.deviation) <= 0.05
    assert getattr(resolved.spec.method_config, setting) == budget.value


def test_unreachable_budget_names_the_nearest():
    with pytest.raises(ConfigError, match="nearest reachable budget is 36,864"):
        counting.match_params(plugins.load(), "lora", "livedoor-news", None, [], 100)
    with pytest.raises(ConfigError, match="no size setting"):
        counting.match_params(plugins.load(), "full", "livedoor-news", None, [], 100)


@pytest.mark.parametrize(("sets", "message"), [
    (["reduction_factor=5"], "does not divide the hidden size 768"),
    (["config=fancy"], "is not one of houlsby, pfeiffer"),
    (["bottleneck=1000"], "larger than the hidden size"),
])
def test_bad_adapter_settings(sets, message):
    with pytest.raises(ConfigError, match=message):
        dry("adapter", *sets)


@pytest.mark.parametrize("config", ["houlsby", "pfeiffer"])
def test_adapter_runs_and_saves_safetensors(config, tiny_bert, sample_dir, tmp_path, cli):
    result = cli("run", "--method", "adapter", "--task", "livedoor-news", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), "--quiet", "--set", f"data_dir={sample_dir}", "--set", "per_category=10",
                 "--set", "max_length=32", "--set", "epochs=1", "--set", f"config={config}",
                 "--set", "reduction_factor=4")
    assert result.code == 0, result.stderr
    (_, record), = list(records.iter_records(tmp_path))
    per_adapter = 32 * 8 + 8 + 8 * 32 + 32
    layers = 2 * (2 if config == "houlsby" else 1)
    assert record["params"]["adapter"] == layers * per_adapter and record["params"]["head"] == 32 * 9 + 9
    assert record["artifact"]["format"] == ["json", "safetensors"]
    assert record["artifact"]["tensor_bytes"] == 4 * (layers * per_adapter + 32 * 9 + 9)
    assert record["inference"]["mergeable"] is False and list(record["inference"]["modes"]) == ["default"]


def test_tapt_adapter_carries_adapter_weights(tiny_bert):
    comps = plugins.load()
    method = comps.methods.get("tapt-adapter")
    task = comps.tasks.get("kwdlc-ner")
    backbone = comps.resolve_backbone(str(tiny_bert))
    config = method.Config(reduction_factor=4)
    tapt_stage, ner_stage = method.stages(task, task.default_config(), config)
    tapt = method.prepare(backbone.load(tapt_stage.head), config, tapt_stage)
    with torch.no_grad():
        for name, param in tapt.named_parameters():
            if method.is_adapter_parameter(name):
                param.normal_()
    ner = method.prepare(backbone.load(ner_stage.head), config, ner_stage, previous=tapt)
    source = {n: p for n, p in tapt.named_parameters() if method.is_adapter_parameter(n)}
    target = {n: p for n, p in ner.named_parameters() if method.is_adapter_parameter(n)}
    assert source and source.keys() == target.keys()
    assert all(torch.equal(source[n], target[n]) for n in target)


def test_tapt_adapter_end_to_end(tiny_bert, tmp_path, cli):
    result = cli("run", "--method", "tapt-adapter", "--task", "kwdlc-ner", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), "--quiet", "--set", f"data_dir={FIXTURE}", "--set", "epochs=1",
                 "--set", "tapt_epochs=1", "--set", "reduction_factor=4")
    assert result.code == 0, result.stderr
    (_, record), = list(records.iter_records(tmp_path))
    assert list(record["stages"]) == ["tapt", "finetune"]


def test_suite_runs_methods_at_one_budget(tmp_path):
    path = tmp_path / "budget.toml"
    path.write_text("""
[defaults]
task = "livedoor-news"
match_params = 300000
[[runs]]
method = "lora"
[[runs]]
method = "adapter"
[runs.set]
config = "houlsby"
""", encoding="utf-8")
    _, runs = suite.expand(path, plugins.load())
    budgets = [r.resolved.spec.budget for r in runs]
    assert [b.setting for b in budgets] == ["r", "bottleneck"]
    assert all(abs(b.deviation) <= 0.05 for b in budgets)
    assert runs[1].resolved.spec.method_config.bottleneck == 8
