"""Every peft tuner type is a method: counts equal peft's own, mergeable ones give the same
logits merged and unmerged, the artefact is safetensors, and a type that cannot apply to the
model is refused in one line."""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import pytest
import torch

from peftbench.run import counting, spec
from peftbench.components import plugins
from peftbench.errors import ConfigError
from peftbench.run.measure.sizes import count_parameters
from peftbench_plugins.methods.peft_catalogue import PeftTuner

COMPONENTS = plugins.load()
TUNERS = sorted(e.name for e in COMPONENTS.methods if isinstance(e.component, PeftTuner))


def test_every_peft_type_is_a_method():
    from peft import PeftType

    expected = {t.value.lower().replace("_", "-") for t in PeftType} - {"lora"} | {"dora", "rslora", "pissa", "olora"}
    assert set(TUNERS) == expected
    assert len(COMPONENTS.methods) >= 25 + len(COMPONENTS.methods) - len(TUNERS)
    ia3 = {f.name: f.default for f in dataclasses.fields(COMPONENTS.methods.get("ia3").Config)}
    assert ia3["target_modules"] is None and ia3["lr"] == 3e-3 and "task_type" not in ia3  # peft's defaults, (IA)3's lr
    assert {f.name: f.default for f in dataclasses.fields(COMPONENTS.methods.get("dora").Config)}["use_dora"] is True


@functools.cache
def _inputs() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(5, 60, (2, 12), generator=generator),
            "attention_mask": torch.ones(2, 12, dtype=torch.long)}


def _prepared(name: str, backbone: str):
    resolved = spec.resolve(COMPONENTS, name, "livedoor-news", backbone, [])
    stage = resolved.method.stages(resolved.task, resolved.spec.task_config, resolved.spec.method_config)[0]
    loaded = resolved.backbone.load(stage.head)
    return resolved.method, loaded, resolved.method.prepare(loaded, resolved.spec.method_config, stage)


@pytest.mark.parametrize("name", TUNERS)
def test_counts_merging_and_artefact(name, tiny_bert, tmp_path):
    try:
        method, loaded, model = _prepared(name, str(tiny_bert))
    except ConfigError as exc:  # e.g. a size default larger than the tiny model's 32 dimensions
        assert str(exc).startswith(f"peft cannot apply {name} to BertForSequenceClassification: ")
        assert "\n" not in str(exc)
        pytest.skip(f"not applicable to the tiny model: {exc}")
    params = count_parameters(model, method.is_adapter_parameter, loaded.head_modules, method.is_auxiliary_parameter)
    assert params["trainable"] == model.get_nb_trainable_parameters()[0]  # peft's own count
    try:  # `--dry-run` (no weights) counts the same
        dry = counting.dry_run(spec.resolve(COMPONENTS, name, "livedoor-news", str(tiny_bert), []))[0]["params"]
        assert dry == params
    except ConfigError as exc:
        assert "which a dry run does not load" in str(exc)  # initialised from the weights (e.g. FRoD)
    assert params["adapter"] > 0 and params["backbone_trainable"] == 0 and params["head"] > 0
    with torch.no_grad():  # make the tuner's weights matter (many start as the identity)
        for param_name, param in model.named_parameters():
            if method.is_adapter_parameter(param_name) and param.is_floating_point():
                param.add_(torch.randn_like(param) * 0.05)
    model.eval()
    logits = {}
    with torch.no_grad(), method.inference_modes(model) as modes:
        for mode in modes:
            logits[mode] = model(**_inputs()).logits
    assert list(logits)[0] == "unmerged"
    assert ("merged" in logits) == bool(method.mergeable)  # the record's `mergeable` says what was timed
    if method.mergeable and "merged" in logits:
        assert torch.allclose(logits["merged"], logits["unmerged"], atol=1e-4), name
    assert not any(getattr(m, "merged", False) for m in model.modules())  # back in training form
    method.save(model, str(tmp_path / "artifact"))
    assert list((tmp_path / "artifact").glob("*.safetensors")) and not list((tmp_path / "artifact").glob("*.bin"))


def test_most_types_apply_to_an_encoder_classifier(tiny_bert):
    applied = []
    for name in TUNERS:
        try:
            _prepared(name, str(tiny_bert))
            applied.append(name)
        except ConfigError:
            pass
    assert len(applied) >= 25, applied


def test_a_decoder_only_type_is_refused_in_one_line(tiny_bert, cli, sample_dir):
    result = cli("run", "--method", "cpt", "--task", "livedoor-news", "--backbone", str(tiny_bert),
                 "--set", f"data_dir={sample_dir}", "--dry-run")
    assert result.code == 1 and "peft cannot apply cpt to BertForSequenceClassification" in result.stderr
    assert "Traceback" not in result.stderr and "CAUSAL_LM" in result.stderr


def test_a_tuner_runs_end_to_end_and_times_both_inference_modes(tiny_bert, sample_dir, tmp_path, cli):
    result = cli("run", "--method", "ia3", "--task", "livedoor-news", "--backbone", str(tiny_bert), "--quiet",
                 "--results", str(tmp_path), "--set", f"data_dir={sample_dir}", "--set", "per_category=10",
                 "--set", "max_length=32", "--set", "epochs=1", "--set", "target_modules=query,value,output.dense",
                 "--set", "feedforward_modules=output.dense")
    assert result.code == 0, result.stderr
    from peftbench.records import record as records

    (_, record), = list(records.iter_records(tmp_path))
    assert record["status"] == "success" and record["params"]["adapter"] > 0
    assert set(record["inference"]["modes"]) == {"unmerged", "merged"}
    assert record["artifact"]["format"] == ["json", "safetensors"]


@pytest.mark.parametrize(("name", "setting"), [("loha", "r"), ("prompt-tuning", "num_virtual_tokens")])
def test_a_parameter_budget_sizes_a_tuner(name, setting, tiny_bert):
    resolved = counting.match_params(COMPONENTS, name, "livedoor-news", str(tiny_bert), [], 3000)
    budget = resolved.spec.budget
    assert budget.setting == setting and abs(budget.deviation) <= 0.05, budget


def test_s1_configuration_dry_run_equals_peft_count():
    """The issue's check: `--method ia3 --task kwdlc-ner --backbone cl-tohoku/...` counted without weights."""
    resolved = spec.resolve(COMPONENTS, "ia3", "kwdlc-ner", "cl-tohoku/bert-base-japanese-whole-word-masking", [])
    stage = resolved.method.stages(resolved.task, resolved.spec.task_config, resolved.spec.method_config)[0]
    loaded = resolved.backbone.load(stage.head, weights=False)
    model = resolved.method.prepare(loaded, resolved.spec.method_config, stage)
    dry = counting.dry_run(resolved)[0]["params"]
    assert dry["trainable"] == model.get_nb_trainable_parameters()[0] == 77_585
    assert dry["adapter"] == 64_512 and dry["head"] == 13_073


def test_adalora_reallocates_its_ranks_over_the_runs_own_schedule(tiny_bert, sample_dir, tmp_path, cli):
    """total_step is left to the run (its update count), and peft's update_and_allocate runs after
    every update: the saved rank pattern keeps exactly target_r ranks per adapted module on average."""
    result = cli("run", "--method", "adalora", "--task", "livedoor-news", "--backbone", str(tiny_bert), "--quiet",
                 "--results", str(tmp_path), "--set", f"data_dir={sample_dir}", "--set", "per_category=10",
                 "--set", "max_length=32", "--set", "epochs=2", "--set", "batch_size=8", "--set", "init_r=4",
                 "--set", "target_r=2", "--set", "inference_repeats=0")
    assert result.code == 0, result.stderr
    from peftbench.records import record as records

    (path, record), = list(records.iter_records(tmp_path))
    saved = json.loads((path.parent / "artifact" / "adapter_config.json").read_text())
    updates = 2 * math.ceil(record["data"]["sizes"]["train"] / 8)
    assert saved["total_step"] == updates
    kept = [sum(mask) for mask in saved["rank_pattern"].values()]
    assert len(kept) == 4 and sum(kept) == 2 * 4  # query, value x 2 layers; the budget is target_r per module
