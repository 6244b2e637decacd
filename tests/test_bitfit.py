"""BitFit, built in: the backbone's bias terms train (counted as adapter), the head is the head,
nothing else moves; the artefact is exactly those tensors; it composes with TAPT."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from peftbench.run import counting, runner, spec
from peftbench.components import plugins
from peftbench.run.progress import Progress

pytestmark = pytest.mark.smoke  # also run in .venv-adapters (transformers 4.57)

SETS = ["per_category=10", "max_length=32", "epochs=1", "inference_repeats=0"]


def test_dry_run_counts_every_backbone_bias_and_the_head(tiny_bert):
    counts = {r["stage"]: r for r in counting.dry_run(spec.resolve(plugins.load(), "bitfit", "livedoor-news",
                                                                   str(tiny_bert), []))}["finetune"]["params"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=9)
    named = dict(model.named_parameters())
    assert counts["adapter"] == sum(p.numel() for n, p in named.items()
                                    if n.endswith(".bias") and not n.startswith("classifier."))
    assert counts["head"] == sum(p.numel() for n, p in named.items() if n.startswith("classifier."))
    assert counts["backbone_trainable"] == 0


@pytest.mark.parametrize("method", ["bitfit", "tapt+bitfit"])
def test_only_biases_and_head_change_and_are_stored(method, tiny_bert, sample_dir, tmp_path):
    comps = plugins.load()
    own = ["tapt_epochs=1", "tapt_batch_size=16"] if method.startswith("tapt") else []
    resolved = spec.resolve(comps, method, "livedoor-news", str(tiny_bert),
                            [f"data_dir={sample_dir}", *SETS, *own])
    record, _ = runner.run(comps, resolved, tmp_path, Progress(quiet=True))
    assert record.status == "success", record.error
    stored = load_file(next((tmp_path / record.run_id / "artifact").glob("*.safetensors")))
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in stored)
    final = record.stages["finetune"].params
    assert sum(t.numel() for t in stored.values()) == final.adapter + final.head
    if method.startswith("tapt"):
        tapt = record.stages["tapt"].params  # the biases and the MLM transform + decoder bias
        assert tapt.adapter > 0 and tapt.head > 0 and tapt.backbone_trainable == 0
        return
    before = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=9).state_dict()
    biases = [n for n in stored if not n.startswith("classifier.")]
    assert any(not torch.equal(stored[n], before[n]) for n in biases)  # trained, not the backbone's copy
