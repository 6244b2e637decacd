"""Open composition: `tapt+<method>` and `mtl-<aux>+<method>` wrap any registered method, one
from an outside package included (the example embedding-tuning plugin, loaded as it is), with no list of
names anywhere."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import make_dataclass

import pytest

from conftest import REPO
from peftbench.run import counting, runner, spec
from peftbench.components import plugins
from peftbench.errors import ConfigError
from peftbench.run.progress import Progress


@pytest.fixture(scope="module")
def with_probe():
    """The example plugin's module, unedited, registered next to the built-in plugins."""
    path = REPO / "examples" / "peftbench-plugin-embedding-tuning" / "peftbench_embedding_tuning.py"
    module_spec = importlib.util.spec_from_file_location("peftbench_embedding_tuning", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["peftbench_embedding_tuning"] = module  # as an installed distribution's module would be
    try:
        module_spec.loader.exec_module(module)
        yield plugins.load(extra_plugins=(module,))
    finally:
        del sys.modules["peftbench_embedding_tuning"]


@pytest.mark.parametrize(("method", "own_sets"), [("tapt+embedding-tuning", ["tapt_epochs=1", "tapt_batch_size=16"]),
                                                  ("mtl-ngram+embedding-tuning", ["merges=20", "min_frequency=2"])])
def test_an_outside_method_runs_wrapped(method, own_sets, with_probe, tiny_bert, sample_dir, tmp_path):
    sets = [f"data_dir={sample_dir}", "per_category=10", "max_length=32", "epochs=1", "inference_repeats=0"]
    resolved = spec.resolve(with_probe, method, "livedoor-news", str(tiny_bert), [*sets, *own_sets])
    record, _ = runner.run(with_probe, resolved, tmp_path, Progress(quiet=True))
    assert record.status == "success", record.error
    assert record.method.name == method and record.method.plugin.endswith("+ peftbench_embedding_tuning")
    final = record.stages["finetune"].params
    assert final.head > 0 and final.adapter > 0 and final.backbone_trainable == 0  # embeddings + head
    if method.startswith("tapt"):
        assert list(record.stages) == ["tapt", "finetune"]
        tapt = record.stages["tapt"].params
        # Stage 1: the MLM transform + decoder bias, and the word embeddings (tied to the decoder).
        assert tapt.head > 0 and tapt.adapter == final.adapter and tapt.backbone_trainable == 0
    else:
        assert record.params.auxiliary > 0 and record.artifact.auxiliary_tensor_bytes > 0


@pytest.mark.parametrize(("old", "new"), [("tapt-lora", "tapt+lora"), ("mtl-rtm", "mtl-rtm+full"),
                                          pytest.param("mtl-ngram-adapter", "mtl-ngram+adapter",
                                                       marks=pytest.mark.adapters)])
def test_composed_names_equal_the_studies_names(old, new):
    comps = plugins.load()
    counts = [[row["params"] for row in counting.dry_run(spec.resolve(comps, name, "kwdlc-ner", None, []))]
              for name in (old, new)]
    assert counts[0] == counts[1], (old, new)


@pytest.mark.parametrize(("method", "message"), [
    ("tapt+tapt-lora", "tapt-lora has training stages of its own"),
    ("mtl-ngram+tapt+lora", "tapt+lora has training stages of its own"),
    ("tapt+lorra", "unknown method 'lorra'; did you mean 'lora'"),
    ("tpat+lora", "unknown method wrapper 'tpat'; did you mean 'tapt'"),
    ("lorra", "compositions: mtl-l3masking+<method>"),
])
def test_what_cannot_be_composed_is_one_line(method, message, cli):
    result = cli("run", "--method", method, "--task", "kwdlc-ner", "--dry-run")
    assert result.code == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_a_settings_clash_is_refused():
    from peftbench_plugins.methods.full_model import FullFineTuning

    class Clashing(FullFineTuning):
        name = "clashing"
        Config = make_dataclass("ClashingConfig", [("aux_weight", float, 0.5)], frozen=True)

    with pytest.raises(ConfigError, match="mtl-ngram\\+clashing: the method's own settings aux_weight clash"):
        plugins.load().wrappers.get("mtl-ngram").wrap(Clashing())


def test_list_shows_the_wrappers(cli):
    listed = cli("list", "--json")
    wrappers = {w["name"]: w for w in json.loads(listed.stdout)["method wrappers"]}
    assert set(wrappers) == {"tapt+<method>", "mtl-ngram+<method>", "mtl-rtm+<method>", "mtl-l3masking+<method>"}
    assert {"name": "tapt_epochs", "type": "int", "default": "50"} in wrappers["tapt+<method>"]["settings"]
