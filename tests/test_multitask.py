"""Multi-task fine-tuning: auxiliary targets ride in the main batches, the auxiliary head trains
through the shared encoder (full, LoRA, adapters) and is never deployed."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from peftbench.records import record as records
from peftbench.components.plugins import default
from peftbench.run.counting import dry_run
from peftbench.run.spec import resolve
from peftbench_plugins.methods.auxiliary_tasks import structural_ids


def _settings(sample_tsv, *extra):
    return ["--set", f"data_dir={sample_tsv}", "--set", "max_length=48", "--set", "epochs=2",
            "--set", "batch_size=8", "--set", "inference_repeats=1", *extra]


def _prepared(method, backbone, sample_tsv, sets=()):
    """The stage's objective with data loaded and encoded, a collated training batch, the model."""
    resolved = resolve(default(), method, "text-classification", str(backbone),
                       [f"data_dir={sample_tsv}", "max_length=48", *sets])
    cfg = resolved.spec
    (stage,) = resolved.method.stages(resolved.task, cfg.task_config, cfg.method_config, resolved.backbone)
    objective = stage.objective
    splits = objective.load(cfg.task_config)
    loaded = resolved.backbone.load(stage.head)
    train = objective.encode(splits.train, loaded.tokenizer, cfg.task_config)
    dev = objective.encode(splits.dev, loaded.tokenizer, cfg.task_config)
    batch = objective.collator(loaded.tokenizer, cfg.task_config)(train[:6])
    model = resolved.method.prepare(loaded, cfg.method_config, stage)
    return resolved, objective, loaded, train, dev, batch, model


def test_mtl_ngram_run_records_auxiliary_apart_from_the_artefact(cli, tiny_bert, sample_tsv, tmp_path):
    result = cli("run", "--method", "mtl-ngram", "--task", "text-classification", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), *_settings(sample_tsv, "--set", "scheme=bit-label",
                                                        "--set", "min_frequency=2", "--set", "merges=50"))
    assert result.code == 0, result.stderr
    (_, record), = list(records.iter_records(tmp_path))
    assert record["status"] == "success" and record["data"]["auxiliary"] == "ngram"
    assert set(record["scores"]["test"]) == {"micro_f1", "macro_f1", "accuracy"}
    params = record["params"]
    assert params["auxiliary"] > 0 and params["trainable"] + params["auxiliary"] <= params["total"]
    assert record["artifact"]["auxiliary_tensor_bytes"] == params["auxiliary"] * 4
    saved = next((tmp_path / record["run_id"] / "artifact").glob("*.safetensors"))
    with safe_open(str(saved), "pt") as handle:
        keys = list(handle.keys())
    assert keys and not any(k.startswith("aux") for k in keys)  # the auxiliary head is not deployed
    assert record["stages"]["finetune"]["best_epoch"] is not None


def test_ngram_targets_only_on_training_examples(tiny_bert, sample_tsv):
    _, objective, loaded, train, dev, batch, model = _prepared(
        "mtl-ngram", tiny_bert, sample_tsv, ["min_frequency=2", "scheme=common-label"])
    special = structural_ids(loaded.tokenizer)
    labels = objective.auxiliary.tag_labels(loaded.tokenizer)
    assert labels[0] == "O" and "B-Common" in labels
    for ex in train:
        assert len(ex["ngram_tags"]) == len(ex["input_ids"])
        assert all((tag == -100) == (token in special) for tag, token in zip(ex["ngram_tags"], ex["input_ids"]))
    assert any(tag > 0 for ex in train for tag in ex["ngram_tags"])
    assert not any("ngram_tags" in ex for ex in dev)
    assert batch["ngram_tags"].shape == batch["input_ids"].shape
    assert (batch["ngram_tags"][batch["attention_mask"] == 0] == -100).all()
    assert model.aux["ngram"][1].out_features == len(labels)


@pytest.mark.parametrize("method", ["mtl-rtm-lora", pytest.param("mtl-rtm-adapter", marks=pytest.mark.adapters),
                                    "mtl-rtm"])
def test_the_auxiliary_loss_trains_the_shared_encoder(method, tiny_bert, sample_tsv):
    resolved, _, loaded, _, _, batch, model = _prepared(method, tiny_bert, sample_tsv)
    assert {"mlm_input_ids", "mlm_labels"} <= set(batch) and "mask_probs" not in batch
    model.train()
    torch.manual_seed(0)
    total = model(**dict(batch)).loss
    torch.manual_seed(0)
    main_only = model.main(**{k: v for k, v in batch.items() if not k.startswith("mlm_")}).loss
    assert total.item() > main_only.item() + 1e-3  # the auxiliary loss is added
    # The loss computed at the chosen positions only equals the MLM model's own loss.
    model.eval()
    inputs = dict(input_ids=batch["mlm_input_ids"], attention_mask=batch["attention_mask"])
    own = model.aux["rtm"](**inputs, labels=batch["mlm_labels"]).loss
    cheap = model.auxiliary.loss(model.aux["rtm"], model.main(**{k: v for k, v in batch.items()
                                                                 if not k.startswith("mlm_")}), batch)
    assert cheap.item() == pytest.approx(own.item(), rel=1e-5)
    model.train()
    model.zero_grad()
    head = model.aux["rtm"]
    head(input_ids=batch["mlm_input_ids"], attention_mask=batch["attention_mask"], labels=batch["mlm_labels"]).loss.backward()
    trained_by_aux = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    if method == "mtl-rtm":
        assert any(".encoder.layer." in n for n in trained_by_aux)
    else:  # only the method's own modules (and the auxiliary head) move under LoRA / adapters
        assert any(resolved.method.is_adapter_parameter(n) for n in trained_by_aux)
        assert not any(".encoder.layer." in n and not resolved.method.is_adapter_parameter(n) and not n.startswith("aux.")
                       for n in trained_by_aux)
    assert any(n.startswith("aux.rtm.cls.") for n in trained_by_aux)
    model.eval()
    assert model(**dict(batch)).logits.shape == (batch["input_ids"].shape[0], 3)  # evaluation: the main task only


def test_l3masking_probabilities_hit_the_target_rate(tiny_bert_mlm, sample_tsv):
    _, objective, loaded, train, dev, batch, model = _prepared(
        "mtl-l3masking", tiny_bert_mlm, sample_tsv, ["mask_rate=0.2", "pll_batch_size=64"])
    special = structural_ids(loaded.tokenizer)
    for ex in train:
        scorable = [p for p, t in zip(ex["mask_probs"], ex["input_ids"]) if t not in special]
        assert sum(scorable) / len(scorable) == pytest.approx(0.2, abs=1e-9)
        assert all(0 <= p <= 1 for p in ex["mask_probs"])
        assert all(p == 0 for p, t in zip(ex["mask_probs"], ex["input_ids"]) if t in special)
    assert len({round(p, 6) for p in train[0]["mask_probs"]}) > 2  # not uniform: the MLM's view shapes it
    assert "auxiliary_mlm_head_newly_initialized" not in loaded.info


def test_l3masking_needs_a_pretrained_mlm_head(cli, tiny_bert, sample_tsv, tmp_path):
    result = cli("run", "--method", "mtl-l3masking", "--task", "text-classification", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), *_settings(sample_tsv))
    assert result.code == 1
    assert "has no pre-trained MLM head" in result.stderr and "mtl-rtm" in result.stderr


def test_rtm_records_a_newly_initialised_mlm_head(cli, tiny_bert, sample_tsv, tmp_path):
    result = cli("run", "--method", "mtl-rtm-lora", "--task", "text-classification", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), *_settings(sample_tsv))
    assert result.code == 0, result.stderr
    (_, record), = list(records.iter_records(tmp_path))
    assert "cls.predictions.bias" in record["backbone"]["info"]["auxiliary_mlm_head_newly_initialized"]
    assert set(record["inference"]["modes"]) == {"unmerged", "merged"}


@pytest.mark.parametrize("setting, message", [("mask_rate=1.5", "in (0, 1)"), ("mask_rate=0", "in (0, 1)"),
                                              ("aux_weight=-1", "aux_weight must be >= 0")])
def test_bad_settings_are_one_line(cli, tiny_bert, sample_tsv, tmp_path, setting, message):
    result = cli("run", "--method", "mtl-rtm", "--task", "text-classification", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), "--set", setting, *_settings(sample_tsv))
    assert result.code == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_ngram_extraction_that_finds_nothing_says_why(cli, tiny_bert, sample_tsv, tmp_path):
    result = cli("run", "--method", "mtl-ngram", "--task", "text-classification", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), "--set", "min_frequency=100000", *_settings(sample_tsv))
    assert result.code == 1 and "n-gram extraction found nothing" in result.stderr and "min_frequency" in result.stderr


def test_dry_run_counts_the_auxiliary_mlm_head(tiny_bert_mlm, sample_tsv):
    components = default()
    resolved = resolve(components, "mtl-rtm-lora", "text-classification", str(tiny_bert_mlm),
                       [f"data_dir={sample_tsv}"])
    (row,) = dry_run(resolved)
    plain = dry_run(resolve(components, "lora", "text-classification", str(tiny_bert_mlm), [f"data_dir={sample_tsv}"]))[0]
    assert row["params"]["adapter"] == plain["params"]["adapter"]
    assert row["artifact_tensor_bytes"] == plain["artifact_tensor_bytes"]  # the artefact is the inner method's
    assert row["params"]["auxiliary"] > 0


def test_inspect_ngrams_prints_the_top_ngrams_per_class(cli, tiny_bert, sample_tsv):
    result = cli("inspect", "ngrams", "--task", "text-classification", "--backbone", str(tiny_bert),
                 "--set", f"data_dir={sample_tsv}", "--set", "min_frequency=2", "--set", "scheme=disregard",
                 "--top", "3")
    assert result.code == 0, result.stderr
    assert "training documents" in result.stdout and "scheme disregard" in result.stdout
    for name in ("it-life-hack", "movie-enter", "sports-watch"):
        assert f"class {name}" in result.stdout


def test_livedoor_news_works_as_the_main_task(cli, tiny_bert, sample_dir, tmp_path):
    result = cli("run", "--method", "mtl-ngram-lora", "--task", "livedoor-news", "--backbone", str(tiny_bert),
                 "--results", str(tmp_path), "--set", f"data_dir={sample_dir}", "--set", "max_length=48",
                 "--set", "epochs=1", "--set", "scheme=common-label", "--set", "min_frequency=3",
                 "--set", "inference_repeats=0")
    assert result.code == 0, result.stderr
    (_, record), = list(records.iter_records(tmp_path))
    assert record["params"]["auxiliary"] > 0 and "accuracy" in record["scores"]["test"]


def test_class_schemes_need_one_class_per_document(tiny_bert):
    from pathlib import Path

    from peftbench.errors import ConfigError

    fixtures = Path(__file__).parent / "fixtures" / "kwdlc"
    resolved = resolve(default(), "mtl-ngram", "kwdlc-ner", str(tiny_bert),
                       [f"data_dir={fixtures}", "scheme=bit-label", "min_frequency=2"])
    cfg = resolved.spec
    (stage,) = resolved.method.stages(resolved.task, cfg.task_config, cfg.method_config, resolved.backbone)
    splits = stage.objective.load(cfg.task_config)
    loaded = resolved.backbone.load(stage.head)
    with pytest.raises(ConfigError, match="needs one class per document"):
        stage.objective.encode(splits.train, loaded.tokenizer, cfg.task_config)


def test_multi_task_on_a_generation_task_is_one_line(cli, tiny_t5, sample_dir, tmp_path):
    result = cli("run", "--method", "mtl-rtm", "--task", "livedoor-title2article", "--backbone", str(tiny_t5),
                 "--results", str(tmp_path), "--set", f"data_dir={sample_dir}", "--dry-run")
    assert result.code == 1 and "trains an encoder for classification or tagging" in result.stderr
