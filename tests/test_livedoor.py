from __future__ import annotations

import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from peftbench.errors import DataError
from peftbench_plugins.tasks.livedoor_corpus import (CATEGORIES, LivedoorConfig, LivedoorNews, clean, parse_article,
                                              stratified_split)

FIXTURES = Path(__file__).parent / "fixtures"


def load(**kwargs):
    return LivedoorNews().load(LivedoorConfig(**kwargs))


def test_article_parsing_follows_the_published_layout():
    raw = "http://x/1\n2012-09-01T10:00:00+0900\nタイトル\u3000です\n本文\tの\n二行目\n"
    title, text = parse_article(raw, "a.txt", "body")
    assert title == "タイトルです"
    assert text == "本文の二行目"  # S2: newlines, tabs and U+3000 removed, title excluded
    _, with_title = parse_article(raw, "a.txt", "title+body")
    assert with_title == "タイトルです本文の二行目"


def test_file_with_fewer_than_three_lines_is_a_clear_error():
    raw = (FIXTURES / "livedoor-bad" / "two-lines.txt").read_text(encoding="utf-8")
    with pytest.raises(DataError, match="two-lines.txt has 2 line"):
        parse_article(raw, "two-lines.txt", "body")


def test_sample_splits_40_10_50_per_category(sample_dir):
    splits = load(data_dir=str(sample_dir))
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (9 * 16, 9 * 4, 9 * 20)
    for part, share in ((splits.train, 16), (splits.dev, 4), (splits.test, 20)):
        assert Counter(ex["label"] for ex in part) == {i: share for i in range(9)}
    ids = [ex["id"] for _, part in splits.items() for ex in part]
    assert len(ids) == len(set(ids)) == 360  # disjoint, nothing lost, LICENSE.txt skipped


def test_split_is_deterministic_and_seeded(sample_dir):
    a, b = load(data_dir=str(sample_dir)), load(data_dir=str(sample_dir))
    assert [e["id"] for e in a.test] == [e["id"] for e in b.test]
    c = load(data_dir=str(sample_dir), split_seed=7)
    assert [e["id"] for e in a.test] != [e["id"] for e in c.test]


def test_per_category_subset(sample_dir):
    splits = load(data_dir=str(sample_dir), per_category=10)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (36, 9, 45)


def test_fractions_that_leave_a_split_empty_are_one_clear_error(sample_dir):
    with pytest.raises(DataError, match="10 articles cannot be split 0.02 / 0.98"):
        load(data_dir=str(sample_dir), per_category=10, train_fraction=0.01, dev_fraction=0.01)


@pytest.mark.parametrize("seed", [0, 42, 7])
def test_split_equals_scikit_learns_train_test_split(seed):
    """S2 split with sklearn's train_test_split; peftbench writes it out (no import per run) and
    must give the same articles in the same order, at S2's fractions and at odd sizes."""
    from sklearn.model_selection import train_test_split as sklearn_split

    for n, train, dev in ((10, 0.4, 0.1), (511, 0.4, 0.1), (870, 0.4, 0.1), (37, 0.7, 0.15), (13, 0.8, 0.1)):
        items = [f"article-{i}" for i in range(n)]
        rest, test = sklearn_split(items, test_size=1 - train - dev, random_state=seed)
        train_part, dev_part = sklearn_split(rest, test_size=dev / (train + dev), random_state=seed)
        assert stratified_split(items, train, dev, seed) == (train_part, dev_part, test), (n, train, dev)


def test_official_archive_gives_the_same_examples(sample_dir, tmp_path):
    archive = tmp_path / "ldcc-20140209.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(sample_dir, arcname="text")
    from_folder = load(data_dir=str(sample_dir))
    for path in (archive, tmp_path):  # the file itself, or a folder holding it
        from_archive = load(data_dir=str(path))
        assert [(e["id"], e["text"]) for e in from_archive.test] == [(e["id"], e["text"]) for e in from_folder.test]


def test_folder_without_category_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match="holds no livedoor articles"):
        load(data_dir=str(tmp_path))


def test_missing_category_is_named(sample_dir, tmp_path):
    shutil.copytree(sample_dir, tmp_path / "ld")
    shutil.rmtree(tmp_path / "ld" / "smax")
    with pytest.raises(DataError, match="smax"):
        load(data_dir=str(tmp_path / "ld"))


def test_bad_article_inside_corpus_names_the_file(sample_dir, tmp_path):
    shutil.copytree(sample_dir, tmp_path / "ld")
    shutil.copy(FIXTURES / "livedoor-bad" / "two-lines.txt", tmp_path / "ld" / "peachy" / "peachy-0.txt")
    with pytest.raises(DataError, match="peachy-0.txt"):
        load(data_dir=str(tmp_path / "ld"))


def test_data_location_order(sample_dir, tmp_path, monkeypatch):
    with pytest.raises(DataError) as info:
        load()
    message = str(info.value)
    assert "data_dir" in message and "PEFTBENCH_DATA" in message and "cache" in message.lower()
    assert "rondhuit" in message  # where to download
    monkeypatch.setenv("PEFTBENCH_DATA", str(tmp_path))
    shutil.copytree(sample_dir, tmp_path / "livedoor")
    assert len(load().test) == 180
    with pytest.raises(DataError, match="does not exist"):
        load(data_dir=str(tmp_path / "nope"))


def test_scores_match_sklearn_definitions():
    task = LivedoorNews()
    scores = task.score([0, 1, 1, 2], [0, 1, 2, 2], LivedoorConfig())
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["micro_f1"] == pytest.approx(0.75)
    # per class F1: c0 1.0, c1 2/3, c2 2/3, other six classes 0 -> macro over all 9 labels
    assert scores["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / len(CATEGORIES))


def test_clean_removes_only_layout_characters():
    assert clean("a\nb\tc\u3000d e") == "abcd e"
