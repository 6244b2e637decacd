"""Sentence-pair tasks as GLUE and JGLUE pose them, for the benchmarks PEFT papers report:

- `sentence-pair`: classify a pair (NLI: RTE, MNLI, JNLI; paraphrase: MRPC, QQP); accuracy,
  macro-F1;
- `sts`: a similarity score per pair, learned by regression (STS-B, JSTS); Pearson and Spearman
  correlation (scipy).

Data, either
- ``--set data_dir=FOLDER``: ``train`` / ``dev`` (or ``valid``, ``validation``) / ``test`` files
  with a header: TSV (GLUE's layout), CSV or JSON lines (JGLUE's ``train-v1.3.json`` names too); or
- ``--set dataset=NAME_OR_FOLDER``: Hugging Face ``datasets``: a folder written by
  ``save_to_disk``, a folder ``load_dataset`` reads, or a hub dataset in the local cache
  (``--set dataset=nyu-mll/glue --set dataset_config=rte``).

Columns: ``text_a``, ``text_b``, ``label`` name them (GLUE RTE/JGLUE: sentence1, sentence2,
label, the defaults; MNLI: premise, hypothesis). Splits: ``train_split``, ``dev_split``,
``test_split``; ``dev_split=""`` carves dev from train. GLUE's test labels are hidden (-1), so
``--set test_split=validation --set dev_split=`` is how GLUE is usually scored.
"""

from __future__ import annotations

import csv
import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from peftbench.sdk import DataError, Example, HeadSpec, Splits, Task, TaskMetadata

from .doc_classification import DocumentClassification

SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")
SPLIT_STEMS = {"dev": ("dev", "valid", "validation")}


@dataclass(frozen=True)
class PairConfig:
    data_dir: str | None = None
    dataset: str | None = None  # Hugging Face datasets: save_to_disk folder, load_dataset folder or cached hub name
    dataset_config: str | None = None  # the dataset's configuration, e.g. rte of nyu-mll/glue
    text_a: str = "sentence1"
    text_b: str = "sentence2"
    label: str = "label"
    train_split: str = "train"
    dev_split: str = "validation"  # "" carves dev from train (dev_fraction, split_seed)
    test_split: str = "test"
    max_length: int = 128
    dev_fraction: float = 0.1
    split_seed: int = 42
    train_limit: int | None = None  # CPU subsets: a seeded sample of this many training pairs
    test_limit: int | None = None

    def __post_init__(self) -> None:
        if self.data_dir is not None and self.dataset is not None:
            raise ValueError("give one of data_dir (local files) and dataset (Hugging Face datasets), not both")
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")
        for name in ("train_limit", "test_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


Row = dict[str, Any]


# ----------------------------------------------------------------------- readers


def _file_for(root: Path, split: str, name: str) -> Path | None:
    """The file of a split: ``train.tsv``, ``dev.csv``, ``valid-v1.3.json``, ... (None if absent)."""
    for stem in (name, *SPLIT_STEMS.get(split, ())):
        for suffix in SUFFIXES:
            exact = sorted(root.glob(f"{stem}{suffix}")) or sorted(root.glob(f"{stem}-*{suffix}"))
            if exact:
                return exact[0]
    return None


def _read_file(path: Path) -> list[Row]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise DataError(f"{path}:{number} is not a JSON object", "write one object per line") from None
        return rows
    dialect = "excel-tab" if path.suffix == ".tsv" else "excel"
    # GLUE's TSVs hold unbalanced quotes inside sentences: quoting is off for TSV.
    quoting = csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL
    return list(csv.DictReader(text.splitlines(), dialect=dialect, quoting=quoting))


def read_local(root: Path, config: Any) -> dict[str, list[Row]]:
    """Rows per split from local files (``config``: any settings with the three split names)."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder", "data_dir must hold train.* and test.* files")
    names = {"train": config.train_split, "dev": config.dev_split, "test": config.test_split}
    found = {split: _file_for(root, split, name) for split, name in names.items() if name}
    for split in ("train", "test"):
        if found.get(split) is None:
            raise DataError(f"{root} has no {names[split]} file ({split} split)",
                            f"add {names[split]}.tsv / .csv / .jsonl with a header, or --set {split}_split=NAME")
    return {split: [dict(row, _id=f"{path}:{i}") for i, row in enumerate(_read_file(path), 1)]
            for split, path in found.items() if path is not None}


def read_datasets(config: Any) -> tuple[dict[str, list[Row]], tuple[str, ...] | None]:
    """Rows per split from Hugging Face datasets, and the label names a ClassLabel column gives
    (``config``: settings with dataset, dataset_config, the split names and the label column)."""
    try:
        import datasets
    except ImportError:
        raise DataError("--set dataset= needs the datasets package", 'pip install "peftbench[datasets]"') from None
    local = Path(config.dataset).expanduser()
    try:
        if (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(str(local) if local.exists() else config.dataset, config.dataset_config)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; one line says which dataset
        raise DataError(f"cannot load dataset {config.dataset!r} ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                        "pass a save_to_disk folder, a folder of train/validation/test files, or a hub dataset "
                        "already in the local cache") from None
    wanted = {"train": config.train_split, "dev": config.dev_split, "test": config.test_split}
    rows = {}
    for split, name in wanted.items():
        if not name:
            continue
        if name not in loaded:
            raise DataError(f"dataset {config.dataset!r} has no split {name!r} (it has {', '.join(loaded)})",
                            f"--set {split}_split=ONE_OF_THEM")
        rows[split] = [dict(row, _id=f"{name}:{i}") for i, row in enumerate(loaded[name])]
    feature = loaded[config.train_split].features.get(config.label)
    return rows, tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None


# ----------------------------------------------------------------------- tasks


class _SentencePairs(Task):
    """What both tasks share: reading, columns, subsets, pair encoding."""

    Config = PairConfig

    def _raw(self, config: PairConfig) -> tuple[dict[str, list[Row]], tuple[str, ...] | None, str]:
        return read_rows(config)

    def _check_columns(self, rows: dict[str, list[Row]], config: PairConfig, source: str) -> None:
        for split, items in rows.items():
            if not items:
                raise DataError(f"{source}: the {split} split is empty", "add examples")
            missing = [c for c in (config.text_a, config.text_b, config.label) if c not in items[0]]
            if missing:
                columns = ", ".join(k for k in items[0] if k != "_id")
                raise DataError(f"{source}: the {split} split has no column {', '.join(map(repr, missing))} "
                                f"(it has {columns})", "name the columns: --set text_a=... text_b=... label=...")

    def _splits(self, config: PairConfig, label_of) -> Splits:
        rows, names, source = self._raw(config)
        self._check_columns(rows, config, source)
        train = sample_rows(rows["train"], config.train_limit, config.split_seed)
        train, dev, dev_source = dev_rows(rows, train, config)
        test = sample_rows(rows["test"], config.test_limit, config.split_seed)

        def examples(items: list[Row], split: str) -> list[Example]:
            return [{"id": row["_id"], "text_a": str(row[config.text_a]), "text_b": str(row[config.text_b]),
                     "label": label_of(row[config.label], split, row["_id"])} for row in items]

        made = {"train": examples(train, "train"), "dev": examples(dev, "dev"), "test": examples(test, "test")}
        return Splits(made["train"], made["dev"], made["test"], {"source": source, "dev": dev_source})

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: PairConfig) -> list[dict]:
        if not examples:
            return []
        # Both sentences truncated together, the longer first (what GLUE fine-tuning scripts do).
        encoded = tokenizer([ex["text_a"] for ex in examples], [ex["text_b"] for ex in examples],
                            truncation="longest_first", max_length=config.max_length, return_attention_mask=False)
        keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        return [{**{k: encoded[k][i] for k in keys}, "labels": ex["label"]} for i, ex in enumerate(examples)]

    def text(self, example: Example) -> str:
        return f"{example['text_a']}\n{example['text_b']}"

    def data_files(self, config: PairConfig) -> list[str]:
        return [config.data_dir] if config.data_dir else []  # hub/datasets caches have their own

    def cache_key(self, config: PairConfig) -> dict[str, Any]:
        return {"max_length": config.max_length}


@functools.lru_cache(maxsize=4)
def read_rows(config: Any) -> tuple[dict[str, list[Row]], tuple[str, ...] | None, str]:
    """Rows per split, ClassLabel names (if any) and where they came from, from local files or
    Hugging Face datasets; read once per config (the head and the splits both need them)."""
    if config.data_dir is None and config.dataset is None:
        raise DataError("this task needs its data", "--set data_dir=FOLDER (train/dev/test files) or "
                        "--set dataset=NAME_OR_FOLDER (Hugging Face datasets)")
    if config.dataset is not None:
        rows, names = read_datasets(config)
        return rows, names, config.dataset
    root = Path(config.data_dir).expanduser()
    return read_local(root, config), None, str(root)


def dev_rows(rows: dict[str, list[Row]], train: list[Row], config: Any) -> tuple[list[Row], list[Row], str]:
    """(train, dev, where dev came from): the given dev split, else a seeded share of train."""
    if "dev" in rows:
        return train, rows["dev"], "given"
    shuffled = random.Random(config.split_seed).sample(train, len(train))
    take = max(1, round(len(train) * config.dev_fraction))
    return shuffled[take:], shuffled[:take], f"carved from train ({config.dev_fraction:.0%}, seed {config.split_seed})"


def sample_rows(rows: list[Row], limit: int | None, seed: int) -> list[Row]:
    return rows if limit is None or limit >= len(rows) else random.Random(seed).sample(rows, limit)


class SentencePairClassification(_SentencePairs, DocumentClassification):
    name = "sentence-pair"
    description = "sentence-pair classification (NLI, paraphrase: GLUE RTE/MNLI/MRPC, JGLUE JNLI), accuracy"
    metadata = TaskMetadata(kind="classification", language="any", description=description, main_score="accuracy",
                            corpus="", source="your files or a Hugging Face dataset", license="the data's own",
                            greater_is_better={"accuracy": True, "macro_f1": True, "micro_f1": True},
                            default_backbone="roberta-base")

    def labels(self, config: PairConfig) -> tuple[str, ...]:
        rows, names, source = self._raw(config)
        if names:
            return names
        labels = tuple(sorted({str(row.get(config.label)) for row in rows["train"]}))
        if len(labels) < 2:
            raise DataError(f"{source}: the training pairs have {len(labels)} label(s); a classifier needs two",
                            "check --set label=COLUMN")
        return labels

    def head(self, config: PairConfig) -> HeadSpec:
        return HeadSpec("sequence-classification", self.labels(config))

    def label_names(self, config: PairConfig) -> tuple[str, ...]:
        return self.labels(config)

    def load(self, config: PairConfig) -> Splits:
        labels, (_, names, _) = self.labels(config), self._raw(config)
        index = {label: i for i, label in enumerate(labels)}

        def label_of(value: Any, split: str, where: str) -> int:
            # A ClassLabel column stores the index of its name; files store the label itself.
            key = names[value] if names and isinstance(value, int) and 0 <= value < len(names) else str(value)
            if key not in index:
                hint = ("GLUE hides its test labels (-1): --set test_split=validation --set dev_split="
                        if str(value) == "-1" else "every label must occur in the training split")
                raise DataError(f"{where}: label {value!r} of the {split} split is not a training label", hint)
            return index[key]

        return self._splits(config, label_of)


class SemanticTextualSimilarity(_SentencePairs):
    name = "sts"
    description = "semantic textual similarity (GLUE STS-B, JGLUE JSTS): regression, Pearson/Spearman"
    metadata = TaskMetadata(kind="regression", language="any", description=description, main_score="pearson",
                            corpus="", source="your files or a Hugging Face dataset", license="the data's own",
                            greater_is_better={"pearson": True, "spearman": True, "mse": False},
                            default_backbone="roberta-base")
    libraries = ("scipy",)

    def head(self, config: PairConfig) -> HeadSpec:
        # One output: Hugging Face's sequence-classification models then train with MSE (regression).
        return HeadSpec("sequence-classification", ("similarity",))

    def load(self, config: PairConfig) -> Splits:
        def label_of(value: Any, split: str, where: str) -> float:
            try:
                return float(value)
            except (TypeError, ValueError):
                raise DataError(f"{where}: similarity {value!r} of the {split} split is not a number",
                                "check --set label=COLUMN") from None

        return self._splits(config, label_of)

    def decode(self, logits, batch, config: PairConfig) -> tuple[list, list]:
        return logits.squeeze(-1).tolist(), batch["labels"].tolist()

    def trivial_predictions(self, references: list, config: PairConfig) -> list | None:
        """The split's mean similarity for every pair: correlation 0, MSE the variance."""
        return [sum(references) / len(references)] * len(references) if references else None

    def chance_scores(self, references: list, config: PairConfig) -> dict[str, float]:
        return {"pearson": 0.0, "spearman": 0.0}

    def score(self, predictions: list, references: list, config: PairConfig) -> dict[str, float]:
        import numpy as np
        from scipy.stats import pearsonr, spearmanr

        predicted, gold = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
        constant = len(gold) < 2 or np.ptp(predicted) == 0 or np.ptp(gold) == 0  # correlation undefined: 0
        return {"pearson": 0.0 if constant else float(pearsonr(predicted, gold).statistic),
                "spearman": 0.0 if constant else float(spearmanr(predicted, gold).statistic),
                "mse": float(np.mean((predicted - gold) ** 2)) if len(gold) else 0.0}
