"""Decoder LLMs: GSM8K and instruction tuning on a tiny Llama built from a config (conftest.tiny_llama),
answer-only loss, exact match by generation, forgetting, k-bit bases, decoder counts."""

from __future__ import annotations

import json
import math

import pytest

from peftbench.components.plugins import default
from peftbench.run.spec import resolve

from conftest import GSM8K_FIXTURE


def bound(task_name: str, backbone, **settings):
    components = default()
    resolved = resolve(components, "lora", task_name, str(backbone), [f"{k}={v}" for k, v in settings.items()])
    loaded = resolved.backbone.load(resolved.task.head(resolved.spec.task_config))
    return resolved.task.for_backbone(loaded), loaded, resolved.spec.task_config


EXAMPLE = {"id": "x", "prompt": "Tom has 3 apples and gets 4 more. How many?",
           "completion": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"}


def test_answer_only_loss_masks_every_prompt_token_and_no_answer_token(tiny_llama):
    import torch

    task, loaded, config = bound("gsm8k", tiny_llama)
    tokenizer = loaded.tokenizer
    row = task.encode([EXAMPLE], tokenizer, config)[0]
    prompt = [tokenizer.bos_token_id] + tokenizer("Question: " + EXAMPLE["prompt"] + "\nAnswer:",
                                                  add_special_tokens=False)["input_ids"]
    completion = tokenizer(" " + EXAMPLE["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert row["prompt_ids"] == prompt and row["input_ids"] == prompt + completion
    assert row["labels"] == [-100] * len(prompt) + completion  # EOS is learned
    assert tokenizer.decode(row["answer_ids"]) == "7"
    # The model's loss is the cross-entropy of the answer tokens alone.
    batch = task.collator(tokenizer, config)([row])
    with torch.no_grad():
        outputs = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               labels=batch["labels"])
        logits = outputs.logits[0]
    by_hand = -sum(torch.log_softmax(logits[t - 1], -1)[token].item()
                   for t, token in enumerate(row["input_ids"]) if t >= len(prompt)) / len(completion)
    assert outputs.loss.item() == pytest.approx(by_hand, rel=1e-5)
    everything = task.encode([EXAMPLE], tokenizer, bound("gsm8k", tiny_llama, train_on_prompt="true")[2])[0]
    assert everything["labels"] == everything["input_ids"]


def test_a_packed_batch_keeps_each_example_to_itself_with_the_padded_batchs_loss(tiny_llama):
    """packing=true: the examples end to end in rows of at most max_length, positions restarting at
    0; each example's logits are those it has alone (no attention across examples), and the loss is
    the padded batch's (the first label of each example is not learned from the one before)."""
    import torch

    task, loaded, config = bound("gsm8k", tiny_llama, max_length=128, max_prompt_length=96, train_on_prompt="true")
    rows = [json.loads(line) for line in (GSM8K_FIXTURE / "train.jsonl").read_text().splitlines()[:3]]
    examples = [{"id": str(i), "prompt": r["question"], "completion": r["answer"]} for i, r in enumerate(rows)]
    examples += [{"id": f"short {n}", "prompt": f"{n} + 1?", "completion": f"#### {n + 1}"} for n in range(4)]
    encoded = task.encode(examples, loaded.tokenizer, config)
    packed = task.packed_collator(loaded.tokenizer, config)(encoded)
    padded = task.collator(loaded.tokenizer, config)(encoded)
    assert packed["input_ids"].shape[0] < len(encoded)  # rows, not examples
    assert packed["input_ids"].shape[1] == padded["input_ids"].shape[1]  # no wider than the longest example
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    model = loaded.model.eval()
    with torch.no_grad():
        packed_out = model(**packed)
        padded_loss = model(**{k: padded[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        alone = {tuple(r["input_ids"]): model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in encoded}
    assert packed_out.loss.item() == pytest.approx(padded_loss.item(), rel=1e-5)
    seen = 0
    for row, positions, logits in zip(packed["input_ids"], packed["position_ids"], packed_out.logits):
        starts = [i for i, p in enumerate(positions.tolist()) if p == 0] + [len(positions)]
        for start, end in zip(starts, starts[1:]):
            ids = tuple(row[start:end].tolist())
            if ids in alone:  # an example (the rest is a row's padding)
                torch.testing.assert_close(logits[start:end], alone[ids], rtol=1e-4, atol=1e-5)
                seen += 1
    assert seen == len(encoded)
    starts = packed["position_ids"] == 0
    assert (packed["labels"][starts] == -100).all()  # nothing predicts an example's first token


def test_packing_trains_as_padded_batches_do_and_is_refused_where_it_cannot_apply(cli, tiny_llama, tmp_path):
    data = tmp_path / "data"  # lengths that vary: the fixture's problems and short ones
    data.mkdir()
    short = [json.dumps({"question": f"{n} + 1?", "answer": f"#### {n + 1}"}) for n in range(12)]
    (data / "train.jsonl").write_text("\n".join(short + (GSM8K_FIXTURE / "train.jsonl").read_text().splitlines()))
    (data / "test.jsonl").write_text((GSM8K_FIXTURE / "test.jsonl").read_text())
    sets = ["--set", f"data_dir={data}", "--set", "epochs=1", "--set", "max_new_tokens=4",
            "--set", "lr=0.0001", "--set", "inference_repeats=0", "--set", "save_artifact=false"]
    stages = []
    for packing in ("false", "true"):
        folder = tmp_path / packing
        result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results",
                     str(folder), "--set", f"packing={packing}", *sets)
        assert result.code == 0, result.stderr
        stages.append(json.loads(next(folder.glob("*/record.json")).read_text())["stages"]["finetune"])
    padded, packed = stages
    assert packed["train_positions"][0] < padded["train_positions"][0]  # no padding computed
    assert packed["train_loss_epochs"] == pytest.approx(padded["train_loss_epochs"], rel=1e-5)  # the same steps
    assert packed["best_dev"]["dev_loss"] == pytest.approx(padded["best_dev"]["dev_loss"], rel=1e-5)
    refused = {"prompt-tuning": "method prompt-tuning cannot take packed batches",
               "lora --task livedoor-news": "task livedoor-news does not pack its batches"}
    for method, message in refused.items():
        method, *task = method.split()
        result = cli("run", "--method", method, *(task or ["--task", "gsm8k"]), "--backbone", str(tiny_llama),
                     "--set", "packing=true", "--dry-run")
        assert result.code == 1 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_truncation_cuts_the_prompt_start_then_the_completion_end_and_says_so(tiny_llama):
    task, loaded, _ = bound("gsm8k", tiny_llama)
    _, _, config = bound("gsm8k", tiny_llama, max_prompt_length=8, max_length=20)
    long = dict(EXAMPLE, completion=EXAMPLE["completion"] * 3)
    rows = task.encode([EXAMPLE, long], loaded.tokenizer, config)
    assert all(len(r["prompt_ids"]) == 8 and len(r["input_ids"]) <= 20 for r in rows)
    full_prompt = task.encode([EXAMPLE], loaded.tokenizer, bound("gsm8k", tiny_llama)[2])[0]["prompt_ids"]
    assert rows[0]["prompt_ids"] == full_prompt[-8:]  # the question's end, next to the answer, is kept
    report = task.encoding_report([EXAMPLE, long], rows, config)
    assert report["prompts_cut_at_start"] == 2 and report["completions_cut_at_end"] == 2 and report["tokens_cut"] > 0


@pytest.mark.parametrize("text, answer", [
    ("so 3 + 4 = 7.\n#### 7", "7"), ("#### 1,200 dollars\nQuestion: 5", "1200"), ("The answer is: 12.50", "12.5"),
    ("no digits", None), ("#### -3", "-3"), ("she paid $18.00", "18"),
])
def test_gsm8k_answers_are_extracted_and_normalised(text, answer):
    from peftbench_plugins.tasks.completion import normalize_answer
    from peftbench_plugins.tasks.gsm8k import gsm8k_answer

    assert normalize_answer(gsm8k_answer(text)) == answer


def test_exact_match_scores_extracted_answers_with_a_majority_floor():
    from peftbench_plugins.tasks.gsm8k import Gsm8k, Gsm8kSettings

    task, config = Gsm8k(), Gsm8kSettings()
    predictions = [{"output": o, "answer": a, "generated_tokens": 3, "stopped": True}
                   for o, a in (("#### 7", "7"), ("#### 8", "8"), ("", None))]
    scores = task.score(predictions, ["7", "9", "7"], config)
    assert scores["exact_match"] == pytest.approx(1 / 3) and scores["answered"] == pytest.approx(2 / 3)
    assert task.floors(["7", "9", "7"], config)["majority"] == {"exact_match": pytest.approx(2 / 3)}
    statistics = task.example_statistics(predictions, ["7", "9", "7"], config, "exact_match")
    assert statistics.score(statistics.values.sum(0)) == pytest.approx(1 / 3)


def test_forgetting_is_the_shifted_cross_entropy_computed_by_hand(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftbench.run.forgetting import mean_token_loss

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama)
    texts = ["Tom has 3 apples.", "Mia buys 4 bags with 2 books in each bag, so she has 8 books."]
    loss, tokens = mean_token_loss(model, tokenizer, texts, 512, 2, torch.device("cpu"))
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:  # one text at a time: no padding at all
            ids = tokenizer(text)["input_ids"]
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            total -= sum(log_probs[t, ids[t + 1]].item() for t in range(len(ids) - 1))
            count += len(ids) - 1
    assert tokens == count and loss == pytest.approx(total / count, rel=1e-5)


@pytest.fixture(scope="module")
def forgetting_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("forgetting") / "general.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ("The cat sat on the mat.", "Ana reads books.")),
                    encoding="utf-8")
    return path


def test_lora_on_gsm8k_records_exact_match_and_forgetting(cli, tiny_llama, forgetting_file, tmp_path):
    sets = ["--set", f"data_dir={GSM8K_FIXTURE}", "--set", f"forgetting_data={forgetting_file}", "--set", "epochs=2",
            "--set", "max_new_tokens=12", "--set", "lr=0.01", "--set", "inference_repeats=0"]
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama),
                 "--results", str(tmp_path), *sets)
    assert result.code == 0, result.stderr
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text(encoding="utf-8"))
    assert record["status"] == "success" and record["loss_fell"]
    assert 0 <= record["scores"]["test"]["exact_match"] <= 1 and "exact_match" in record["stages"]["finetune"][
        "best_dev"]["dev_scores"]  # selected on dev exact match, by generation after each epoch
    forgetting = record["forgetting"]
    assert forgetting["texts"] == 2 and forgetting["tokens"] > 0
    assert math.isclose(forgetting["forgetting"], forgetting["after"] - forgetting["before"])
    predictions = json.loads(next(tmp_path.glob("*/predictions.json")).read_text(encoding="utf-8"))["test"]
    assert len(predictions["ids"]) == 6 and {"output", "answer", "generated_tokens"} <= set(predictions["predictions"][0])
    assert predictions["references"][0] == json.loads(
        (GSM8K_FIXTURE / "test.jsonl").read_text().splitlines()[0])["answer"].split("#### ")[1]
    assert record["data"]["encoding"]["train"]["completions_cut_at_end"] == 0
    dry = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--dry-run", *sets)
    assert dry.code == 0 and "trainable params 3,584" in dry.stdout


def test_a_method_that_cannot_train_on_a_quantized_base_is_refused_in_one_line(cli, tiny_llama):
    result = cli("run", "--method", "full", "--task", "gsm8k", "--backbone", str(tiny_llama), "--set", "quantize=4bit",
                 "--dry-run")
    assert result.code == 1 and "method full cannot train on a 4bit quantized base" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_quantize_without_bitsandbytes_is_refused_with_the_extra_to_install(cli, tiny_llama, monkeypatch, tmp_path):
    import peftbench.sdk

    monkeypatch.setattr(peftbench.sdk, "is_installed", lambda name: name != "bitsandbytes")
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results", str(tmp_path),
                 "--set", f"data_dir={GSM8K_FIXTURE}", "--set", "quantize=4bit")
    assert result.code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: quantize=4bit needs bitsandbytes, which is not "
                                                          "installed -- pip install 'peftbench[quant]'")


@pytest.mark.quant
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_lora_trains_beside_a_quantized_base(cli, tiny_llama, tmp_path, bits):
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results", str(tmp_path),
                 "--set", f"data_dir={GSM8K_FIXTURE}", "--set", f"quantize={bits}", "--set", "epochs=1",
                 "--set", "quantize_compute_dtype=float32", "--set", "max_new_tokens=4")
    assert result.code == 0, result.stderr
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text(encoding="utf-8"))
    info = record["backbone"]["info"]["quantize"]
    assert record["status"] == "success" and info["bits"] == int(bits[0]) and info["applied"]
    assert record["params"]["total"] == 128832  # the logical weights: two 4-bit weights per stored byte
    assert record["params"]["trainable"] == record["params"]["adapter"] == 3584


def test_chat_messages_are_rendered_with_the_tokenizers_chat_template(tiny_llama, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Say {n}"}, {"role": "assistant", "content": str(n)}]}
            for n in range(12)]
    for name, part in (("train.jsonl", rows[:8]), ("test.jsonl", rows[8:])):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in part), encoding="utf-8")
    task, loaded, config = bound("instruction-sft", tiny_llama, data_dir=tmp_path)
    splits = task.load(config)
    assert len(splits.dev) == 1 and len(splits.test) == 4
    row = task.encode([splits.test[0]], loaded.tokenizer, config)[0]
    assert loaded.tokenizer.decode(row["prompt_ids"]) == "<|user|>Say 8\n<|assistant|>"
    assert loaded.tokenizer.decode(row["input_ids"][len(row["prompt_ids"]):]) == "8</s>"


def test_prompt_completion_columns_are_mapped_and_bad_rows_named(tiny_llama, tmp_path):
    from peftbench.errors import DataError

    rows = [{"instruction": f"Double {n}", "output": str(2 * n)} for n in range(12)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:9]), encoding="utf-8")
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[9:]), encoding="utf-8")
    task, _, config = bound("instruction-sft", tiny_llama, data_dir=tmp_path, prompt_field="instruction",
                            completion_field="output")
    assert task.load(config).test[0] == {"id": "test.jsonl:1", "prompt": "Double 9", "completion": "18"}
    _, _, unmapped = bound("instruction-sft", tiny_llama, data_dir=tmp_path)
    with pytest.raises(DataError, match=r"train.jsonl:1 has no string field 'prompt'"):
        task.load(unmapped)


def test_a_saved_hugging_face_dataset_folder_is_read(tiny_llama, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in (GSM8K_FIXTURE / "train.jsonl").read_text().splitlines()]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:20]),
                          "test": datasets.Dataset.from_list(rows[20:])}).save_to_disk(str(tmp_path / "gsm8k"))
    task, _, config = bound("gsm8k", tiny_llama, data_dir=tmp_path / "gsm8k")
    splits = task.load(config)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (18, 2, 10)


def test_an_encoder_backbone_is_refused_for_decoder_tasks(cli, tiny_bert):
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_bert), "--dry-run")
    assert result.code == 1 and "cannot generate text" in result.stderr


@pytest.mark.parametrize("checkpoint, target, expected, base", [
    # LoRA r=8 on q_proj, v_proj: layers x r x ((hidden + q out) + (hidden + kv heads x head dim))
    ("meta-llama/Llama-3.2-1B", "auto", 16 * 8 * ((2048 + 2048) + (2048 + 512)), 1_235_814_400),
    ("Qwen/Qwen2.5-0.5B", "auto", 24 * 8 * ((896 + 896) + (896 + 128)), 494_032_768),
    ("Qwen/Qwen2.5-0.5B", "all-linear", 24 * 8 * (2 * 1792 + 2 * 1024 + 3 * 5760), 494_032_768),
])
def test_decoder_dry_run_counts_match_peft_and_the_published_sizes(checkpoint, target, expected, base):
    from peftbench.run.counting import dry_run

    components = default()
    resolved = resolve(components, "lora", "gsm8k", checkpoint, [f"target={target}"])
    stage = dry_run(resolved)[-1]
    assert stage["params"]["trainable"] == stage["params"]["adapter"] == expected
    assert stage["params"]["total"] - expected == base
    # peft's own count on the same architecture
    loaded = resolved.backbone.load(resolved.task.head(resolved.spec.task_config), weights=False)
    model = resolved.method.prepare(loaded, resolved.spec.method_config, resolved.method.stages(
        resolved.task, resolved.spec.task_config, resolved.spec.method_config)[-1])
    assert model.get_nb_trainable_parameters() == (expected, base + expected)


def test_peft_tuners_take_all_linear_as_peft_does():
    """`target_modules=all-linear` reaches peft as its wildcard string (a list would name a module
    "all-linear"): DoRA r=16 on Qwen2.5-0.5B = LoRA's A and B on every linear layer + a magnitude per output."""
    from peftbench.run.counting import dry_run

    resolved = resolve(default(), "dora", "gsm8k", "Qwen/Qwen2.5-0.5B", ["r=16", "target_modules=all-linear"])
    outputs = 896 + 128 + 128 + 896 + 4864 + 4864 + 896  # q k v o gate up down
    expected = 24 * (16 * (2 * 1792 + 2 * 1024 + 3 * 5760) + outputs)
    assert dry_run(resolved)[-1]["params"]["trainable"] == expected == 9_102_336


def test_prompt_tuning_records_forgetting_with_its_virtual_tokens_left_out(cli, tiny_llama, forgetting_file, tmp_path):
    result = cli("run", "--method", "prompt-tuning", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results",
                 str(tmp_path), "--set", f"data_dir={GSM8K_FIXTURE}", "--set", f"forgetting_data={forgetting_file}",
                 "--set", "epochs=1", "--set", "max_new_tokens=4", "--set", "inference_repeats=0")
    assert result.code == 0, result.stderr
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text(encoding="utf-8"))
    assert record["status"] == "success" and record["forgetting"]["after"] is not None
    assert math.isclose(record["forgetting"]["forgetting"], record["forgetting"]["after"] - record["forgetting"]["before"])


def test_a_short_max_length_says_which_setting_to_lower_with_it(cli, tiny_llama):
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--set", "max_length=128",
                 "--dry-run")
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "with max_length=128 also set max_prompt_length (e.g. 96)" in result.stderr


def test_a_missing_tokenizer_is_reported_as_one_even_with_quantize(cli, tiny_llama, tmp_path):
    import shutil

    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_llama / name, folder / name)
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(folder), "--results",
                 str(tmp_path / "r"), "--set", f"data_dir={GSM8K_FIXTURE}", "--set", "quantize=4bit")
    assert result.code == 1 and "error: cannot load the tokenizer of" in result.stderr
    assert "bitsandbytes" not in result.stderr


@pytest.mark.quant
def test_forgetting_before_is_measured_as_kbit_training_will_see_the_base(tiny_llama, forgetting_file):
    """Forgetting's "before" on a k-bit base equals the loss of the base as peft's k-bit preparation
    leaves it (float parameters in float32), so an untrained adapter's "after" starts from it."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from peftbench.run import forgetting

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    texts = forgetting.read_texts(str(forgetting_file))

    def base():
        bits = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
        return AutoModelForCausalLM.from_pretrained(tiny_llama, quantization_config=bits, device_map={"": "cpu"},
                                                    dtype=torch.float16)

    def loss(model) -> float:
        return forgetting.mean_token_loss(model, tokenizer, texts, 64, 8, torch.device("cpu"))[0]

    before = base()
    as_loaded = loss(before)
    forgetting.as_kbit_training_has_it(before)
    adapted = get_peft_model(prepare_model_for_kbit_training(base(), use_gradient_checkpointing=False),
                             LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert loss(before) == loss(adapted) != as_loaded  # float16 norms and embeddings give another loss


@pytest.mark.quant
def test_a_kbit_run_merges_nothing_and_records_bitsandbytes(cli, tiny_llama, tmp_path):
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results",
                 str(tmp_path), "--set", f"data_dir={GSM8K_FIXTURE}", "--set", "quantize=4bit", "--set", "epochs=1",
                 "--set", "quantize_compute_dtype=float32", "--set", "max_new_tokens=4")
    assert result.code == 0, result.stderr
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text(encoding="utf-8"))
    assert record["inference"]["mergeable"] is False
    assert record["environment"]["packages"].get("bitsandbytes")


def test_a_dry_run_records_what_quantization_would_do(tiny_llama):
    """The dry run passes the quantize keywords too: the backbone says what it would load, and that
    nothing was quantized (the architecture is counted unquantized; trainable counts are the same)."""
    from peftbench.run.counting import dry_run

    (row,) = dry_run(resolve(default(), "lora", "gsm8k", str(tiny_llama), ["quantize=4bit"]))
    assert row["backbone"]["quantize"]["bits"] == 4 and row["backbone"]["quantize"]["applied"] is False
    (plain,) = dry_run(resolve(default(), "lora", "gsm8k", str(tiny_llama), []))
    assert "quantize" not in plain["backbone"] and plain["params"] == row["params"]
