"""GSM8K (Cobbe et al., 2021): grade-school math word problems, scored by exact match of the final
number, for causal LMs (plugins/tasks/completion.py: answer-only loss, generation, extraction).

Data (``--set data_dir=DIR``): GSM8K's published layout, ``train.jsonl`` and ``test.jsonl`` with
``question`` and ``answer`` (worked solution ending in ``#### N``), or a ``save_to_disk`` folder of
openai/gsm8k. Training rows may instead be MetaMathQA's (``query``, ``response`` ending in "The
answer is: N"; its ``MetaMathQA-395K.json`` array as ``--set train_file=``), peft's
method_comparison setup. Dev: a seeded ``dev_fraction`` of train.

The answer of a text: the first number after ``####``, else the last number in it (MetaMathQA's
and most models' style), else none; ``answer_regex`` for another format.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.sdk import Splits, TaskMetadata, hookimpl, locate

from .completion import NUMBER, CompletionSettings, CompletionTask, last_number, regex_answer
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
                           "generated_tokens": True},
    )

    def extract(self, text: str, config: Gsm8kSettings) -> str | None:
        return regex_answer(config.answer_regex, text) if config.answer_regex else gsm8k_answer(text)

    def data_files(self, config: Gsm8kSettings) -> list[str]:
        return [str(locate(self.metadata.corpus, config.data_dir, SOURCE))]

    def load(self, config: Gsm8kSettings) -> Splits:
        root = locate(self.metadata.corpus, config.data_dir, SOURCE)
        found = split_files(root, {"train": config.train_file, "test": config.test_file})
        return build_splits(found, parse_row, config, {"source": str(root)})


@hookimpl
def register_tasks(register) -> None:
    register(Gsm8k())
