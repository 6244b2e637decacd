"""Masked-language-model objective over a task's own text (used for TAPT).

BERT's recipe through transformers' DataCollatorForLanguageModeling: 15% of
tokens chosen (never special tokens), of those 80% -> [MASK], 10% -> random
token, 10% kept. Scores: MLM accuracy on the chosen tokens; model selection
and early stopping use the dev loss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

from peftbench.sdk import BackboneError, Example, Splits, Task, load_splits

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


class MaskedLMObjective(Task):
    name = "mlm"
    description = "masked-LM on the wrapped task's text"

    def __init__(self, task: Task, mlm_probability: float = 0.15, max_length: int | None = None) -> None:
        self.task = task
        self.mlm_probability = mlm_probability
        self.max_length = max_length
        self.Config = task.Config
        self.metadata = replace(task.metadata, kind="masked-lm", main_score="mlm_accuracy",
                                greater_is_better={"mlm_accuracy": True})

    def head(self, config: Any):
        raise NotImplementedError("the stage declares the masked-lm head")

    def load(self, config: Any) -> Splits:
        splits = load_splits(self.task, config)
        as_text = {name: [{"text": self.task.text(ex)} for ex in examples] for name, examples in splits.items()}
        return Splits(as_text["train"], as_text["dev"], as_text["test"],
                      {"source": splits.info.get("source"), "text_of": self.task.name})

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Any) -> list[dict]:
        if tokenizer.mask_token_id is None:
            raise BackboneError(f"{type(tokenizer).__name__} has no mask token", "masked-LM needs a BERT-style tokenizer")
        max_length = self.max_length or getattr(config, "max_length", None)
        encoded = tokenizer([ex["text"] for ex in examples], truncation=True, max_length=max_length,
                            return_attention_mask=False, return_token_type_ids=False)
        return [{"input_ids": ids} for ids in encoded["input_ids"]]

    def collator(self, tokenizer: Any, config: Any, padding: str = "longest"):
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=self.mlm_probability)

    def decode(self, logits: torch.Tensor, batch, config: Any) -> tuple[list, list]:
        chosen = batch["labels"] != -100
        return logits.argmax(-1)[chosen].tolist(), batch["labels"][chosen].tolist()

    def score(self, predictions: list, references: list, config: Any) -> dict[str, float]:
        correct = sum(p == r for p, r in zip(predictions, references))
        return {"mlm_accuracy": correct / len(references) if references else 0.0}

    def cache_key(self, config: Any) -> dict[str, Any]:
        return {"task": self.task.name, "max_length": self.max_length or getattr(config, "max_length", None)}
