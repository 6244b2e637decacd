"""Instruction tuning on any prompt -> completion data, for causal LMs (plugins/tasks/completion.py:
answer-only loss, greedy generation, exact match of the extracted answer).

Data (``--set data_dir=DIR``): ``train.jsonl``, ``test.jsonl`` and optionally ``dev.jsonl`` (else a
seeded ``dev_fraction`` of train), or a ``save_to_disk`` folder of a Hugging Face dataset (splits
train / validation / test). A row is either ``prompt`` and ``completion`` fields (named by
``prompt_field`` / ``completion_field``: e.g. ``instruction`` and ``output`` for Alpaca's layout) or
a chat in ``messages`` (``messages_field``; a list of ``{"role", "content"}`` whose last message is the
assistant's answer), rendered with the tokenizer's chat template. The answer compared by
``exact_match`` is the whole completion unless ``answer_regex`` picks it out.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.sdk import DataError, Splits, TaskMetadata, hookimpl, locate

from .completion import CompletionSettings, CompletionTask
from .rows import build_splits, split_files, text_field

SOURCE = "your own prompt/completion or chat JSONL files (see docs/decoder-llms.md)"


@dataclass(frozen=True)
class InstructionSettings(CompletionSettings):
    data_dir: str | None = None
    train_file: str = "train.jsonl"
    dev_file: str = "dev.jsonl"
    test_file: str = "test.jsonl"
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"


def chat_example(where: str, messages: object) -> dict:
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise DataError(f"{where}: messages must be a list of {{\"role\", \"content\"}} objects")
    if messages[-1]["role"] != "assistant" or len(messages) < 2:
        raise DataError(f"{where}: the last message must be the assistant's answer to an earlier one")
    return {"messages": messages, "completion": messages[-1]["content"]}


class InstructionSft(CompletionTask):
    name = "instruction-sft"
    description = "instruction tuning on prompt/completion or chat JSONL for causal LMs; exact match"
    Config = InstructionSettings
    metadata = TaskMetadata(
        kind="generation", language="any", description="prompt -> completion (instructions, chats)",
        main_score="exact_match", corpus="instruction-sft", source=SOURCE, license="that of your data",
        default_backbone="Qwen/Qwen2.5-0.5B-Instruct",
        greater_is_better={"exact_match": True, "token_accuracy": True, "answered": True, "stopped": True,
                           "generated_tokens": True},
    )

    def data_files(self, config: InstructionSettings) -> list[str]:
        return [str(locate(self.metadata.corpus, config.data_dir, SOURCE))]

    def load(self, config: InstructionSettings) -> Splits:
        root = locate(self.metadata.corpus, config.data_dir, SOURCE)
        found = split_files(root, {"train": config.train_file, "dev": config.dev_file, "test": config.test_file})

        def parse(where: str, row: dict) -> dict:
            if isinstance(row, dict) and config.messages_field in row:
                example = chat_example(where, row[config.messages_field])
            else:
                example = {"prompt": text_field(row, where, config.prompt_field),
                           "completion": text_field(row, where, config.completion_field)}
            return {"id": str(row.get("id", where.rsplit("/", 1)[-1])), **example}

        return build_splits(found, parse, config, {"source": str(root)})


@hookimpl
def register_tasks(register) -> None:
    register(InstructionSft())
