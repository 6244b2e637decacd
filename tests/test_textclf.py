"""Generic document classification: the layouts, the carved dev split, micro/macro-F1, bad input."""

from __future__ import annotations

import json

import pytest

from peftbench.errors import DataError
from peftbench_plugins.tasks.textclf import TASKS, TextClassificationConfig, carve_dev, read_layout

from conftest import corpus_or_skip

GENERIC = next(t for t in TASKS if t.name == "text-classification")


def _load(path, **settings):
    read_layout.cache_clear()
    return GENERIC.load(TextClassificationConfig(data_dir=str(path), **settings))


def test_tsv_layout_carves_a_stratified_seeded_dev_split(sample_tsv):
    splits = _load(sample_tsv)
    assert splits.info["layout"] == "label-text-files"
    assert splits.info["labels"] == ["it-life-hack", "movie-enter", "sports-watch"]
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (54, 6, 30)
    assert sorted(ex["label"] for ex in splits.dev) == [0, 0, 1, 1, 2, 2]  # 10% of 20 per class
    assert not {ex["id"] for ex in splits.dev} & {ex["id"] for ex in splits.train}
    assert [ex["id"] for ex in _load(sample_tsv).dev] == [ex["id"] for ex in splits.dev]
    assert [ex["id"] for ex in _load(sample_tsv, split_seed=7).dev] != [ex["id"] for ex in splits.dev]


def test_csv_jsonl_parallel_lines_and_class_folders(tmp_path):
    docs = [("pos", "good film"), ("neg", "bad film"), ("pos", "great\x0cplot"), ("neg", "dull")]
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    for split in ("train", "test"):
        (csv_dir / f"{split}.csv").write_text("label,text\n" + "".join(f'{l},"{t}"\n' for l, t in docs))
    jsonl_dir = tmp_path / "jsonl"
    jsonl_dir.mkdir()
    for split in ("train", "dev", "test"):
        (jsonl_dir / f"{split}.jsonl").write_text("".join(json.dumps({"label": l, "text": t}) + "\n" for l, t in docs))
    lines_dir = tmp_path / "lines"
    lines_dir.mkdir()
    for split in ("train", "test"):
        # A form feed inside a document must not split it (str.splitlines would).
        (lines_dir / f"text_{split}.txt").write_text("\n".join(t for _, t in docs) + "\n")
        (lines_dir / f"label_{split}.txt").write_text("\n".join(l for l, _ in docs) + "\n")
    folders = tmp_path / "folders"
    for split in ("training", "test"):
        for number, (label, text) in enumerate(docs):
            (folders / split / label).mkdir(parents=True, exist_ok=True)
            (folders / split / label / f"{number:04d}").write_bytes(text.encode("latin-1") + b" caf\xe9")
    assert _load(csv_dir).info["layout"] == "label-text-files"
    assert _load(jsonl_dir).info["dev"] == "given" and len(_load(jsonl_dir).dev) == 4
    lines = _load(lines_dir)
    assert lines.info["layout"] == "text-and-label-lines" and len(lines.train) + len(lines.dev) == 4
    assert "great\x0cplot" in [ex["text"] for ex in lines.train + lines.dev]
    folder_splits = _load(folders)
    assert folder_splits.info["layout"] == "class-folders"
    assert folder_splits.test[0]["text"].endswith("café")  # Latin-1 files (20 Newsgroups) are read


def test_20_newsgroups_by_date_folders(tmp_path):
    for split, count in (("20news-bydate-train", 4), ("20news-bydate-test", 2)):
        for group in ("rec.autos", "sci.space"):
            (tmp_path / split / group).mkdir(parents=True)
            for number in range(count):
                (tmp_path / split / group / f"{5000 + number}").write_bytes(b"From: a@b\nSubject: x\n\nbody \xe9")
    splits = _load(tmp_path)
    assert splits.info["layout"] == "class-folders" and splits.info["labels"] == ["rec.autos", "sci.space"]
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (6, 2, 4)


def test_bad_input_is_one_clear_error(tmp_path):
    (tmp_path / "train.tsv").write_text("a\tone\na\ttwo\nb\tthree\n")
    (tmp_path / "test.tsv").write_text("a\tone\nc\tnever trained\n")
    with pytest.raises(DataError, match=r"class 'c' \(1 test documents\) has no training documents"):
        _load(tmp_path)
    (tmp_path / "test.tsv").write_text("a\tone\nno tab here\n")
    with pytest.raises(DataError, match=r"test.tsv:2 has no TAB"):
        _load(tmp_path)
    (tmp_path / "train.tsv").unlink()
    with pytest.raises(DataError, match="no training file"):
        _load(tmp_path)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "train.csv").write_text("label,text\na,one\nb\n")
    (csv_dir / "test.csv").write_text("label,text\na,one\n")
    with pytest.raises(DataError, match=r"train.csv:3 has fewer cells than the header"):
        _load(csv_dir)
    with pytest.raises(DataError, match="no training file"):
        _load(tmp_path)
    with pytest.raises(DataError, match="needs --set data_dir"):
        GENERIC.load(TextClassificationConfig())


def test_carve_dev_keeps_singletons_in_train():
    rows = [(str(i), "big", "x") for i in range(20)] + [("s", "single", "y")]
    train, dev = carve_dev(rows, 0.1, 42)
    assert [r[1] for r in dev] == ["big", "big"]
    assert ("s", "single", "y") in train


def test_scores_are_micro_and_macro_f1(sample_tsv):
    config = TextClassificationConfig(data_dir=str(sample_tsv))
    scores = GENERIC.score([0, 0, 1, 2], [0, 1, 1, 2], config)
    assert scores["micro_f1"] == pytest.approx(0.75)
    assert scores["macro_f1"] == pytest.approx((1 / 1.5 * 1 + (2 * 1 * 0.5 / 1.5) + 1) / 3, rel=1e-6)


def test_textgcn_corpora_load_with_their_published_sizes():
    root = corpus_or_skip("textgcn")
    read_layout.cache_clear()
    tasks = {t.name: t for t in TASKS}
    r8 = tasks["r8"].load(TextClassificationConfig(data_dir=str(root)))
    assert (len(r8.train) + len(r8.dev), len(r8.test), len(r8.info["labels"])) == (5485, 2189, 8)
    mr = tasks["mr"].load(TextClassificationConfig(data_dir=str(root)))
    assert (len(mr.train) + len(mr.dev), len(mr.test)) == (7108, 3554)
    ohsumed = tasks["ohsumed"].load(TextClassificationConfig(data_dir=str(root)))
    assert (len(ohsumed.train) + len(ohsumed.dev), len(ohsumed.test), len(ohsumed.info["labels"])) == (3357, 4043, 23)
    with pytest.raises(DataError, match="R52 train.txt"):
        tasks["r52"].load(TextClassificationConfig(data_dir=str(root)))
