"""Token n-gram recognition, an auxiliary task built from the training data (study S5, A).

1. Extraction: BPE-style merges over the backbone's *sub-word ids* of the
   training documents: repeatedly merge the most frequent adjacent pair, at
   most ``merges`` times, only pairs seen at least ``min_frequency`` times.
   The merge loop is Hugging Face ``tokenizers``' BPE trainer: each sub-word
   id becomes one private character (U+10000 + id) and each document one
   "word", so merges never cross documents. A merged unit is an n-gram.
2. Tagging: a document is segmented by the learned merges; every segment of
   two or more sub-words is a BIO span whose type depends on the scheme:

   - ``all-phrase``: one type, ``Phrase`` (the class is ignored);
   - ``disregard``: the class the n-gram is specific to; n-grams of several
     classes are not tagged (O);
   - ``common-label``: the class for class-specific n-grams, ``Common`` for
     n-grams shared by classes;
   - ``bit-label``: the bit vector of the classes it occurs in, in class
     order (``10``: only the first of two classes, ``11``: both).

   An n-gram *occurs in* a class when it is a segment in at least
   ``class_min_count`` training documents of that class.

Extraction is cached per (dataset, tokenizer, settings) under
``<cache>/ngrams``; `peftbench inspect ngrams` prints the top n-grams per class.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from peftbench.sdk import DataError, cache_root

SCHEMES = ("all-phrase", "disregard", "common-label", "bit-label")
OFFSET = 0x10000  # sub-word id -> one character outside the BMP (no surrogates, no normalisation)
UNK = "<unk>"


def _chars(ids: Sequence[int]) -> str:
    return "".join(chr(OFFSET + i) for i in ids)


def _ids(chars: str) -> tuple[int, ...]:
    return tuple(ord(c) - OFFSET for c in chars)


@dataclass
class NgramTable:
    """The learned merges plus, per n-gram, how many training documents of each class contain it."""

    bpe: str  # the tokenizers model (JSON) that segments documents
    ngrams: list[tuple[int, ...]]
    class_doc_counts: list[list[int]]  # [n-gram][class]
    class_names: list[str]
    documents: int
    merges_made: int

    def segment(self, sequences: Sequence[Sequence[int]]) -> list[list[tuple[int, int]]]:
        """Per sequence, the (start, end) spans of its n-grams (two or more sub-words)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.bpe)
        spans = []
        for encoding in tokenizer.encode_batch([_chars(seq) for seq in sequences]):
            spans.append([(start, end) for start, end in encoding.offsets if end - start >= 2])
        return spans

    def classes_of(self, index: int, class_min_count: int) -> tuple[int, ...]:
        return tuple(k for k, n in enumerate(self.class_doc_counts[index]) if n >= class_min_count)

    def type_of(self, index: int, scheme: str, class_min_count: int = 1) -> str | None:
        """The n-gram's span type under a scheme; None when the scheme leaves it untagged."""
        if scheme == "all-phrase":
            return "Phrase"
        classes = self.classes_of(index, class_min_count)
        if not classes:
            return None
        if scheme == "disregard":
            return self.class_names[classes[0]] if len(classes) == 1 else None
        if scheme == "common-label":
            return self.class_names[classes[0]] if len(classes) == 1 else "Common"
        if scheme == "bit-label":
            return "".join("1" if k in classes else "0" for k in range(len(self.class_names)))
        raise ValueError(f"unknown scheme {scheme!r}; choose {', '.join(SCHEMES)}")

    def tag_labels(self, scheme: str, class_min_count: int = 1) -> tuple[str, ...]:
        types = sorted({t for i in range(len(self.ngrams)) if (t := self.type_of(i, scheme, class_min_count))})
        return ("O", *(f"{prefix}-{t}" for t in types for prefix in ("B", "I")))

    def tag(self, sequences: Sequence[Sequence[int]], scheme: str, class_min_count: int = 1) -> list[list[str]]:
        """BIO tags per sub-word of each sequence (special tokens must already be removed)."""
        index = {ngram: i for i, ngram in enumerate(self.ngrams)}
        tagged = []
        for seq, spans in zip(sequences, self.segment(sequences)):
            tags = ["O"] * len(seq)
            for start, end in spans:
                i = index.get(tuple(seq[start:end]))
                kind = None if i is None else self.type_of(i, scheme, class_min_count)
                if kind is not None:
                    tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
            tagged.append(tags)
        return tagged

    def to_json(self) -> dict[str, Any]:
        return {"bpe": self.bpe, "ngrams": [list(n) for n in self.ngrams], "class_doc_counts": self.class_doc_counts,
                "class_names": self.class_names, "documents": self.documents, "merges_made": self.merges_made}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NgramTable":
        return cls(data["bpe"], [tuple(n) for n in data["ngrams"]], data["class_doc_counts"], data["class_names"],
                   data["documents"], data["merges_made"])


def extract(sequences: Sequence[Sequence[int]], classes: Sequence[int], class_names: Sequence[str],
            merges: int, min_frequency: int) -> NgramTable:
    """Learn up to ``merges`` merges over the training sequences and count n-grams per class."""
    from tokenizers import Tokenizer, models, trainers

    texts = [_chars(seq) for seq in sequences if len(seq) >= 2]
    alphabet = sorted({c for text in texts for c in text})
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + 1 + merges, min_frequency=min_frequency,
                                  special_tokens=[UNK], initial_alphabet=alphabet, limit_alphabet=len(alphabet) + 1,
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    merges_made = len(json.loads(tokenizer.to_str())["model"]["merges"])
    if merges_made == 0:
        pairs = Counter(pair for seq in sequences for pair in zip(seq, seq[1:]))
        top = pairs.most_common(1)
        raise DataError(
            f"n-gram extraction found nothing: no pair of adjacent sub-words occurs {min_frequency}+ times in "
            f"{len(texts)} training documents (the most frequent occurs {top[0][1] if top else 0} times)",
            "lower min_frequency (--set min_frequency=N) or use more training documents")
    table = NgramTable(tokenizer.to_str(), [], [], list(class_names), len(sequences), merges_made)
    counts: dict[tuple[int, ...], list[int]] = {}
    for seq, label, spans in zip(sequences, classes, table.segment(sequences)):
        for ngram in {tuple(seq[start:end]) for start, end in spans}:  # document frequency
            counts.setdefault(ngram, [0] * len(class_names))[label] += 1
    for ngram, per_class in sorted(counts.items(), key=lambda item: (-sum(item[1]), item[0])):
        table.ngrams.append(ngram)
        table.class_doc_counts.append(per_class)
    return table


def extract_cached(key: dict[str, Any], sequences: Sequence[Sequence[int]], classes: Sequence[int],
                   class_names: Sequence[str], merges: int, min_frequency: int) -> tuple[NgramTable, bool]:
    """``key`` names the dataset and tokenizer; the sequences and settings are hashed here."""
    digest = hashlib.sha256(json.dumps(
        {**key, "merges": merges, "min_frequency": min_frequency, "classes": list(classes),
         "class_names": list(class_names), "sequences": hashlib.sha256(
             json.dumps([list(s) for s in sequences]).encode()).hexdigest()},
        sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_root() / "ngrams" / f"{digest}.json"
    if path.exists():
        try:
            return NgramTable.from_json(json.loads(path.read_text(encoding="utf-8"))), True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    table = extract(sequences, classes, class_names, merges, min_frequency)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(table.to_json(), handle)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache costs time, not the run
    return table, False


def top_per_class(table: NgramTable, top: int, order: str = "count"
                  ) -> dict[str, list[tuple[tuple[int, ...], int, tuple[int, ...]]]]:
    """Per class: its ``top`` n-grams with their document count in the class and the classes they
    occur in. ``order``: "count" (documents in the class) or "specific" (share of the n-gram's
    documents that are in the class, then count)."""
    result = {}
    for k, name in enumerate(table.class_names):
        def rank(i: int) -> tuple:
            counts = table.class_doc_counts[i]
            share = counts[k] / sum(counts)
            return (-share, -counts[k], i) if order == "specific" else (-counts[k], i)

        ranked = sorted((i for i in range(len(table.ngrams)) if table.class_doc_counts[i][k] > 0), key=rank)[:top]
        result[name] = [(table.ngrams[i], table.class_doc_counts[i][k], table.classes_of(i, 1)) for i in ranked]
    return result
