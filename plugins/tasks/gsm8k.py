"""GSM8K (Cobbe et al., 2021): grade-school math word problems, scored by exact match of the final
number, for causal LMs (plugins/tasks/completion.py: answer-only loss, generation, extraction).

Data (``--set data_dir=DIR``): GSM8K's published layout, ``train.jsonl`` and ``test.jsonl`` with
``question`` and ``answer`` (worked solution ending in ``#### N``), or a ``save_to_disk`` folder of
openai/gsm8k. Training rows may instead be MetaMathQA's (``query``, ``response`` ending in "The
answer is: N"; its ``MetaMathQA-395K.json`` array as ``--set train_file=``), peft's
method_comparison setup. Dev: a seeded ``dev_fraction`` of train.

The answer of a text: the first number after ``####``, else the last number in it (MetaMathQA's
and most models' style), else none; ``answer_regex`` for another format. That is peftbench's
``exact_match`` (numbers compared as numbers: 42.0 = 42).

Beside it, ``strict_match`` and ``flexible_extract`` are computed exactly as lm-evaluation-harness
0.4.13's ``gsm8k`` task (task version 3.0) computes them, so a table can be set beside the field's:
generation ends at its stop sequences ("Question:", "</s>", "<|im_end|>"); strict-match takes the
first ``#### (-?[0-9.,]+)``, flexible-extract the last ``(-?[$0-9.,]{2,})|(-?[0-9]+)``; both are
compared as strings with the reference (the text after "#### ") after removing commas, "$", a
trailing "." and case. tests/test_gsm8k_lm_eval.py holds them to lm-eval's own filter code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from peftbench.sdk import ExampleStatistics, Splits, TaskMetadata, hookimpl, locate

from .completion import IGNORE, NUMBER, CompletionSettings, CompletionTask, last_number, regex_answer
from .rows import build_splits, split_files, text_field

SOURCE = "https://github.com/openai/grade-school-math (grade_school_math/data/{train,test}.jsonl)"


@dataclass(frozen=True)
class Gsm8kSettings(CompletionSettings):
    data_dir: str | None = None
    train_file: str = "train.jsonl"
    test_file: str = "test.jsonl"
    prompt_template: str = "Question: {prompt}\nAnswer:"
    completion_template: str = " {completion}"
    max_new_tokens: int = 256  # GSM8K solutions: ~100 tokens; a cap keeps a rambling model from stalling evaluation


def gsm8k_answer(text: str) -> str | None:
    """The first number after the first ``####`` (a model that runs on past its answer is scored on
    its first final answer), else the last number."""
    if "####" in text:
        after = NUMBER.search(text.split("####", 1)[1])
        if after:
            return after.group(0)
    return last_number(text)


# lm-evaluation-harness 0.4.13, lm_eval/tasks/gsm8k/gsm8k.yaml (version 3.0): its filters and metric.
LM_EVAL = "lm-evaluation-harness 0.4.13 gsm8k (task version 3.0)"
STOP_SEQUENCES = ("Question:", "</s>", "<|im_end|>")
STRICT = (re.compile(r"#### (\-?[0-9\.\,]+)"), 0)
FLEXIBLE = (re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)"), -1)
IGNORED = (",", "\\$", "(?s).*#### ", "\\.$")
LM_EVAL_SCORES = {"strict_match": "strict", "flexible_extract": "flexible"}


def lm_eval_filter(text: str, regex: tuple[re.Pattern, int], fallback: str = "[invalid]") -> str:
    """lm-eval's RegexFilter then take_first, for one response."""
    pattern, group_select = regex
    found = pattern.findall(text)
    if not found:
        return fallback
    match = found[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), fallback)
    return match.strip()


def lm_eval_exact_match(prediction: str, reference: str) -> bool:
    """lm-eval's exact_match with gsm8k's regexes_to_ignore and ignore_case."""
    for ignored in IGNORED:
        prediction, reference = re.sub(ignored, "", prediction), re.sub(ignored, "", reference)
    return prediction.lower() == reference.lower()


def final_answer_text(completion: str) -> str:
    """The reference as lm-eval compares it: what follows the last "#### " (its regexes remove the rest)."""
    return re.sub("(?s).*#### ", "", completion)


def parse_row(where: str, row: dict) -> dict:
    prompt = text_field(row, where, "question", "query")
    completion = text_field(row, where, "answer", "response")
    return {"id": str(row.get("id", where.rsplit("/", 1)[-1])), "prompt": prompt, "completion": completion}


class Gsm8k(CompletionTask):
    name = "gsm8k"
    description = "GSM8K math word problems for causal LMs: answer-only loss, greedy generation, exact match"
    Config = Gsm8kSettings
    metadata = TaskMetadata(
        kind="generation", language="en", description="grade-school math word problems -> final number",
        main_score="exact_match", corpus="gsm8k", source=SOURCE, license="MIT (GSM8K); MetaMathQA: MIT",
        default_backbone="Qwen/Qwen2.5-0.5B",
        greater_is_better={"exact_match": True, "token_accuracy": True, "answered": True, "stopped": True,
                           "generated_tokens": True, "strict_match": True, "flexible_extract": True},
    )

    stop_sequences = STOP_SEQUENCES
    extra_batch_keys = (*CompletionTask.extra_batch_keys, "reference_ids")

    def extract(self, text: str, config: Gsm8kSettings) -> str | None:
        return regex_answer(config.answer_regex, text) if config.answer_regex else gsm8k_answer(text)

    def encode(self, examples: Sequence[dict], tokenizer: Any, config: Gsm8kSettings) -> list[dict]:
        rows = super().encode(examples, tokenizer, config)
        for row, example in zip(rows, examples):
            row["reference_ids"] = tokenizer(final_answer_text(example["completion"]),
                                             add_special_tokens=False)["input_ids"]
        return rows

    def encoding_report(self, examples: Sequence[dict], encoded: Sequence[dict], config: Any) -> dict[str, Any]:
        return {**super().encoding_report(examples, encoded, config), "strict_match_and_flexible_extract": LM_EVAL}

    def collator(self, tokenizer: Any, config: Any, padding: str = "longest"):
        import torch

        collate = super().collator(tokenizer, config, padding)

        def with_references(features: list[dict]) -> dict[str, Any]:
            batch = collate(features)
            width = max(1, max(len(f["reference_ids"]) for f in features))
            batch["reference_ids"] = torch.tensor([f["reference_ids"] + [IGNORE] * (width - len(f["reference_ids"]))
                                                   for f in features], dtype=torch.long)
            return batch

        return with_references

    def predict(self, model, batch, logits, config: Gsm8kSettings) -> tuple[list, list]:
        predictions, references = super().predict(model, batch, logits, config)
        for prediction, row in zip(predictions, batch["reference_ids"].tolist()):
            reference = self.tokenizer.decode([t for t in row if t != IGNORE], skip_special_tokens=True)
            for score, key in LM_EVAL_SCORES.items():
                extracted = lm_eval_filter(prediction["output"], STRICT if key == "strict" else FLEXIBLE)
                prediction[key], prediction[score] = extracted, lm_eval_exact_match(extracted, reference)
        return predictions, references

    def score(self, predictions: list, references: list, config: Gsm8kSettings) -> dict[str, float]:
        scores = super().score(predictions, references, config)
        for score in LM_EVAL_SCORES:
            if predictions and score in predictions[0]:
                scores[score] = sum(p[score] for p in predictions) / len(predictions)
        return scores

    def example_statistics(self, predictions: list, references: list, config: Any,
                           score: str) -> ExampleStatistics | None:
        import numpy as np

        if score not in LM_EVAL_SCORES:
            return super().example_statistics(predictions, references, config, score)
        if not predictions or score not in predictions[0]:
            return None
        values = np.array([[p[score], 1] for p in predictions], dtype=np.int64).reshape(-1, 2)
        return ExampleStatistics(values, lambda t: t[0] / t[1] if t[1] else 0.0)

    def data_files(self, config: Gsm8kSettings) -> list[str]:
        return [str(locate(self.metadata.corpus, config.data_dir, SOURCE))]

    def load(self, config: Gsm8kSettings) -> Splits:
        root = locate(self.metadata.corpus, config.data_dir, SOURCE)
        found = split_files(root, {"train": config.train_file, "test": config.test_file})
        return build_splits(found, parse_row, config, {"source": str(root)})


@hookimpl
def register_tasks(register) -> None:
    register(Gsm8k())
