"""Classification as generation (``--set as_generation=true``) and the untrained base as a row
(``--method zero-shot``), on a tiny Llama built from a config: label words ranked by their
log-likelihood as lm-evaluation-harness ranks multiple-choice answers, exact match by generation."""

from __future__ import annotations

import json

import pytest

from peftbench.records.files import published
from peftbench.components.plugins import default
from peftbench.run.spec import resolve

SMALL = ["as_generation=true", "train_per_class=4", "test_per_class=3", "max_length=256", "epochs=1",
         "inference_repeats=0", "eval_batch_size=4"]


def _sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def _merged(pairs: list[str]) -> list[str]:
    """Later settings replace earlier ones."""
    return [f"{k}={v}" for k, v in dict(pair.split("=", 1) for pair in pairs).items()]


def _run(cli, tmp_path, method: str, backbone, data, extra: list[str] = ()) -> dict:
    result = cli("run", "--method", method, "--task", "text-classification", "--backbone", str(backbone), "--results",
                 str(tmp_path), *_sets([f"data_dir={data}", *_merged([*SMALL, *extra])]))
    assert result.code == 0, result.stderr
    folder = next(p.parent for p in tmp_path.glob("*/record.json") if f"-{method}-" in p.parent.name)
    return {"record": json.loads((folder / "record.json").read_text(encoding="utf-8")),
            "predictions": json.loads((folder / "predictions.json").read_text(encoding="utf-8"))}


def test_zero_shot_ranks_label_words_by_their_log_likelihood_as_computed_by_hand(cli, tiny_llama, sample_tsv,
                                                                                    tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    run = _run(cli, tmp_path, "zero-shot", tiny_llama, sample_tsv)
    record, test = run["record"], run["predictions"]["test"]
    assert record["status"] == "success" and record["params"]["trainable"] == 0
    assert record["stopped_because"] == "the method trains nothing" and record["time"]["epoch_seconds"] == []
    assert {"accuracy", "macro_f1", "micro_f1", "exact_match"} <= set(record["scores"]["test"])
    assert "exact_match" in record["floors"]["test"]["majority"]
    # By hand: the prompt the task renders, each label word after it, the sum of its tokens' log-probabilities.
    resolved = resolve(default(), "zero-shot", "text-classification", str(tiny_llama),
                       [f"data_dir={sample_tsv}", *SMALL])
    config = resolved.spec.task_config
    loaded = resolved.backbone.load(resolved.task.head(config))
    task = resolved.task.for_backbone(loaded)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    examples = {published(ex["id"]): ex for ex in task.load(config).test}  # ids as predictions are written
    words = task.words(config)
    for example_id, predicted in list(zip(test["ids"], test["predictions"]))[:4]:
        row = task.encode([examples[example_id]], loaded.tokenizer, config)[0]
        by_hand = []
        for word in words:
            answer = task.answer_ids(word, loaded.tokenizer, config)
            with torch.no_grad():
                logits = model(torch.tensor([row["prompt_ids"] + answer])).logits[0].log_softmax(-1)
            by_hand.append(sum(logits[len(row["prompt_ids"]) - 1 + i, t].item() for i, t in enumerate(answer)))
        assert predicted["loglik"] == pytest.approx(by_hand, abs=1e-4)
        assert predicted["label"] == max(range(len(words)), key=by_hand.__getitem__)


def test_lora_trains_to_answer_in_label_words_and_old_configs_keep_their_hash(cli, tiny_llama, sample_tsv, tmp_path):
    run = _run(cli, tmp_path, "lora", tiny_llama, sample_tsv, ["lr=0.01", "epochs=4"])
    record = run["record"]
    assert record["status"] == "success" and record["loss_fell"]
    assert record["data"]["encoding"]["train"]["label_words"] == ["it-life-hack", "movie-enter", "sports-watch"]
    components = default()
    plain = resolve(components, "lora", "text-classification", str(tiny_llama), [f"data_dir={sample_tsv}"])
    as_words = resolve(components, "lora", "text-classification", str(tiny_llama),
                       [f"data_dir={sample_tsv}", "as_generation=true"])
    assert as_words.spec.hash != plain.spec.hash
    from peftbench.config import TrainConfig, config_hash

    identity = plain.spec.config_dict()
    for name in ("as_generation", "prompt_template", "label_words", "chat_template", "max_new_tokens"):
        del identity["task_config"][name]  # a record written before these settings existed keeps its hash
    for name in (*TrainConfig.HASH_OMITS_AT_DEFAULT, *TrainConfig.HASH_OMITS):
        del identity["train"][name]

    assert config_hash(identity) == plain.spec.hash
    # The report scores its label-word predictions as the run did: floors and paired tests work on them.
    _run(cli, tmp_path, "zero-shot", tiny_llama, sample_tsv)
    from peftbench import compare, load_results

    table = compare(load_results(tmp_path), "method.name=zero-shot").set_index("method")
    assert table.loc["lora", "mean"] == record["scores"]["test"]["accuracy"]
    assert not table["note"].str.contains("Error").any() and table["learned"].notna().all(), table.to_dict()
    shown = cli("report", str(tmp_path))
    assert shown.code == 0 and "vs majority floor" in shown.stdout, shown.stderr


def test_what_cannot_answer_in_words_is_refused_in_one_line(cli, tiny_llama, tiny_bert, sample_tsv):
    head = cli("run", "--method", "zero-shot", "--task", "text-classification", "--backbone", str(tiny_llama),
               "--set", f"data_dir={sample_tsv}", "--dry-run")
    assert head.code == 1 and "zero-shot scores a pre-trained model's own output" in head.stderr
    encoder = cli("run", "--method", "lora", "--task", "text-classification", "--backbone", str(tiny_bert),
                  "--set", f"data_dir={sample_tsv}", "--set", "as_generation=true", "--results", "/tmp/unused-results")
    assert encoder.code == 1 and "a bert model cannot generate text" in encoder.stderr
    words = cli("run", "--method", "lora", "--task", "text-classification", "--backbone", str(tiny_llama),
                "--set", f"data_dir={sample_tsv}", "--set", "as_generation=true", "--set", "label_words=a,b",
                "--results", "/tmp/unused-results")
    assert words.code == 1 and "label_words gives 2 words for 3 labels" in words.stderr


def test_few_shot_shows_training_examples_with_their_answers_before_every_prompt(cli, tiny_llama, sample_tsv,
                                                                                 tmp_path):
    from conftest import GSM8K_FIXTURE

    components = default()
    resolved = resolve(components, "few-shot", "gsm8k", str(tiny_llama), [f"data_dir={GSM8K_FIXTURE}", "shots=2"])
    stage = resolved.method.stages(resolved.task, resolved.spec.task_config, resolved.spec.method_config)[0]
    config = resolved.spec.task_config
    splits = stage.objective.load(config)
    loaded = resolved.backbone.load(stage.head)
    shown = stage.objective.for_backbone(loaded)
    first, second = stage.objective.shown
    prompt = loaded.tokenizer.decode(shown.encode([splits.test[0]], loaded.tokenizer, config)[0]["prompt_ids"])
    assert prompt.count("Question:") == 3 and f"Question: {first['prompt']}\nAnswer: {first['completion']}\n\n" in prompt
    assert shown.cache_key(config) != resolved.task.for_backbone(loaded).cache_key(config)  # never the zero-shot cache
    result = _run(cli, tmp_path, "few-shot", tiny_llama, sample_tsv, ["shots=2", "max_length=640"])
    assert result["record"]["status"] == "success" and result["record"]["params"]["trainable"] == 0
    assert set(result["record"]["config"]["method_config"]) == {"shots", "shot_seed"}


def test_one_token_label_words_are_ranked_from_the_generations_first_step_as_from_full_passes(tiny_llama,
                                                                                               sample_tsv):
    import torch

    resolved = resolve(default(), "zero-shot", "text-classification", str(tiny_llama),
                       [f"data_dir={sample_tsv}", *SMALL, "label_words=a,b,c"])
    config = resolved.spec.task_config
    loaded = resolved.backbone.load(resolved.task.head(config))
    task = resolved.task.for_backbone(loaded)
    encoded = task.encode(task.load(config).test[:5], loaded.tokenizer, config)
    batch = task.collator(loaded.tokenizer, config)(encoded)  # left-padded prompts of different lengths
    with torch.no_grad():
        one_pass = task._one_pass(loaded.model.eval(), batch, config)
        full = task._log_likelihoods(loaded.model, batch, config)
    assert one_pass is not None
    for fast, slow in zip(one_pass[0], full):
        assert fast == pytest.approx(slow, abs=1e-4)
