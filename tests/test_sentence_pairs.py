"""Sentence-pair classification (NLI) and STS regression, from GLUE-style TSV files, JGLUE-style
JSON lines and a Hugging Face `datasets` folder, trained with LoRA and with IA3."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from peftbench.records import record as records

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "livedoor-sample"


def titles() -> list[tuple[str, str]]:
    """(category, title) of the sample's articles: Japanese text the tiny BERT's vocabulary covers."""
    found = []
    for category in ("it-life-hack", "sports-watch", "movie-enter"):
        for path in sorted(p for p in (SAMPLE / category).glob("*.txt") if p.name != "LICENSE.txt")[:16]:
            found.append((category, path.read_text(encoding="utf-8").splitlines()[2][:60]))
    return found


def pairs(count: int, seed: int) -> list[tuple[str, str, bool]]:
    """Pairs of titles, half from the same category ("entailment": learnable from the words)."""
    rng, items = random.Random(seed), titles()
    made = []
    for i in range(count):
        a = rng.choice(items)
        b = rng.choice([t for t in items if (t[0] == a[0]) == (i % 2 == 0) and t != a])
        made.append((a[1], b[1], a[0] == b[0]))
    return made


@pytest.fixture(scope="module")
def nli_tsv(tmp_path_factory) -> Path:
    """GLUE RTE's layout: train.tsv / dev.tsv / test.tsv with index, sentence1, sentence2, label."""
    root = tmp_path_factory.mktemp("rte-like")
    for split, count, seed in (("train", 48, 1), ("dev", 12, 2), ("test", 20, 3)):
        lines = ["index\tsentence1\tsentence2\tlabel"]
        lines += [f"{i}\t{a}\t{b}\t{'entailment' if same else 'not_entailment'}"
                  for i, (a, b, same) in enumerate(pairs(count, seed))]
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def sts_saved(tmp_path_factory) -> Path:
    """An STS set in Hugging Face datasets' own format (save_to_disk), similarity 0-5."""
    import datasets

    root = tmp_path_factory.mktemp("sts-datasets") / "sts"
    splits = {}
    for split, count, seed in (("train", 48, 4), ("validation", 12, 5), ("test", 20, 6)):
        rows = pairs(count, seed)
        splits[split] = datasets.Dataset.from_dict({
            "sentence1": [a for a, _, _ in rows], "sentence2": [b for _, b, _ in rows],
            "label": [(4.0 if same else 1.0) + random.Random(seed * 100 + i).uniform(-1, 1)
                      for i, (_, _, same) in enumerate(rows)]})
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


def run(cli, tiny_bert: Path, results: Path, method: str, task: str, *sets: str):
    args = ["run", "--method", method, "--task", task, "--backbone", str(tiny_bert), "--results", str(results),
            "--set", "max_length=64", "--set", "epochs=2", "--set", "batch_size=8", "--set", "inference_repeats=0",
            "--quiet"]
    for pair in sets:
        args += ["--set", pair]
    done = cli(*args)
    assert done.code == 0, done.stderr
    (path, record), = [(p, r) for p, r in records.iter_records(results) if r["method"]["name"] == method]
    return record, json.loads((path.parent / records.PREDICTIONS_FILE).read_text())


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_nli_from_glue_style_tsv(cli, tiny_bert, nli_tsv, tmp_path, method):
    record, predictions = run(cli, tiny_bert, tmp_path, method, "sentence-pair", f"data_dir={nli_tsv}")
    assert record["status"] == "success"
    assert record["data"]["sizes"] == {"train": 48, "dev": 12, "test": 20}
    test = predictions["test"]
    assert len(test["predictions"]) == 20 and set(test["references"]) <= {0, 1}
    accuracy = sum(p == r for p, r in zip(test["predictions"], test["references"])) / 20
    assert record["scores"]["test"]["accuracy"] == pytest.approx(accuracy)
    assert record["params"]["adapter"] > 0 and record["params"]["backbone_trainable"] == 0


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_sts_from_a_saved_datasets_folder(cli, tiny_bert, sts_saved, tmp_path, method):
    from scipy.stats import pearsonr, spearmanr

    record, predictions = run(cli, tiny_bert, tmp_path, method, "sts", f"dataset={sts_saved}")
    test = predictions["test"]
    assert len(test["predictions"]) == 20 and all(isinstance(p, float) for p in test["predictions"])
    scores = record["scores"]["test"]
    assert scores["pearson"] == pytest.approx(pearsonr(test["predictions"], test["references"]).statistic)
    assert scores["spearman"] == pytest.approx(spearmanr(test["predictions"], test["references"]).statistic)
    assert record["task"]["main_score"] == "pearson"


def test_jglue_style_json_lines_and_a_carved_dev(cli, tiny_bert, tmp_path):
    """JGLUE's names (train-v1.3.json, valid-v1.3.json): here scored on valid, dev carved from train."""
    root = tmp_path / "jnli"
    root.mkdir()
    for split, count, seed in (("train", 40, 7), ("valid", 10, 8)):
        lines = [json.dumps({"sentence_pair_id": str(i), "sentence1": a, "sentence2": b,
                             "label": "entailment" if same else "neutral"}, ensure_ascii=False)
                 for i, (a, b, same) in enumerate(pairs(count, seed))]
        (root / f"{split}-v1.3.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record, _ = run(cli, tiny_bert, tmp_path / "results", "lora", "sentence-pair", f"data_dir={root}",
                    "test_split=valid", "dev_split=")
    assert record["data"]["sizes"] == {"train": 36, "dev": 4, "test": 10}
    assert record["data"]["dev"].startswith("carved from train")


def test_bad_pair_data_is_one_line(cli, tiny_bert, nli_tsv, tmp_path):
    def error(*sets: str) -> str:
        args = ["run", "--method", "lora", "--task", "sentence-pair", "--backbone", str(tiny_bert),
                "--results", str(tmp_path / "r"), "--quiet"]
        for pair in sets:
            args += ["--set", pair]
        done = cli(*args)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.code == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        return lines[0]

    assert "this task needs its data" in error()
    assert "no column 'premise'" in error(f"data_dir={nli_tsv}", "text_a=premise")
    hidden = tmp_path / "glue-test"
    hidden.mkdir()
    for split in ("train", "test"):
        label = "entailment" if split == "train" else "-1"
        rows = [f"{i}\t{a}\t{b}\t{'not_entailment' if i % 2 else label}" for i, (a, b, _) in enumerate(pairs(6, 9))]
        (hidden / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n",
                                             encoding="utf-8")
    assert "GLUE hides its test labels" in error(f"data_dir={hidden}", "dev_split=")
    assert "cannot load dataset" in error(f"dataset={tmp_path / 'nowhere'}")


@pytest.fixture(scope="module")
def choice_jsonl(tmp_path_factory) -> Path:
    """JCommonsenseQA's layout (JSON lines: question, choice0..choiceN, label), 3 choices here:
    the right answer is a title of the question's category."""
    root = tmp_path_factory.mktemp("jcqa-like")
    items = titles()
    by_category: dict[str, list[str]] = {}
    for category, title in items:
        by_category.setdefault(category, []).append(title)
    for split, count, seed in (("train", 36, 10), ("valid", 12, 11), ("test", 15, 12)):
        rng, lines = random.Random(seed), []
        for i in range(count):
            category = rng.choice(sorted(by_category))
            question = rng.choice(by_category[category])
            right = rng.choice([t for t in by_category[category] if t != question])
            wrong = [rng.choice(by_category[c]) for c in sorted(by_category) if c != category]
            choices = [right, *wrong]
            rng.shuffle(choices)
            lines.append(json.dumps({"q_id": i, "question": question, **{f"choice{j}": c for j, c in enumerate(choices)},
                                     "label": choices.index(right)}, ensure_ascii=False))
        (root / f"{split}-v1.1.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("method", ["lora", "full"])
def test_multiple_choice_scores_every_choice(cli, tiny_bert, choice_jsonl, tmp_path, method):
    record, predictions = run(cli, tiny_bert, tmp_path, method, "multiple-choice", f"data_dir={choice_jsonl}",
                              "choices=choice0,choice1,choice2", "dev_split=valid")
    assert record["data"]["sizes"] == {"train": 36, "dev": 12, "test": 15}
    test = predictions["test"]
    assert set(test["predictions"]) <= {0, 1, 2} and len(test["references"]) == 15
    assert record["scores"]["test"]["accuracy"] == pytest.approx(
        sum(p == r for p, r in zip(test["predictions"], test["references"])) / 15)
    assert record["backbone"]["info"]["architecture"] == "AutoModelForMultipleChoice"
    assert 0 <= record["data"]["unk_token_rate"]["train"] < 0.2
    if method == "lora":
        assert record["params"]["head"] > 0 and record["params"]["backbone_trainable"] == 0


def test_multiple_choice_labels_are_checked(cli, tiny_bert, choice_jsonl, tmp_path):
    done = cli("run", "--method", "lora", "--task", "multiple-choice", "--backbone", str(tiny_bert), "--results",
               str(tmp_path), "--set", f"data_dir={choice_jsonl}", "--set", "choices=choice0,choice1",
               "--set", "dev_split=valid", "--quiet")
    assert done.code == 1 and "is not a choice index 0-1" in done.stderr
