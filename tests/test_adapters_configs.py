"""Every named configuration of the `adapters` library is a method `adapters-<name>`: counts equal
the library's adapter_summary, the LoRA family merges to the same logits, the artefact is
safetensors only, and a configuration that cannot apply is refused in one line."""

from __future__ import annotations

import pytest
import torch

from peftbench.components import plugins
from peftbench.run import spec
from peftbench.errors import ConfigError
from peftbench.run.measure.sizes import count_parameters
from peftbench_plugins.methods.adapters_configs import ADAPTER_NAME, AdaptersConfig

pytestmark = pytest.mark.adapters  # AdapterHub's library: the extra `adapters`

COMPONENTS = plugins.load()
CONFIGS = sorted(e.name for e in COMPONENTS.methods if isinstance(e.component, AdaptersConfig))


def test_the_librarys_configurations_are_methods():
    wanted = {"adapters-compacter", "adapters-prefix-tuning", "adapters-prompt-tuning", "adapters-ia3",
              "adapters-unipelt", "adapters-mam", "adapters-loreft", "adapters-parallel", "adapters-houlsby-inv",
              "adapters-pfeiffer-inv"}
    assert wanted <= set(CONFIGS) and not any("+" in name for name in CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_counts_merging_and_artefact(name, tiny_bert, tmp_path):
    resolved = spec.resolve(COMPONENTS, name, "livedoor-news", str(tiny_bert), [])
    method = resolved.method
    stage = method.stages(resolved.task, resolved.spec.task_config, resolved.spec.method_config)[0]
    loaded = resolved.backbone.load(stage.head)
    try:
        model = method.prepare(loaded, resolved.spec.method_config, stage)
    except ConfigError as exc:  # e.g. Compacter's phm_dim 4 against the tiny model's sizes
        assert str(exc).startswith(f"adapters cannot apply {name} to BertForSequenceClassification: ")
        pytest.skip(f"not applicable to the tiny model: {exc}")
    params = count_parameters(model, method.is_adapter_parameter, loaded.head_modules, method.is_auxiliary_parameter)
    summary = next(row for row in model.adapter_summary(as_dict=True) if row["name"] == ADAPTER_NAME)
    every_adapter_parameter = sum(p.numel() for n, p in model.named_parameters() if method.is_adapter_parameter(n))
    assert every_adapter_parameter == summary["#param"]  # the library's own count (VeRA: with its frozen A, B)
    assert params["adapter"] > 0 and params["backbone_trainable"] == 0 and params["head"] > 0
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if method.is_adapter_parameter(param_name):
                param.add_(torch.randn_like(param) * 0.05)
    model.eval()
    inputs = {"input_ids": torch.randint(5, 60, (2, 12), generator=torch.Generator().manual_seed(0)),
              "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    logits = {}
    with torch.no_grad(), method.inference_modes(model) as modes:
        for mode in modes:
            logits[mode] = model(**inputs).logits
    assert list(logits) == (["unmerged", "merged"] if method.mergeable else ["unmerged"])
    if method.mergeable:
        assert torch.allclose(logits["merged"], logits["unmerged"], atol=1e-4), name
        with torch.no_grad():
            assert torch.allclose(model(**inputs).logits, logits["unmerged"], atol=1e-5)  # unmerged again
    method.save(model, str(tmp_path / "artifact"))
    saved = {p.suffix for p in (tmp_path / "artifact").iterdir()}
    assert ".safetensors" in saved and ".bin" not in saved


def test_the_snapshot_listed_without_the_extra_is_the_library_s_own():
    """Where `adapters` is not installed, its methods are listed from adapters_catalogue.json: that
    file must say what the installed library says (regenerate it when the library moves)."""
    import importlib.metadata
    import json

    from peftbench_plugins.methods.adapters_configs import SNAPSHOT, _config_entries

    snapshot = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert snapshot["adapters_version"] == importlib.metadata.version("adapters")
    assert snapshot["methods"] == json.loads(json.dumps(_config_entries()))
