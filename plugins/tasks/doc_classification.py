"""What every single-label document classification task shares: the text is encoded (truncated to
``config.max_length``), the prediction is the argmax, scores are accuracy and micro/macro-F1."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Sequence

from peftbench.sdk import Example, Task

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


class DocumentClassification(Task):
    """Examples are ``{"text": str, "label": int, ...}``; configs have ``max_length``."""

    libraries = ("scikit-learn",)

    @abstractmethod
    def label_count(self, config: Any) -> int:
        """How many classes the head has (F1 is averaged over all of them)."""

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Any) -> list[dict]:
        if not examples:
            return []
        encoded = tokenizer([ex["text"] for ex in examples], truncation=True, max_length=config.max_length,
                            return_attention_mask=False, return_token_type_ids=False)
        return [{"input_ids": ids, "labels": ex["label"]} for ids, ex in zip(encoded["input_ids"], examples)]

    def decode(self, logits: torch.Tensor, batch, config: Any) -> tuple[list, list]:
        return logits.argmax(-1).tolist(), batch["labels"].tolist()

    def score(self, predictions: list, references: list, config: Any) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        labels = list(range(self.label_count(config)))
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, labels=labels, average="macro", zero_division=0)),
            "micro_f1": float(f1_score(references, predictions, labels=labels, average="micro", zero_division=0)),
        }

    def text(self, example: Example) -> str:
        return example["text"]

    def cache_key(self, config: Any) -> dict[str, Any]:
        # Only what changes token ids; the examples themselves are fingerprinted by the core.
        return {"max_length": config.max_length}
