"""livedoor news corpus: 9-way Japanese news-category classification (study S2).

Reads the published layout: a folder of category folders of article files
(line 1 URL, line 2 date, line 3 title, lines 4.. body; LICENSE.txt skipped),
the official ``ldcc-*.tar.gz`` archive, or a folder holding either.
"""

from __future__ import annotations

import math
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from peftbench.sdk import DataError, Example, Splits, TaskMetadata, locate

from .doc_classification import DocumentClassification
from .label_settings import GenerationSettings

CATEGORIES = (
    "dokujo-tsushin", "it-life-hack", "kaden-channel", "livedoor-homme", "movie-enter",
    "peachy", "smax", "sports-watch", "topic-news",
)
SOURCE = "https://www.rondhuit.com/download.html#ldcc (ldcc-20140209.tar.gz)"


@dataclass(frozen=True)
class LivedoorConfig(GenerationSettings):
    data_dir: str | None = None
    max_length: int = 512
    # S2: per category 40% train / 10% dev / 50% test, sklearn train_test_split, random_state 42.
    train_fraction: float = 0.4
    dev_fraction: float = 0.1
    split_seed: int = 42
    # Subset for CPU runs: a seeded sample of this many articles per category, before splitting.
    per_category: int | None = None
    text: Literal["body", "title+body"] = "body"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < self.train_fraction < 1 and 0 < self.dev_fraction < 1
                and self.train_fraction + self.dev_fraction < 1):
            raise ValueError("train_fraction and dev_fraction must be in (0, 1) and sum to less than 1")
        if self.per_category is not None and self.per_category < 10:
            raise ValueError("per_category must be >= 10 so every split gets articles of every category")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")


def clean(text: str) -> str:
    """S2's normalisation: newlines, tabs and ideographic spaces (U+3000) removed."""
    for char in ("\n", "\r", "\t", "\u3000"):
        text = text.replace(char, "")
    return text


def parse_article(raw: str, where: str, text_mode: str) -> tuple[str, str]:
    """-> (title, text). Raises DataError for files that are not articles."""
    lines = raw.splitlines()
    if len(lines) < 3:
        raise DataError(f"{where} has {len(lines)} line(s), not an article",
                        "each article file must have a URL line, a date line, a title line and body lines; "
                        "remove the file or fix it")
    title, body = lines[2], "\n".join(lines[3:])
    text = body if text_mode == "body" else f"{title}\n{body}"
    return clean(title), clean(text)


def _iter_folder(root: Path) -> Iterator[tuple[str, str, str]]:
    """(category, file name, raw text) from a folder of category folders."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.txt")):
            if path.name == "LICENSE.txt":
                continue
            try:
                raw = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})",
                                "convert it to UTF-8 or remove it; the livedoor corpus is UTF-8") from None
            yield folder.name, str(path), raw


def _iter_archive(archive: Path) -> Iterator[tuple[str, str, str]]:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".txt")),
                             key=lambda m: m.name)
            for member in members:
                parts = Path(member.name).parts
                if len(parts) < 2 or parts[-1] == "LICENSE.txt" or parts[-2] not in CATEGORIES:
                    continue
                raw = tar.extractfile(member).read().decode("utf-8")
                yield parts[-2], f"{archive}:{member.name}", raw
    except UnicodeDecodeError as exc:
        raise DataError(f"{archive}:{member.name} is not UTF-8 text (byte {exc.start})",
                        f"download the archive again from {SOURCE}") from None
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot read archive {archive} ({exc})", f"download it again from {SOURCE}") from None


def _articles(root: Path) -> Iterator[tuple[str, str, str]]:
    if root.is_file():
        return _iter_archive(root)
    if (root / "text").is_dir():
        return _iter_folder(root / "text")
    archives = sorted(root.glob("ldcc-*.tar.gz"))
    if archives and not any((root / c).is_dir() for c in CATEGORIES):
        return _iter_archive(archives[-1])
    return _iter_folder(root)


def stratified_split(items: list, train: float, dev: float, seed: int) -> tuple[list, list, list]:
    """S2's split for one category: test first (1 - train - dev), then dev out of the rest."""
    rest, test = train_test_split(items, 1 - train - dev, seed)
    train_part, dev_part = train_test_split(rest, dev / (train + dev), seed)
    return train_part, dev_part, test


def train_test_split(items: list, test_fraction: float, seed: int) -> tuple[list, list]:
    """scikit-learn's ``train_test_split(items, test_size=test_fraction, random_state=seed)``, the
    split S2 used, written out: the same permutation and rounding (tests hold the two equal) without
    importing scikit-learn, which is a second of every run process's start."""
    import numpy as np

    n_test = math.ceil(test_fraction * len(items))
    if not 0 < n_test < len(items):
        raise ValueError(f"{len(items)} articles cannot be split {1 - test_fraction:.3g} / {test_fraction:.3g} "
                         "with an article on each side")
    order = np.random.RandomState(seed).permutation(len(items))
    return [items[i] for i in order[n_test:]], [items[i] for i in order[:n_test]]


class LivedoorNews(DocumentClassification):
    name = "livedoor-news"
    description = "livedoor news corpus, 9 categories (ldcc-20140209), accuracy / macro-F1 / micro-F1"
    Config = LivedoorConfig
    metadata = TaskMetadata(
        kind="classification",
        language="ja",
        description="Japanese news articles -> one of 9 source categories",
        main_score="accuracy",
        corpus="livedoor",
        source=SOURCE,
        license="CC BY-ND 2.1 JP (articles); see each category's LICENSE.txt",
        default_backbone="cl-tohoku/bert-base-japanese",
        labels=CATEGORIES,
        greater_is_better={"accuracy": True, "macro_f1": True, "micro_f1": True, "exact_match": True},
    )

    def data_files(self, config: LivedoorConfig) -> list[str]:
        return [str(locate(self.metadata.corpus, config.data_dir, SOURCE))]

    def load(self, config: LivedoorConfig) -> Splits:
        root = locate(self.metadata.corpus, config.data_dir, SOURCE)
        by_category: dict[str, list[Example]] = {c: [] for c in CATEGORIES}
        unknown: set[str] = set()
        for category, where, raw in _articles(root):
            if category not in by_category:
                unknown.add(category)
                continue
            title, text = parse_article(raw, where, config.text)
            by_category[category].append({"id": Path(where).name, "title": title, "text": text,
                                          "label": CATEGORIES.index(category)})
        if not any(by_category.values()):
            raise DataError(f"{root} holds no livedoor articles",
                            f"expected category folders ({', '.join(CATEGORIES)}) of article .txt files, "
                            f"their parent `text/`, or an ldcc-*.tar.gz archive; download from {SOURCE}")
        missing = [c for c, docs in by_category.items() if not docs]
        if missing:
            raise DataError(f"{root} has no articles for categor{'y' if len(missing) == 1 else 'ies'} "
                            f"{', '.join(missing)}", "every one of the 9 category folders must hold articles")
        splits: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
        for category in CATEGORIES:
            docs = by_category[category]
            if config.per_category is not None and config.per_category < len(docs):
                docs = random.Random(config.split_seed).sample(docs, config.per_category)
            if len(docs) < 10:
                raise DataError(f"category {category} has only {len(docs)} articles in {root}",
                                "each category needs at least 10 to split 40/10/50")
            try:
                parts = stratified_split(docs, config.train_fraction, config.dev_fraction, config.split_seed)
            except ValueError as exc:
                raise DataError(f"category {category}: {exc}",
                                "use more articles per category, or fractions that leave every split one") from None
            for name, part in zip(("train", "dev", "test"), parts):
                splits[name].extend(part)
        info = {
            "source": str(root),
            "per_category_total": {c: len(v) for c, v in by_category.items()},
            "ignored_folders": sorted(unknown),
            "empty_texts": sum(1 for split in splits.values() for ex in split if not ex["text"]),
        }
        return Splits(splits["train"], splits["dev"], splits["test"], info)

    def label_names(self, config) -> tuple[str, ...]:
        return CATEGORIES
