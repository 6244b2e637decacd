"""What every single-label document classification task shares: the text is encoded (truncated to
``config.max_length``), the prediction is the argmax, scores are accuracy and micro/macro-F1."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Sequence

from peftbench.sdk import Example, ExampleStatistics, HeadSpec, LoadedBackbone, Task

from .label_words import LabelWords

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


class DocumentClassification(Task):
    """Examples are ``{"text": str, "label": int, ...}``; configs have ``max_length``."""

    libraries = ("scikit-learn",)
    # For as_generation (label_words.py): words for the task's labels and a prompt, where the label
    # names are no words (MR's 0/1); None: the label names and the generic prompt.
    own_label_words: dict[str, str] | None = None
    own_prompt_template: str | None = None

    @abstractmethod
    def label_names(self, config: Any) -> tuple[str, ...]:
        """The classes, in label-index order."""

    def label_count(self, config: Any) -> int:
        """How many classes the head has (F1 is averaged over all of them)."""
        return len(self.label_names(config))

    def head(self, config: Any) -> HeadSpec:
        if getattr(config, "as_generation", False):  # prompt -> label word on the LM's own output layer
            return HeadSpec("text-generation")
        return HeadSpec("sequence-classification", tuple(self.label_names(config)))

    def for_backbone(self, loaded: LoadedBackbone) -> Task:
        if "generation_format" in loaded.info:  # a text-generation head: as_generation was asked for
            return LabelWords(self, loaded, self.own_label_words, self.own_prompt_template)
        return self

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Any) -> list[dict]:
        if not examples:
            return []
        encoded = tokenizer([ex["text"] for ex in examples], truncation=True, max_length=config.max_length,
                            return_attention_mask=False, return_token_type_ids=False)
        return [{"input_ids": ids, "labels": ex["label"]} for ids, ex in zip(encoded["input_ids"], examples)]

    def decode(self, logits: torch.Tensor, batch, config: Any) -> tuple[list, list]:
        return logits.argmax(-1).tolist(), batch["labels"].tolist()

    def score(self, predictions: list, references: list, config: Any) -> dict[str, float]:
        """Accuracy, macro- and micro-F1 (scikit-learn's, zero_division=0: tests/test_compare.py holds
        them equal), summed from the per-example statistics the paired tests resample; computed here
        rather than by scikit-learn, whose import (with scipy.stats and pandas) cost a run 1.2 s."""
        scored = {}
        for name in ("accuracy", "macro_f1", "micro_f1"):
            statistics = self.example_statistics(predictions, references, config, name)
            scored[name] = float(statistics.score(statistics.values.sum(axis=0)))
        return scored

    def example_statistics(self, predictions: list, references: list, config: Any,
                           score: str) -> ExampleStatistics | None:
        import numpy as np

        predicted, gold = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        if score in ("accuracy", "micro_f1"):  # one label per document, F1 over all labels: micro-F1 = accuracy
            values = np.stack([predicted == gold, np.ones(len(gold), dtype=bool)], axis=1).astype(np.int64)
            return ExampleStatistics(values, lambda t: t[0] / t[1] if t[1] else 0.0, _accuracies)
        if score != "macro_f1":
            return None
        labels = np.arange(self.label_count(config))
        is_predicted, is_gold = predicted[:, None] == labels, gold[:, None] == labels
        values = np.concatenate([is_predicted & is_gold, is_predicted & ~is_gold, ~is_predicted & is_gold], axis=1)
        return ExampleStatistics(values.astype(np.int64), lambda t: _macro_f1(t, len(labels)))

    def chance_scores(self, references: list, config: Any) -> dict[str, float]:
        """A uniform guess over the k classes: accuracy and micro-F1 1/k; macro-F1 the mean over
        classes of 2 p_c (1/k) / (p_c + 1/k), p_c the class's share of the split (its expected
        precision is p_c, its recall 1/k)."""
        k = self.label_count(config)
        if not references or k < 1:
            return {}
        shares = [sum(1 for r in references if r == c) / len(references) for c in range(k)]
        macro = sum(2 * p / k / (p + 1 / k) for p in shares) / k
        return {"accuracy": 1 / k, "micro_f1": 1 / k, "macro_f1": macro}

    def text(self, example: Example) -> str:
        return example["text"]

    def cache_key(self, config: Any) -> dict[str, Any]:
        # Only what changes token ids; the examples themselves are fingerprinted by the core.
        return {"max_length": config.max_length}


def _macro_f1(totals, classes: int) -> float:
    """Mean over classes of 2tp / (2tp + fp + fn); 0 for a class never predicted nor present
    (scikit-learn's zero_division=0)."""
    import numpy as np

    tp, fp, fn = totals[:classes], totals[classes:2 * classes], totals[2 * classes:]
    denominator = 2 * tp + fp + fn
    return float(np.mean(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)))


def _accuracies(totals):
    """Accuracy of many resamples at once: (resamples, 2) totals of [correct, 1]."""
    import numpy as np

    return np.divide(totals[:, 0], totals[:, 1], out=np.zeros(len(totals)), where=totals[:, 1] > 0)
