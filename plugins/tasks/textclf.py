"""Document classification from local files in the common published layouts (study S5).

Tasks: `r8`, `r52`, `mr`, `ohsumed`, `20ng` (their usual layouts, found under
``$PEFTBENCH_DATA/<corpus>`` or ``--set data_dir=``) and `text-classification`
(any folder in one of the layouts below, ``--set data_dir=`` required).

Layouts, detected in this order in the data folder:

- ``train.{tsv,txt,csv,jsonl}`` + ``test.*`` (+ optional ``dev.*`` / ``valid.*``):
  ``label<TAB>text`` lines (TextGCN's R8/R52), CSV with ``label`` and ``text``
  columns, or JSON lines with ``label`` and ``text``;
- ``text_train.txt`` + ``label_train.txt`` (and ``_test``): one document / label per line (TextGCN's mr/);
- class folders under ``training/`` or ``*-train/`` and ``test/`` or ``*-test/``:
  one document per file (Ohsumed's ohsumed_single_23, 20 Newsgroups' 20news-bydate).

When there is no dev split, one is carved from train: per class, a seeded
``dev_fraction`` (at least one document for classes with two or more).
Scores: micro-F1 (= accuracy for single-label data), macro-F1 over the
training classes.
"""

from __future__ import annotations

import csv
import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from peftbench.sdk import DataError, Example, Splits, TaskMetadata, hookimpl, locate

from .doc_classification import DocumentClassification
from .label_settings import GenerationSettings

TEXTGCN = "https://github.com/yao8839836/text_gcn (data/)"
SUFFIXES = (".tsv", ".txt", ".csv", ".jsonl")


@dataclass(frozen=True)
class TextClassificationConfig(GenerationSettings):
    data_dir: str | None = None
    max_length: int = 512
    dev_fraction: float = 0.1  # used only when the data has no dev split
    split_seed: int = 42
    # CPU subsets: a seeded sample of at most this many documents per class.
    train_per_class: int | None = None
    test_per_class: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1")


# ----------------------------------------------------------------------- readers

Raw = list[tuple[str, str, str]]  # (id, label, text)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # 20 Newsgroups' files are Latin-1
        return raw.decode("latin-1")


def _lines(path: Path) -> list[str]:
    # Not str.splitlines(): it also splits at form feeds and other Unicode breaks inside documents.
    lines = [line.removesuffix("\r") for line in _read_text(path).split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def _read_table(path: Path) -> Raw:
    rows: Raw = []
    where = lambda number: f"{path}:{number}"  # noqa: E731
    if path.suffix == ".jsonl":
        for number, line in enumerate(_lines(path), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if item["label"] is None:  # would become a class named "None"
                    raise DataError(f"{where(number)} has a null label", "give every row its label (or drop the row)")
                rows.append((where(number), str(item["label"]), str(item["text"])))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{where(number)} is not a JSON object with `label` and `text`",
                                "write one {\"label\": ..., \"text\": ...} object per line") from None
    elif path.suffix == ".csv":
        rows = _read_csv(path)
    else:
        for number, line in enumerate(_lines(path), 1):
            if not line.strip():
                continue
            label, tab, text = line.partition("\t")
            if not tab:
                raise DataError(f"{where(number)} has no TAB", "each line must be `label<TAB>text`")
            rows.append((where(number), label, text))
    return rows


def _read_csv(path: Path) -> Raw:
    # strict: an unclosed quote is an error, not a cell that swallows the rest of the file.
    reader = csv.DictReader(_read_text(path).splitlines(keepends=True), strict=True)
    rows: Raw = []
    starts = 1
    try:
        if not reader.fieldnames or not {"label", "text"} <= set(reader.fieldnames):
            raise DataError(f"{path} has columns {reader.fieldnames}, not `label` and `text`",
                            "the first row must be a header naming a `label` and a `text` column")
        while True:
            starts = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return rows
            if row["label"] is None or row["text"] is None:
                raise DataError(f"{path}:{reader.line_num} has fewer cells than the header",
                                "each row needs a label and a text cell (quote texts with commas)")
            rows.append((f"{path}:{reader.line_num}", row["label"], row["text"]))
    except csv.Error as exc:
        raise DataError(f"{path}:{starts}: not valid CSV ({exc}; a quote opened in this row is never closed?)",
                        "quote a text that holds commas or line breaks, and double a quote inside it (\"\")")


def _read_parallel(texts: Path, labels: Path) -> Raw:
    text_lines, label_lines = _lines(texts), _lines(labels)
    if len(text_lines) != len(label_lines):
        raise DataError(f"{texts} has {len(text_lines)} lines but {labels} has {len(label_lines)}",
                        "the text and label files must have one line per document each")
    return [(f"{texts}:{i}", label.strip(), text) for i, (text, label) in enumerate(zip(text_lines, label_lines), 1)]


def _read_class_folders(root: Path) -> Raw:
    rows: Raw = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            rows.append((str(path), folder.name, _read_text(path)))
    return rows


def _find(root: Path, stems: Sequence[str]) -> Path | None:
    for stem in stems:
        for suffix in SUFFIXES:
            if (root / f"{stem}{suffix}").is_file():
                return root / f"{stem}{suffix}"
    return None


def _class_root(root: Path, names: Sequence[str], suffix: str) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    matches = sorted(p for p in root.glob(f"*-{suffix}") if p.is_dir())
    return matches[0] if matches else None


@functools.lru_cache(maxsize=8)
def read_layout(root: Path) -> tuple[str, dict[str, Raw]]:
    """-> (layout name, {split: rows}) for the first layout found in ``root``; dev may be absent."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder", "data_dir must be the dataset's folder")
    train, test = _find(root, ("train",)), _find(root, ("test",))
    if train or test:
        if not train:
            present = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
            raise DataError(f"{root} has a test file but no training file (it holds {present})",
                            "peftbench needs train.* to fine-tune; TextGCN's R52 train.txt is in its repository")
        if not test:
            raise DataError(f"{root} has {train.name} but no test file", "add test.tsv/.txt/.csv/.jsonl")
        splits = {"train": _read_table(train), "test": _read_table(test)}
        dev = _find(root, ("dev", "valid", "validation"))
        if dev:
            splits["dev"] = _read_table(dev)
        return "label-text-files", splits
    if (root / "text_train.txt").is_file() and (root / "label_train.txt").is_file():
        splits = {split: _read_parallel(root / f"text_{split}.txt", root / f"label_{split}.txt")
                  for split in ("train", "test") if (root / f"text_{split}.txt").is_file()}
        if "test" not in splits:
            raise DataError(f"{root} has text_train.txt but no text_test.txt + label_test.txt", "add the test files")
        return "text-and-label-lines", splits
    train_root = _class_root(root, ("training", "train"), "train")
    test_root = _class_root(root, ("test",), "test")
    if train_root and test_root:
        return "class-folders", {"train": _read_class_folders(train_root), "test": _read_class_folders(test_root)}
    raise DataError(
        f"{root} is in no layout peftbench reads",
        "expected train.tsv|txt|csv|jsonl + test.* (label<TAB>text, CSV or JSONL with label/text), "
        "text_train.txt + label_train.txt (+ _test), or class folders under training/ (or *-train/) and test/",
    )


def _sample_per_class(rows: Raw, limit: int | None, seed: int) -> Raw:
    if limit is None:
        return rows
    by_label: dict[str, Raw] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    kept: Raw = []
    for label in sorted(by_label):
        group = by_label[label]
        kept.extend(group if len(group) <= limit else random.Random(seed).sample(group, limit))
    return kept


def carve_dev(rows: Raw, fraction: float, seed: int) -> tuple[Raw, Raw]:
    """Per class: a seeded ``fraction`` to dev (at least one when the class has two or more)."""
    by_label: dict[str, Raw] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    train: Raw = []
    dev: Raw = []
    for label in sorted(by_label):
        group = list(by_label[label])
        random.Random(f"{seed}:{label}").shuffle(group)
        take = 0 if len(group) < 2 else max(1, round(len(group) * fraction))
        dev.extend(group[:take])
        train.extend(group[take:])
    return train, dev


class TextClassification(DocumentClassification):
    Config = TextClassificationConfig

    def __init__(self, name: str, description: str, corpus: str, source: str, license: str,
                 subfolder: str | None = None, default_backbone: str = "roberta-base",
                 label_words: dict[str, str] | None = None, prompt_template: str | None = None) -> None:
        self.name = name
        self.own_label_words, self.own_prompt_template = label_words, prompt_template
        self.description = description
        self.subfolder = subfolder
        self.metadata = TaskMetadata(
            kind="classification", language="en", description=description, main_score="micro_f1",
            corpus=corpus, source=source, license=license, default_backbone=default_backbone,
            greater_is_better={"micro_f1": True, "macro_f1": True, "accuracy": True, "exact_match": True},
        )

    def root(self, config: TextClassificationConfig) -> Path:
        if self.metadata.corpus == "" and not config.data_dir:
            raise DataError(f"task {self.name} needs --set data_dir=FOLDER", "point it at your dataset folder")
        root = locate(self.metadata.corpus, config.data_dir, self.metadata.source)
        if self.subfolder and (root / self.subfolder).is_dir():
            return root / self.subfolder
        return root

    def raw_splits(self, config: TextClassificationConfig) -> tuple[str, dict[str, Raw], Path]:
        root = self.root(config)
        layout, splits = read_layout(root)
        if not splits["train"]:
            raise DataError(f"{root}: the training split is empty", "add training documents")
        return layout, splits, root

    def labels(self, config: TextClassificationConfig) -> tuple[str, ...]:
        _, splits, root = self.raw_splits(config)
        labels = tuple(sorted({label for _, label, _ in splits["train"]}))
        if len(labels) < 2:
            raise DataError(f"{root}: the training documents have {len(labels)} class(es) "
                            f"({', '.join(map(repr, labels)) or 'none'}); a classifier needs at least two",
                            "check the label column, or point data_dir at the whole dataset")
        return labels

    def data_files(self, config: TextClassificationConfig) -> list[str]:
        return [str(self.root(config))]

    def load(self, config: TextClassificationConfig) -> Splits:
        layout, raw, root = self.raw_splits(config)
        labels = self.labels(config)
        for split in ("dev", "test"):
            unseen = sorted({label for _, label, _ in raw.get(split, [])} - set(labels))
            if unseen:
                counts = {u: sum(1 for _, label, _ in raw[split] if label == u) for u in unseen[:5]}
                raise DataError(
                    f"{root}: class{'es' if len(unseen) > 1 else ''} "
                    f"{', '.join(f'{u!r} ({n} {split} documents)' for u, n in counts.items())} "
                    f"{'have' if len(unseen) > 1 else 'has'} no training documents",
                    "a classifier cannot learn a class it never sees: add training documents or drop those "
                    f"{split} documents")
        train = _sample_per_class(raw["train"], config.train_per_class, config.split_seed)
        if "dev" in raw:
            dev, dev_source = raw["dev"], "given"
        else:
            train, dev = carve_dev(train, config.dev_fraction, config.split_seed)
            dev_source = f"carved from train ({config.dev_fraction:.0%} per class, seed {config.split_seed})"
        test = _sample_per_class(raw["test"], config.test_per_class, config.split_seed)
        index = {label: i for i, label in enumerate(labels)}

        def examples(rows: Raw) -> list[Example]:
            return [{"id": where, "text": text, "label": index[label]} for where, label, text in rows]

        info = {"source": str(root), "layout": layout, "labels": list(labels), "dev": dev_source,
                "empty_texts": sum(1 for rows in (train, dev, test) for _, _, t in rows if not t.strip()),
                "train_per_class": {label: sum(1 for _, l, _ in train if l == label) for label in labels}}
        return Splits(examples(train), examples(dev), examples(test), info)

    def label_names(self, config) -> tuple[str, ...]:
        return self.labels(config)


TASKS = (
    TextClassification("r8", "Reuters-21578 R8 (TextGCN layout), 8 topics, micro/macro-F1", "textgcn", TEXTGCN,
                       "Reuters-21578: free for research (Distribution 1.0)", subfolder="R8"),
    TextClassification("r52", "Reuters-21578 R52 (TextGCN layout), 52 topics, micro/macro-F1", "textgcn", TEXTGCN,
                       "Reuters-21578: free for research (Distribution 1.0)", subfolder="R52"),
    TextClassification("mr", "movie review polarity (TextGCN layout), 2 classes, micro/macro-F1", "textgcn",
                       TEXTGCN, "Pang & Lee sentence polarity v1.0: research use", subfolder="mr",
                       label_words={"0": "negative", "1": "positive"},
                       prompt_template="Review: {text}\nIs this movie review positive or negative? Answer with one word."),
    TextClassification("ohsumed", "Ohsumed cardiovascular abstracts, 23 single-label classes (TextGCN), "
                       "micro/macro-F1", "textgcn", TEXTGCN, "OHSUMED (NLM): research use",
                       subfolder="ohsumed_single_23"),
    TextClassification("20ng", "20 Newsgroups by-date split, 20 classes, micro/macro-F1", "20news-bydate",
                       "http://qwone.com/~jason/20Newsgroups/ (20news-bydate.tar.gz)", "research use"),
    TextClassification("text-classification", "any local document-classification set (--set data_dir=; "
                       "TSV/CSV/JSONL, text+label lines or class folders), micro/macro-F1", "",
                       "your own files", "the data's own"),
)


@hookimpl
def register_tasks(register) -> None:
    for task in TASKS:
        register(task)
