"""Token n-gram recognition: BPE-style extraction over sub-word ids and the four labelling schemes."""

from __future__ import annotations

import pytest

from peftbench.errors import DataError
from peftbench_plugins.methods.ngrams import extract, extract_cached, top_per_class

# A hand-made example in the shape of S5's scheme table. Sub-word ids; class A = 0, B = 1.
# X = (10, 11) occurs only in A, Y = (20, 21) only in B, Z = (30, 31) in both.
TRAIN = [[10, 11, 30, 31, 1], [10, 11, 2, 30, 31], [20, 21, 30, 31, 3], [20, 21, 4, 30, 31]]
CLASSES = [0, 0, 1, 1]
DOCUMENT = [10, 11, 5, 30, 31, 20, 21]  # X, an unseen sub-word, Z, Y
EXPECTED = {
    #              X            5    Z                     Y
    "all-phrase": ["B-Phrase", "I-Phrase", "O", "B-Phrase", "I-Phrase", "B-Phrase", "I-Phrase"],
    "disregard": ["B-A", "I-A", "O", "O", "O", "B-B", "I-B"],
    "common-label": ["B-A", "I-A", "O", "B-Common", "I-Common", "B-B", "I-B"],
    "bit-label": ["B-10", "I-10", "O", "B-11", "I-11", "B-01", "I-01"],
}


@pytest.fixture(scope="module")
def table():
    return extract(TRAIN, CLASSES, ["A", "B"], merges=10, min_frequency=2)


def test_extraction_merges_the_frequent_pairs_only(table):
    assert table.merges_made == 3  # after (30,31), (10,11), (20,21) every pair occurs once
    assert set(table.ngrams) == {(10, 11), (20, 21), (30, 31)}
    counts = dict(zip(table.ngrams, table.class_doc_counts))
    assert counts == {(10, 11): [2, 0], (20, 21): [0, 2], (30, 31): [2, 2]}


@pytest.mark.parametrize("scheme", list(EXPECTED))
def test_the_four_labelling_schemes_on_the_example(table, scheme):
    assert table.tag([DOCUMENT], scheme) == [EXPECTED[scheme]]
    assert set(EXPECTED[scheme]) <= set(table.tag_labels(scheme))


def test_class_min_count_decides_where_an_ngram_occurs(table):
    # With 3 documents required per class, nothing is class-specific any more.
    assert table.tag([DOCUMENT], "disregard", class_min_count=3) == [["O"] * 7]
    assert table.tag_labels("bit-label", class_min_count=2) == ("O", "B-01", "I-01", "B-10", "I-10", "B-11", "I-11")


def test_merges_limit_and_merged_ngrams_grow(table):
    one = extract(TRAIN, CLASSES, ["A", "B"], merges=1, min_frequency=2)
    assert one.merges_made == 1 and one.ngrams == [(30, 31)]
    longer = extract([[1, 2, 3]] * 3, [0, 0, 0], ["A"], merges=5, min_frequency=2)
    assert longer.ngrams == [(1, 2, 3)]  # (1,2) then (12,3): the trigram is the unit


def test_nothing_found_says_why():
    with pytest.raises(DataError, match=r"occurs 3\+ times in 2 training documents \(the most frequent occurs 1"):
        extract([[1, 2, 3], [4, 5, 6]], [0, 1], ["A", "B"], merges=10, min_frequency=3)


def test_extraction_is_cached_per_settings():
    first, cached = extract_cached({"task": "t"}, TRAIN, CLASSES, ["A", "B"], 10, 2)
    again, cached_again = extract_cached({"task": "t"}, TRAIN, CLASSES, ["A", "B"], 10, 2)
    other, cached_other = extract_cached({"task": "t"}, TRAIN, CLASSES, ["A", "B"], 1, 2)
    assert (cached, cached_again, cached_other) == (False, True, False)
    assert again.ngrams == first.ngrams and again.tag([DOCUMENT], "bit-label") == [EXPECTED["bit-label"]]
    assert other.ngrams == [(30, 31)]


def test_top_ngrams_per_class(table):
    top = top_per_class(table, 5)
    assert [(ngram, n) for ngram, n, _ in top["A"]] == [((30, 31), 2), ((10, 11), 2)]  # ties: more documents overall first
    assert dict((ngram, classes) for ngram, _, classes in top["B"]) == {(20, 21): (1,), (30, 31): (0, 1)}
    specific = top_per_class(table, 5, order="specific")
    assert [ngram for ngram, _, _ in specific["A"]] == [(10, 11), (30, 31)]  # only-A before shared
