"""Dry-run counts on the real cl-tohoku BERT-base architecture, offline (built from its config)."""

from __future__ import annotations

import pytest

from peftbench.run import counting, spec
from peftbench.components import plugins

pytestmark = pytest.mark.smoke  # also run in .venv-adapters (transformers 4.57)


def dry(method: str, *sets: str, task: str = "livedoor-news", backbone: str | None = None):
    comps = plugins.load()
    return counting.dry_run(spec.resolve(comps, method, task, backbone, list(sets)))


def test_lora_query_value_r8_matches_s2():
    (stage,) = dry("lora", "r=8", "alpha=8")
    params = stage["params"]
    # 12 layers x (query, value) x (768x8 + 8x768) = 294,912 (S2); 9-class head 768x9+9 = 6,921.
    assert params["adapter"] == 294_912
    assert params["head"] == 6_921
    assert params["backbone_trainable"] == 0
    assert params["trainable"] == 301_833
    # S2's "1.2 MB" for r=8: the LoRA matrices + head in fp32.
    assert stage["artifact_tensor_bytes"] == 301_833 * 4
    assert stage["backbone"]["weights"] is False


@pytest.mark.parametrize(("r", "adapter"), [(2, 73_728), (64, 2_359_296), (256, 9_437_184)])
def test_lora_rank_scales_linearly(r, adapter):
    (stage,) = dry("lora", f"r={r}")
    assert stage["params"]["adapter"] == adapter


def test_full_fine_tuning_counts_the_whole_model():
    (stage,) = dry("full")
    # BERT-base (vocab 32,000) with pooler 110,617,344 + head 6,921 (S2's 442.5 MB in fp32).
    assert stage["params"]["trainable"] == stage["params"]["total"] == 110_624_265
    assert stage["artifact_tensor_bytes"] == 110_624_265 * 4


def test_lora_qkv_on_whole_word_masking_backbone():
    (stage,) = dry("lora", "target=query,key,value", backbone="cl-tohoku/bert-base-japanese-whole-word-masking")
    assert stage["params"]["adapter"] == 442_368  # S1's LoRA Q,K,V r=8


def test_dry_run_cli_prints_counts(cli):
    result = cli("run", "--method", "lora", "--task", "livedoor-news", "--dry-run", "--set", "r=8")
    assert result.code == 0, result.stderr
    assert "adapter 294,912" in result.stdout
    assert "1.21 MB" in result.stdout
