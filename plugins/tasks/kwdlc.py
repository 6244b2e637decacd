"""KWDLC named-entity recognition (study S1).

Reads the ku-nlp/KWDLC repository layout: ``knp/<dir>/<doc-id>.knp`` (KNP
format, named entities as ``<NE:TYPE:text>`` features) and the split files
``id/<split-set>/{train,dev,test}.id``, parsed with rhoknp, the corpus' own
parser. One example per sentence: its morphemes and their BIO tags.

Entity policy (counted in ``peftbench data check kwdlc-ner``):
- the 8 IREX types are entities (configurable subset via ``types``);
- ``OPTIONAL`` (IREX: annotators could not decide) is tagged O and counted;
- a tag rhoknp cannot map to morphemes ("morpheme span not found") is counted
  as unmapped;
- where two entities overlap (BIO cannot nest), the one starting first
  (longer on ties) is kept and the other counted as dropped.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peftbench.sdk import DataError, Splits, TaskMetadata, hookimpl, locate

from .ner import TokenClassificationTask, entity_spans

IREX_TYPES = ("ORGANIZATION", "PERSON", "LOCATION", "ARTIFACT", "DATE", "TIME", "MONEY", "PERCENT")
SOURCE = "https://github.com/ku-nlp/KWDLC (clone it; pass the repository folder as data_dir)"
RAW_NE = re.compile(r"<NE:([^:>]+):")


@dataclass(frozen=True)
class KwdlcConfig:
    data_dir: str | None = None
    split_set: str = "split_for_pas"  # id/<split_set>/{train,dev,test}.id (S1's split)
    types: tuple[str, ...] = IREX_TYPES
    max_length: int = 128  # S1: inputs truncated to 128 tokens
    decoding: Literal["viterbi", "argmax"] = "viterbi"
    on_parse_error: Literal["stop", "skip"] = "stop"
    # Subset for CPU runs: the first N documents of each split file.
    max_documents: int | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in IREX_TYPES]
        if unknown:
            raise ValueError(f"NE type(s) {', '.join(unknown)} not in KWDLC's IREX set: {', '.join(IREX_TYPES)}")
        if not self.types:
            raise ValueError("types must name at least one NE type")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError("max_documents must be >= 1")


def _sentence_chunks(text: str) -> list[tuple[int, str]]:
    """(first line number, KNP text) per sentence; sentences end with an EOS line."""
    chunks, lines, start = [], [], 1
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if not lines:
            start = number
        lines.append(line)
        if line.strip() == "EOS":
            chunks.append((start, "".join(lines)))
            lines = []
    if any(line.strip() for line in lines):
        chunks.append((start, "".join(lines)))
    return chunks


class _CountWarnings(logging.Handler):
    """Collects rhoknp's warnings (e.g. "morpheme span not found") so they are counted, not lost."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def named_entities(sentence) -> list:
    """The sentence's named entities, found as rhoknp's ``Sentence.__post_init__`` finds them (each
    base phrase's NE feature matched to the morphemes ending at it), without the rest of that
    post-processing: predicate-argument and coreference links, which NER never reads and which
    took half of a parse of KWDLC."""
    from rhoknp.props import NamedEntity

    found = []
    for base_phrase in sentence.base_phrases:
        value = base_phrase.features.get("NE")
        if not isinstance(value, str):
            continue
        candidates = sentence.morphemes[: base_phrase.morphemes[-1].index + 1]
        entity = NamedEntity.from_fstring(f"<NE:{value.replace('>', chr(92) + '>')}>", candidates)
        if entity is not None:
            found.append(entity)
    return found


def parse_document(path: Path, types: tuple[str, ...], stats: Counter) -> list[dict[str, Any]]:
    """Sentences of one .knp file as examples. Raises DataError naming file and line."""
    from rhoknp import Sentence

    examples = []
    text = path.read_text(encoding="utf-8")
    handler = _CountWarnings()
    logger = logging.getLogger("rhoknp")
    logger.addHandler(handler)
    try:
        for line, chunk in _sentence_chunks(text):
            try:
                sentence = Sentence.from_knp(chunk, post_init=False)
                entities = named_entities(sentence)
            except Exception as exc:  # rhoknp raises several types for malformed input
                raise DataError(f"{path}:{line}: rhoknp cannot parse this sentence ({type(exc).__name__}: {exc})",
                                "fix the file, or --set on_parse_error=skip to skip such documents") from None
            words = [m.text for m in sentence.morphemes]
            tags = ["O"] * len(words)
            # NE features of base phrases ("+" lines); "*" (bunsetsu) lines may repeat them.
            raw = [m for line_text in chunk.splitlines() if line_text.startswith("+")
                   for m in RAW_NE.findall(line_text)]
            stats["ne_tags"] += len(raw)
            spans = []
            for entity in entities:
                category = entity.category.value
                if category == "OPTIONAL":
                    stats["optional"] += 1
                    continue
                if category not in types:
                    stats[f"excluded:{category}"] += 1
                    continue
                indices = [m.index for m in entity.morphemes]
                spans.append((indices[0], indices[-1] + 1, category))
            stats["unmapped"] += len(raw) - len(entities)
            spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
            taken_until = 0
            for begin, end, category in spans:
                if begin < taken_until:
                    stats["overlap_dropped"] += 1
                    continue
                tags[begin] = f"B-{category}"
                for i in range(begin + 1, end):
                    tags[i] = f"I-{category}"
                taken_until = end
                stats[f"entities:{category}"] += 1
            stats["sentences"] += 1
            stats["morphemes"] += len(words)
            examples.append({"id": sentence.sid or f"{path.stem}:{line}", "tokens": words, "tags": tags})
    finally:
        logger.removeHandler(handler)
    # Cross-sentence relations cannot resolve when sentences are parsed one by one: not our concern.
    stats["rhoknp_ne_warnings"] += sum(1 for m in handler.messages if "unknown sid" not in m)
    return examples


def _read_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class KwdlcNer(TokenClassificationTask):
    name = "kwdlc-ner"
    libraries = ("seqeval", "rhoknp")
    description = "KWDLC named entities (8 IREX types, BIO), entity-level P/R/F1 with BIO-constrained Viterbi"
    Config = KwdlcConfig
    metadata = TaskMetadata(
        kind="ner",
        language="ja",
        description="Japanese web-document leads; one example per sentence, morphemes tagged BIO",
        main_score="f1",
        corpus="kwdlc",
        source=SOURCE,
        license="KWDLC README: distributed for NLP research; documents removed on request (no LICENSE file)",
        default_backbone="cl-tohoku/bert-base-japanese-whole-word-masking",
        labels=IREX_TYPES,
        greater_is_better={"f1": True, "precision": True, "recall": True, "token_accuracy": True},
    )

    def _layout(self, config: KwdlcConfig) -> tuple[Path, dict[str, Path]]:
        root = locate(self.metadata.corpus, config.data_dir, SOURCE)
        knp, ids = root / "knp", root / "id" / config.split_set
        if not knp.is_dir():
            raise DataError(f"{root} has no knp/ folder", f"data_dir must be the KWDLC repository root ({SOURCE})")
        if not ids.is_dir():
            raise DataError(f"{root} has no id/{config.split_set}/ folder",
                            "data_dir must be the KWDLC repository root; check --set split_set=")
        files = {split: ids / f"{split}.id" for split in ("train", "dev", "test")}
        for split, path in files.items():
            if not path.is_file():
                raise DataError(f"split file {path} is missing", f"id/{config.split_set}/ needs train.id, dev.id, test.id")
        return root, files

    def _documents(self, config: KwdlcConfig) -> tuple[Path, dict[str, Path], dict[str, list[Path]]]:
        """(root, split files, the .knp files each split lists, in order)."""
        root, split_files = self._layout(config)
        documents = {p.stem: p for p in sorted((root / "knp").rglob("*.knp"))}
        wanted = {split: _read_ids(path)[: config.max_documents] for split, path in split_files.items()}
        for split, ids in wanted.items():
            missing = [i for i in ids if i not in documents]
            if missing:
                raise DataError(f"{split_files[split]} lists {len(missing)} document(s) with no .knp file under "
                                f"{root / 'knp'} (first: {missing[0]})", "use a complete KWDLC checkout")
        return root, split_files, {split: [documents[i] for i in ids] for split, ids in wanted.items()}

    def data_files(self, config: KwdlcConfig) -> list[str]:
        _, split_files, wanted = self._documents(config)
        return [*map(str, split_files.values()), *(str(path) for paths in wanted.values() for path in paths)]

    def load(self, config: KwdlcConfig) -> Splits:
        root, _, wanted = self._documents(config)
        splits, counts, skipped = {}, {}, []
        for split, paths in wanted.items():
            stats: Counter = Counter(documents=len(paths))
            examples = []
            for path in paths:
                try:
                    examples.extend(parse_document(path, config.types, stats))
                except DataError as exc:
                    if config.on_parse_error == "stop":
                        raise
                    skipped.append(str(exc))
                    stats["documents_skipped"] += 1
            splits[split], counts[split] = examples, dict(sorted(stats.items()))
        info = {"source": str(root), "split_set": config.split_set, "counts": counts, "skipped_documents": skipped}
        return Splits(splits["train"], splits["dev"], splits["test"], info)

    def encoding_report(self, examples: list, encoded: list, config: KwdlcConfig) -> dict[str, int]:
        """Sentences cut by max_length and the gold entities that lost words to the cut."""
        truncated = lost = 0
        for ex, enc in zip(examples, encoded):
            fed = sum(1 for label in enc["labels"] if label != -100)
            if fed < len(ex["tokens"]):
                truncated += 1
                lost += sum(1 for _, _, end in entity_spans(ex["tags"]) if end > fed)
        return {"sentences_truncated": truncated, "entities_lost_to_truncation": lost}


@hookimpl
def register_tasks(register) -> None:
    register(KwdlcNer())
