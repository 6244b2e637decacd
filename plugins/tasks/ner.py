"""Shared machinery for named-entity recognition tasks: BIO labels, sub-word
alignment, BIO-constrained Viterbi decoding and entity-level scores (seqeval).

Alignment rule: a word's first sub-word carries its BIO label; the other
sub-words are ignored in the loss (-100) and in decoding. Words past the
length limit are not fed to the model; they are predicted "O" and stay in the
gold sequence, so an entity lost to truncation counts as a miss, never
silently disappears.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Sequence

from peftbench.sdk import ConfigError, Encoded, Example, ExampleStatistics, HeadSpec, Task

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

IGNORE = -100
PENALTY = float("-inf")  # a forbidden transition never wins; the all-O path is always allowed, so every
# sequence keeps a finite best score (a finite penalty could be outweighed by large emission gaps)


def bio_labels(types: Sequence[str]) -> tuple[str, ...]:
    return ("O", *itertools.chain.from_iterable((f"B-{t}", f"I-{t}") for t in types))


def bio_constraints(labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(transitions[L, L], start[L]): 0 where allowed, PENALTY where I-X does not follow B-X or I-X."""
    import torch

    n = len(labels)
    transitions = torch.zeros(n, n)
    start = torch.zeros(n)
    for j, to in enumerate(labels):
        if not to.startswith("I-"):
            continue
        start[j] = PENALTY
        for i, frm in enumerate(labels):
            if frm[2:] != to[2:] or frm == "O":
                transitions[i, j] = PENALTY
    return transitions, start


def viterbi(emissions: torch.Tensor, lengths: torch.Tensor, transitions: torch.Tensor,
            start: torch.Tensor) -> list[list[int]]:
    """Best label path per sequence; O(n m^2) for n positions and m labels, vectorised over the batch.

    emissions: (B, N, M) log-scores; lengths: (B,) valid positions per sequence.
    """
    import torch

    batch, positions, labels = emissions.shape
    if positions == 0:
        return [[] for _ in range(batch)]
    transitions = transitions.to(emissions)
    score = start.to(emissions) + emissions[:, 0]  # (B, M)
    identity = torch.arange(labels, device=emissions.device).expand(batch, labels)
    backpointers = []
    for t in range(1, positions):
        candidates = score.unsqueeze(2) + transitions  # (B, from, to)
        best, index = candidates.max(dim=1)
        active = (t < lengths).unsqueeze(1)
        score = torch.where(active, best + emissions[:, t], score)
        # Past a sequence's end the pointer is the identity, so backtracking passes through unchanged.
        backpointers.append(torch.where(active, index, identity))
    last = score.argmax(dim=1)
    path = [last]
    for index in reversed(backpointers):
        last = index.gather(1, last.unsqueeze(1)).squeeze(1)
        path.append(last)
    path.reverse()
    paths = torch.stack(path, dim=1).tolist()
    return [p[:n] for p, n in zip(paths, lengths.tolist())]


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single sequence (BERT: [CLS], [SEP]),
    read from how it encodes one word (transformers 5 has no build_inputs_with_special_tokens)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(framed) - len(plain) + 1) if framed[i:i + len(plain)] == plain), None)
    if start is None:
        raise ConfigError(f"{type(tokenizer).__name__} encodes a word differently with special tokens than "
                          "without, so NER labels cannot be aligned to its tokens", "pick another backbone")
    return framed[:start], framed[start + len(plain):]


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) spans of a strict IOB2 tag sequence."""
    spans, current = [], None
    for i, tag in enumerate([*tags, "O"]):
        if current and not (tag.startswith("I-") and tag[2:] == current[0]):
            spans.append((current[0], current[1], i))
            current = None
        if tag.startswith("B-"):
            current = (tag[2:], i)
    return spans


class TokenClassificationTask(Task):
    """A task whose examples are {"tokens": [word, ...], "tags": [BIO tag, ...]}."""

    libraries = ("seqeval",)

    extra_batch_keys = ("word_tags",)

    def labels(self, config: Any) -> tuple[str, ...]:
        return bio_labels(config.types)

    def head(self, config: Any) -> HeadSpec:
        return HeadSpec("token-classification", self.labels(config))

    def text(self, example: Example) -> str:
        return "".join(example["tokens"])  # Japanese: words are written without spaces

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Any) -> list[Encoded]:
        if not examples:
            return []
        label_ids = {label: i for i, label in enumerate(self.labels(config))}
        words = [word for ex in examples for word in ex["tokens"]]
        # One batched call for every word of the split: fast tokenizers do it in Rust.
        pieces = iter(tokenizer(words, add_special_tokens=False)["input_ids"])
        before, after = special_token_frame(tokenizer)
        budget = config.max_length - len(before) - len(after)
        encoded = []
        for ex in examples:
            ids: list[int] = []
            labels: list[int] = []
            truncated = False
            for tag in ex["tags"]:
                piece = next(pieces) or [tokenizer.unk_token_id]  # a word no sub-word covers
                truncated = truncated or len(ids) + len(piece) > budget
                if truncated:
                    continue  # this and every later word stay out of the input, in the gold
                ids += piece
                labels += [label_ids[tag]] + [IGNORE] * (len(piece) - 1)
            encoded.append({
                "input_ids": before + ids + after,
                "labels": [IGNORE] * len(before) + labels + [IGNORE] * len(after),
                "word_tags": [label_ids[tag] for tag in ex["tags"]],
            })
        return encoded

    def collator(self, tokenizer: Any, config: Any, padding: str = "longest"):
        import torch
        from transformers import DataCollatorForTokenClassification

        base = DataCollatorForTokenClassification(tokenizer, padding=padding, max_length=config.max_length)

        def collate(features: list[Encoded]) -> dict[str, torch.Tensor]:
            word_tags = [f["word_tags"] for f in features]
            batch = base([{k: v for k, v in f.items() if k != "word_tags"} for f in features])
            width = max((len(w) for w in word_tags), default=0)
            batch["word_tags"] = torch.tensor([w + [IGNORE] * (width - len(w)) for w in word_tags], dtype=torch.long)
            return batch

        return collate

    def decode(self, logits: torch.Tensor, batch, config: Any) -> tuple[list, list]:
        import torch

        labels = self.labels(config)
        first_piece = batch["labels"] != IGNORE  # one position per word fed to the model
        kept = first_piece.sum(dim=1)
        width = int(kept.max()) if kept.numel() else 0
        # Move each sequence's word positions to the front, in order (stable sort of a 0/1 key).
        order = torch.sort((~first_piece).int(), dim=1, stable=True).indices[:, :width]
        scores = logits.log_softmax(-1).gather(1, order.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        if config.decoding == "viterbi":
            transitions, start = bio_constraints(labels)
            paths = viterbi(scores, kept, transitions, start)
        else:
            paths = [row[:n] for row, n in zip(scores.argmax(-1).tolist(), kept.tolist())]
        predictions, references = [], []
        for path, gold in zip(paths, batch["word_tags"].tolist()):
            gold = [labels[g] for g in gold if g != IGNORE]
            predictions.append([labels[p] for p in path] + ["O"] * (len(gold) - len(path)))
            references.append(gold)
        return predictions, references

    def trivial_predictions(self, references: list, config: Any) -> list:
        """Every word tagged O (the majority tag): no entity found, entity F1 0."""
        return [["O"] * len(tags) for tags in references]

    def example_statistics(self, predictions: list, references: list, config: Any,
                           score: str) -> ExampleStatistics | None:
        """Per sentence: entities right, predicted and in the gold standard (seqeval's strict IOB2
        entities), from which micro precision, recall and F1 follow."""
        import numpy as np
        from seqeval.scheme import IOB2, Entities

        if score not in _ENTITY_SCORES:
            return None
        gold = Entities(references, IOB2).entities
        found = Entities(predictions, IOB2).entities
        values = np.array([[len({e.to_tuple() for e in g} & {e.to_tuple() for e in f}), len(f), len(g)]
                           for g, f in zip(gold, found)], dtype=np.int64).reshape(-1, 3)
        return ExampleStatistics(values, _ENTITY_SCORES[score])

    def score(self, predictions: list, references: list, config: Any) -> dict[str, float]:
        from seqeval.metrics import classification_report
        from seqeval.scheme import IOB2

        report = classification_report(references, predictions, mode="strict", scheme=IOB2,
                                       output_dict=True, zero_division=0)
        micro = report["micro avg"]
        scores = {"f1": float(micro["f1-score"]), "precision": float(micro["precision"]),
                  "recall": float(micro["recall"])}
        for name, values in report.items():
            if not name.endswith("avg"):
                scores[f"f1_{name}"] = float(values["f1-score"])
        words = sum(len(r) for r in references)
        scores["token_accuracy"] = (sum(p == g for pr, rf in zip(predictions, references) for p, g in zip(pr, rf))
                                    / words) if words else 0.0
        return scores


# From summed (right, predicted, gold) entity counts: micro scores, 0 where undefined (as seqeval's zero_division=0).
_ENTITY_SCORES = {
    "f1": lambda t: 2 * t[0] / (t[1] + t[2]) if t[1] + t[2] else 0.0,
    "precision": lambda t: t[0] / t[1] if t[1] else 0.0,
    "recall": lambda t: t[0] / t[2] if t[2] else 0.0,
}
