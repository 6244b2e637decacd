"""Integration tests on the real KWDLC in ../shared/data (required under CI=true)."""

from __future__ import annotations

import json

import pytest

from conftest import corpus_or_skip
from peftbench import records
from peftbench_plugins.tasks.kwdlc import IREX_TYPES, KwdlcConfig, KwdlcNer


@pytest.fixture(scope="module")
def kwdlc_splits():
    root = corpus_or_skip("kwdlc")
    return KwdlcNer().load(KwdlcConfig(data_dir=str(root)))


@pytest.mark.corpus
def test_counts_match_the_reference_figures(kwdlc_splits):
    counts = kwdlc_splits.info["counts"]
    # ../shared/data/README.md: 3,915 / 512 / 700 documents; rhoknp 1.8.2 finds 12,271 / 1,585 / 2,195
    # sentences and 6,274 / 975 / 1,123 NE tags (OPTIONAL 252 / 22 / 35) with 7 span warnings.
    assert [counts[s]["documents"] for s in ("train", "dev", "test")] == [3915, 512, 700]
    assert [counts[s]["sentences"] for s in ("train", "dev", "test")] == [12271, 1585, 2195]
    parsed = [counts[s]["ne_tags"] - counts[s]["unmapped"] for s in ("train", "dev", "test")]
    assert parsed == [6274, 975, 1123]
    assert sum(counts[s]["unmapped"] for s in counts) == 7
    assert [counts[s]["optional"] for s in ("train", "dev", "test")] == [252, 22, 35]
    for split, n_parsed in zip(("train", "dev", "test"), parsed):
        entities = sum(counts[split].get(f"entities:{t}", 0) for t in IREX_TYPES)
        assert entities + counts[split]["optional"] + counts[split].get("overlap_dropped", 0) == n_parsed


@pytest.mark.corpus
def test_three_methods_on_a_subset_with_an_offline_backbone(tmp_path, cli):
    root = corpus_or_skip("kwdlc")
    common = ["--task", "kwdlc-ner", "--backbone", "minilm-l6", "--results", str(tmp_path), "--quiet",
              "--set", f"data_dir={root}", "--set", "max_documents=8", "--set", "epochs=1"]
    lora = ["--set", "target=query,key,value"]
    for method, extra in (("full", []), ("lora", lora), ("tapt-lora", [*lora, "--set", "tapt_epochs=1"])):
        result = cli("run", "--method", method, *common, *extra)
        assert result.code == 0, result.stderr
    found = {r["method"]["name"]: (p, r) for p, r in records.iter_records(tmp_path)}
    assert set(found) == {"full", "lora", "tapt-lora"}
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    for path, record in found.values():
        saved = json.loads((path.parent / records.PREDICTIONS_FILE).read_text())["test"]
        assert record["scores"]["test"]["f1"] == pytest.approx(
            f1_score(saved["references"], saved["predictions"], mode="strict", scheme=IOB2, zero_division=0))
    # MiniLM is a sentence-embedding checkpoint: its MLM head is new, and the record says so.
    new_in_tapt = found["tapt-lora"][1]["stages"]["tapt"]["backbone"]["newly_initialized"]
    assert any(key.startswith("cls.predictions") for key in new_in_tapt)
    report = cli("report", str(tmp_path), "--table", "s1")
    assert report.code == 0 and "tapt-lora" in report.stdout
