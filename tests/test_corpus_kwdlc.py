"""Integration tests on the real KWDLC in ../shared/data (required under CI=true)."""

from __future__ import annotations

import pytest

from conftest import corpus_or_skip
from peftbench_plugins.tasks.kwdlc import IREX_TYPES, KwdlcConfig, KwdlcNer


@pytest.fixture(scope="module")
def kwdlc_splits():
    root = corpus_or_skip("kwdlc")
    return KwdlcNer().load(KwdlcConfig(data_dir=str(root)))


@pytest.mark.corpus
def test_counts_match_the_reference_figures(kwdlc_splits):
    counts = kwdlc_splits.info["counts"]
    # The copy CI reads: 3,915 / 512 / 700 documents; rhoknp 1.8.2 finds 12,271 / 1,585 / 2,195
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


