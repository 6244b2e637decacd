"""`multiple-choice`: pick the right answer among k choices (JGLUE JCommonsenseQA, COPA, SWAG);
accuracy. Each (context, choice) pair is encoded as one input; the model scores every choice
(Hugging Face's ...ForMultipleChoice head) and the best-scored one is the prediction.

Data as for the sentence-pair tasks (``data_dir`` files or a Hugging Face ``dataset``; see
plugins/tasks/pair_rows.py). Columns: ``context`` (JCommonsenseQA: question, the default),
``choices`` (comma-separated column names; default choice0..choice4 as in JCommonsenseQA),
``label`` (the right choice's index, 0-based).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from peftbench.sdk import DataError, Example, ExampleStatistics, HeadSpec, Splits, Task, TaskMetadata, hookimpl

from .pair_rows import Row, dev_rows, read_rows, sample_rows

KIND = "multiple-choice"


@dataclass(frozen=True)
class ChoiceConfig:
    data_dir: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    context: str = "question"
    choices: str = "choice0,choice1,choice2,choice3,choice4"
    label: str = "label"
    train_split: str = "train"
    dev_split: str = "validation"  # "" carves dev from train
    test_split: str = "test"
    max_length: int = 64  # per (context, choice) input
    dev_fraction: float = 0.1
    split_seed: int = 42
    train_limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self) -> None:
        if self.data_dir is not None and self.dataset is not None:
            raise ValueError("give one of data_dir (local files) and dataset (Hugging Face datasets), not both")
        if len(self.choice_columns) < 2:
            raise ValueError(f"choices must name at least two columns, got {self.choices!r}")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")

    @property
    def choice_columns(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.choices.split(",") if c.strip())


class MultipleChoice(Task):
    name = "multiple-choice"
    description = "multiple choice (JGLUE JCommonsenseQA, COPA, SWAG): one of k answers, accuracy"
    metadata = TaskMetadata(kind=KIND, language="any", description=description, main_score="accuracy",
                            corpus="", source="your files or a Hugging Face dataset", license="the data's own",
                            greater_is_better={"accuracy": True}, default_backbone="roberta-base")
    Config = ChoiceConfig

    def head(self, config: ChoiceConfig) -> HeadSpec:
        return HeadSpec(KIND)  # one score per choice: no label set

    def load(self, config: ChoiceConfig) -> Splits:
        rows, _, source = read_rows(config)
        columns = (config.context, *config.choice_columns, config.label)
        for split, items in rows.items():
            missing = [c for c in columns if items and c not in items[0]]
            if not items or missing:
                found = ", ".join(k for k in (items[0] if items else {}) if k != "_id") or "no rows"
                raise DataError(f"{source}: the {split} split " + (f"has no column {', '.join(map(repr, missing))} "
                                f"(it has {found})" if items else "is empty"),
                                "name the columns: --set context=... --set choices=a,b,c --set label=...")
        train = sample_rows(rows["train"], config.train_limit, config.split_seed)
        train, dev, dev_source = dev_rows(rows, train, config)
        test = sample_rows(rows["test"], config.test_limit, config.split_seed)
        made = {split: [self._example(row, config, split) for row in items]
                for split, items in (("train", train), ("dev", dev), ("test", test))}
        return Splits(made["train"], made["dev"], made["test"], {"source": source, "dev": dev_source,
                                                                 "choices": len(config.choice_columns)})

    @staticmethod
    def _example(row: Row, config: ChoiceConfig, split: str) -> Example:
        choices = config.choice_columns
        try:
            label = int(row[config.label])
        except (TypeError, ValueError):
            label = -1
        if not 0 <= label < len(choices):
            hint = ("a hidden test split (label -1): --set test_split=validation --set dev_split="
                    if str(row[config.label]) == "-1" else "the label is the right choice's 0-based index")
            raise DataError(f"{row['_id']}: label {row[config.label]!r} of the {split} split is not a choice "
                            f"index 0-{len(choices) - 1}", hint)
        return {"id": row["_id"], "context": str(row[config.context]),
                "choices": [str(row[c]) for c in choices], "label": label}

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: ChoiceConfig) -> list[dict]:
        if not examples:
            return []
        k = len(examples[0]["choices"])
        contexts = [ex["context"] for ex in examples for _ in range(k)]
        answers = [choice for ex in examples for choice in ex["choices"]]
        encoded = tokenizer(contexts, answers, truncation="longest_first", max_length=config.max_length,
                            return_attention_mask=False)
        keys = [key for key in ("input_ids", "token_type_ids") if key in encoded]
        # One flat sequence per example plus each choice's length: what the encoding cache stores;
        # the collator cuts it back into choices.
        return [{**{key: [t for ids in encoded[key][i * k:(i + 1) * k] for t in ids] for key in keys},
                 "choice_lengths": [len(ids) for ids in encoded["input_ids"][i * k:(i + 1) * k]],
                 "labels": ex["label"]} for i, ex in enumerate(examples)]

    def collator(self, tokenizer: Any, config: ChoiceConfig, padding: str = "longest"):
        """Pad every choice of every example in a batch to one length: tensors of [batch, choices, length]."""
        from transformers import DataCollatorWithPadding

        pad = DataCollatorWithPadding(tokenizer, padding=padding, max_length=config.max_length)

        def choices(feature: dict) -> list[dict]:
            keys = [key for key in feature if key not in ("labels", "choice_lengths")]
            cuts, start = [], 0
            for length in feature["choice_lengths"]:
                cuts.append({key: feature[key][start:start + length] for key in keys})
                start += length
            return cuts

        def collate(features: list[dict]) -> dict:
            k = len(features[0]["choice_lengths"])
            flat = pad([choice for feature in features for choice in choices(feature)])
            batch = {key: value.view(len(features), k, -1) for key, value in flat.items()}
            batch["labels"] = flat["input_ids"].new_tensor([feature["labels"] for feature in features])
            return batch

        return collate

    def decode(self, logits, batch, config: ChoiceConfig) -> tuple[list, list]:
        return logits.argmax(-1).tolist(), batch["labels"].tolist()

    def score(self, predictions: list, references: list, config: ChoiceConfig) -> dict[str, float]:
        right = sum(p == r for p, r in zip(predictions, references))
        return {"accuracy": right / len(references) if references else 0.0}

    def example_statistics(self, predictions: list, references: list, config: ChoiceConfig,
                           score: str) -> ExampleStatistics | None:
        import numpy as np

        if score != "accuracy":
            return None
        values = np.stack([np.asarray(predictions) == np.asarray(references), np.ones(len(references), bool)], 1)
        return ExampleStatistics(values.astype(np.int64), lambda t: t[0] / t[1] if t[1] else 0.0)

    def chance_scores(self, references: list, config: ChoiceConfig) -> dict[str, float]:
        return {"accuracy": 1 / len(config.choice_columns)}

    def text(self, example: Example) -> str:
        return "\n".join([example["context"], *example["choices"]])

    def data_files(self, config: ChoiceConfig) -> list[str]:
        return [config.data_dir] if config.data_dir else []

    def cache_key(self, config: ChoiceConfig) -> dict[str, Any]:
        return {"max_length": config.max_length}


@hookimpl
def register_tasks(register) -> None:
    register(MultipleChoice())
