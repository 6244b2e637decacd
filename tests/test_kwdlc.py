"""KWDLC loader (hand-made KNP fixtures), TAPT+LoRA, and S1's counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from peftbench.run import counting, spec
from peftbench.components import plugins
from peftbench.records import record as records
from peftbench.errors import ConfigError, DataError
from peftbench_plugins.tasks.kwdlc import KwdlcConfig, KwdlcNer

FIXTURE = Path(__file__).parent / "fixtures" / "kwdlc"


def load(path=FIXTURE, **kwargs):
    return KwdlcNer().load(KwdlcConfig(data_dir=str(path), **kwargs))


def test_fixture_sentences_entities_and_policies():
    splits = load()
    assert [len(part) for _, part in splits.items()] == [2, 1, 1]
    first, second = splits.train
    assert first["tokens"] == ["田中", "太郎", "は", "京都", "大学", "に", "行った"]
    assert first["tags"] == ["B-PERSON", "I-PERSON", "O", "B-ORGANIZATION", "I-ORGANIZATION", "O", "O"]
    assert second["tags"] == ["B-DATE", "O", "O", "O"]  # OPTIONAL:日本 is not an entity
    counts = splits.info["counts"]["train"]
    assert counts["documents"] == 1 and counts["sentences"] == 2 and counts["morphemes"] == 11
    assert counts["ne_tags"] == 4 and counts["optional"] == 1 and counts["unmapped"] == 0
    assert counts["entities:PERSON"] == counts["entities:ORGANIZATION"] == counts["entities:DATE"] == 1


def test_type_subset_and_unknown_type():
    splits = load(types=("PERSON",))
    assert splits.train[0]["tags"][3:5] == ["O", "O"]
    assert splits.info["counts"]["train"]["excluded:ORGANIZATION"] == 1
    with pytest.raises(ValueError, match="PERSONS"):
        KwdlcConfig(types=("PERSONS",))


@pytest.mark.parametrize("remove", ["knp", "id"])
def test_missing_folders(tmp_path, remove):
    shutil.copytree(FIXTURE, tmp_path / "k")
    shutil.rmtree(tmp_path / "k" / remove)
    with pytest.raises(DataError, match=f"no {remove}/"):
        load(tmp_path / "k")


def test_id_without_document(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "k")
    (tmp_path / "k" / "id" / "split_for_pas" / "dev.id").write_text("w201106-0000009999\n")
    with pytest.raises(DataError, match="w201106-0000009999"):
        load(tmp_path / "k")


def test_unparsable_file_names_file_and_line(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "k")
    bad = tmp_path / "k" / "knp" / "w201106-00000" / "w201106-0000000002.knp"
    bad.write_text("# S-ID:x-1\n* 1D\n+ 1D\n大阪 おおさか\nEOS\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"w201106-0000000002.knp:1: rhoknp cannot parse"):
        load(tmp_path / "k")
    skipped = load(tmp_path / "k", on_parse_error="skip")
    assert len(skipped.dev) == 0 and skipped.info["counts"]["dev"]["documents_skipped"] == 1
    assert "w201106-0000000002.knp" in skipped.info["skipped_documents"][0]


def dry(method: str, *sets: str):
    comps = plugins.load()
    lora_sets = ["target=query,key,value"] if method != "full" else []
    resolved = spec.resolve(comps, method, "kwdlc-ner", None, [*lora_sets, *sets])
    return {row["stage"]: row for row in counting.dry_run(resolved)}


def test_s1_dry_run_counts():
    assert dry("lora")["finetune"]["params"]["trainable"] == 455_441
    tapt = dry("tapt-lora")
    assert tapt["tapt"]["params"]["trainable"] == 1_066_496
    assert tapt["tapt"]["params"]["adapter"] == 442_368
    assert tapt["finetune"]["params"]["trainable"] == 455_441
    assert dry("tapt-lora", "tapt_head=all")["tapt"]["params"]["trainable"] == 25_642_496
    # S1 storage for TAPT (97.8 MiB) = LoRA + the whole MLM head incl. the 32,000 x 768 decoder.
    assert dry("tapt-lora", "tapt_head=all")["tapt"]["artifact_tensor_bytes"] / 2**20 == pytest.approx(97.8, abs=0.05)
    full = dry("full")["finetune"]["params"]
    assert full["trainable"] == 110_039_825  # no pooler in token classification (S1: 110,630,417 with it)


def test_tapt_lora_weights_carry_over_exactly(tiny_bert):
    comps = plugins.load()
    backbone = comps.resolve_backbone(str(tiny_bert))
    method, task = comps.methods.get("tapt-lora"), KwdlcNer()
    config = method.Config(r=4, target=("query", "key", "value"))
    tapt_stage, ner_stage = method.stages(task, KwdlcConfig(), config)
    tapt = method.prepare(backbone.load(tapt_stage.head), config, tapt_stage)
    with torch.no_grad():  # make the LoRA weights distinctive, as training would
        for name, param in tapt.named_parameters():
            if "lora_" in name:
                param.normal_()
    ner = method.prepare(backbone.load(ner_stage.head), config, ner_stage, previous=tapt)
    source = {n: p for n, p in tapt.named_parameters() if "lora_" in n}
    target = {n: p for n, p in ner.named_parameters() if "lora_" in n}
    assert source.keys() == target.keys() and len(target) == 2 * 3 * 2  # layers x (q,k,v) x (A,B)
    for name in target:
        assert torch.equal(source[name], target[name]), name
        assert target[name].requires_grad
    head = [n for n, p in ner.named_parameters() if p.requires_grad and "classifier" in n]
    assert head, "the fresh NER head must train"
    # Stage 1 trains the MLM transform + decoder bias, not the tied decoder weight.
    trainable_mlm = sorted(n for n, p in tapt.named_parameters() if p.requires_grad and "lora_" not in n)
    assert any("transform.dense" in n for n in trainable_mlm) and any(n.endswith("predictions.bias") for n in trainable_mlm)
    assert not tapt.get_base_model().get_output_embeddings().weight.requires_grad


def test_mismatched_lora_shapes_are_refused(tiny_bert):
    comps = plugins.load()
    backbone = comps.resolve_backbone(str(tiny_bert))
    method, task = comps.methods.get("tapt-lora"), KwdlcNer()
    settings = method.Config
    tapt_stage, ner_stage = method.stages(task, KwdlcConfig(), settings())
    tapt = method.prepare(backbone.load(tapt_stage.head), settings(target=("query",), r=4), tapt_stage)
    with pytest.raises(ConfigError, match="do not match"):
        method.prepare(backbone.load(ner_stage.head), settings(target=("value",), r=4), ner_stage, tapt)
    with pytest.raises(ConfigError, match="do not match"):
        method.prepare(backbone.load(ner_stage.head), settings(target=("query",), r=8), ner_stage, tapt)


@pytest.mark.parametrize("method", ["full", "lora", "tapt-lora"])
@pytest.mark.parametrize("extra", [{"full": [], "lora": ["--set", "target=query,key,value"],
                                    "tapt-lora": ["--set", "target=query,key,value", "--set", "tapt_epochs=2"]}])
def test_three_methods_run_and_record_seqeval_f1(method, extra, tiny_bert, tmp_path, cli):
    result = cli("run", "--method", method, "--task", "kwdlc-ner", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), "--quiet", "--set", f"data_dir={FIXTURE}", "--set", "epochs=2",
                 "--set", "max_length=32", *extra[method])
    assert result.code == 0, result.stderr
    (path, record), = list(records.iter_records(tmp_path))
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    saved = json.loads((path.parent / records.PREDICTIONS_FILE).read_text())["test"]
    assert record["scores"]["test"]["f1"] == pytest.approx(
        f1_score(saved["references"], saved["predictions"], mode="strict", scheme=IOB2, zero_division=0))
    assert saved["references"] == [["B-PERSON", "O", "O"]]
    expected_stages = ["tapt", "finetune"] if method == "tapt-lora" else ["finetune"]
    assert list(record["stages"]) == expected_stages
    if method == "tapt-lora":
        tapt = record["stages"]["tapt"]
        assert tapt["objective"] == "mlm" and tapt["learning_rate"] == 2e-4
        assert tapt["train_overrides"]["batch_size"] == 32 and tapt["params"]["trainable"] > 0
        assert tapt["artifact_tensor_bytes"] > record["artifact"]["tensor_bytes"]
        assert record["time"]["train_seconds"] >= tapt["train_seconds"]
    assert record["data"]["encoding"]["train"] == {"sentences_truncated": 0, "entities_lost_to_truncation": 0}
    for table in ("s1", "s1-finetune-cost", "s1-inference"):
        assert cli("report", str(tmp_path), "--table", table).code == 0
    if method == "tapt-lora":
        rendered = cli("report", str(tmp_path), "--table", "s1-tapt-cost")
        assert rendered.code == 0 and "tapt-lora" in rendered.stdout


def test_argmax_decoding_is_selectable(tiny_bert, tmp_path, cli):
    result = cli("run", "--method", "lora", "--task", "kwdlc-ner", "--backbone", str(tiny_bert), "--results",
                 str(tmp_path), "--quiet", "--set", f"data_dir={FIXTURE}", "--set", "epochs=1",
                 "--set", "decoding=argmax")
    assert result.code == 0, result.stderr


def test_named_entities_are_the_ones_rhoknp_finds():
    """The loader skips rhoknp's post-processing of a sentence (predicate-argument and coreference
    links: half of a parse) and finds the named entities itself: they must be rhoknp's own, on the
    fixture and, where it is here, on the first 300 documents of the real corpus (escaped
    characters, OPTIONAL, entities that match no morphemes)."""
    from itertools import islice

    from rhoknp import Sentence

    from conftest import SHARED_DATA
    from peftbench_plugins.tasks.kwdlc import _sentence_chunks, named_entities

    roots = [FIXTURE / "knp", SHARED_DATA / "kwdlc" / "knp"]
    files = [path for root in roots if root.is_dir() for path in islice(sorted(root.rglob("*.knp")), 300)]
    checked = 0
    for path in files:
        for _, chunk in _sentence_chunks(path.read_text(encoding="utf-8")):
            ours = named_entities(Sentence.from_knp(chunk, post_init=False))
            theirs = Sentence.from_knp(chunk).named_entities
            assert [(e.category, e.text, [m.index for m in e.morphemes]) for e in ours] == \
                   [(e.category, e.text, [m.index for m in e.morphemes]) for e in theirs], (path, chunk[:200])
            checked += len(theirs)
    assert checked >= 4  # the fixture's own entities at least
