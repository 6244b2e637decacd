"""BIO machinery: Viterbi against brute force, alignment, scores against seqeval."""

from __future__ import annotations

import itertools

import pytest
import torch

from peftbench_plugins.tasks.ner import (IGNORE, PENALTY, bio_constraints, bio_labels, entity_spans,
                                   special_token_frame, viterbi)

pytestmark = pytest.mark.smoke  # also run in .venv-adapters (transformers 4.57)

LABELS = bio_labels(("PER", "LOC"))  # O, B-PER, I-PER, B-LOC, I-LOC


def brute_force(emissions: torch.Tensor, transitions: torch.Tensor, start: torch.Tensor) -> list[int]:
    n, m = emissions.shape
    best, best_path = None, None
    for path in itertools.product(range(m), repeat=n):
        score = start[path[0]] + emissions[0, path[0]]
        score += sum(transitions[path[i - 1], path[i]] + emissions[i, path[i]] for i in range(1, n))
        if best is None or score > best:
            best, best_path = score, list(path)
    return best_path


def is_valid_bio(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


@pytest.mark.parametrize("seed", range(12))
def test_viterbi_equals_brute_force_on_random_scores(seed):
    generator = torch.Generator().manual_seed(seed)
    transitions, start = bio_constraints(LABELS)
    lengths = torch.tensor([4, 1, 3, 5])
    emissions = torch.randn(4, 5, len(LABELS), generator=generator) * 3
    paths = viterbi(emissions, lengths, transitions, start)
    for row, n, path in zip(emissions, lengths.tolist(), paths):
        assert path == brute_force(row[:n], transitions, start)
        assert is_valid_bio([LABELS[i] for i in path])


def test_constraints_forbid_only_broken_bio():
    transitions, start = bio_constraints(LABELS)
    index = {label: i for i, label in enumerate(LABELS)}
    assert transitions[index["B-PER"], index["I-PER"]] == 0
    assert transitions[index["I-PER"], index["I-PER"]] == 0
    assert transitions[index["O"], index["I-PER"]] == PENALTY
    assert transitions[index["B-LOC"], index["I-PER"]] == PENALTY
    assert transitions[index["I-LOC"], index["B-PER"]] == 0
    assert start[index["I-LOC"]] == PENALTY and start[index["B-LOC"]] == 0


def test_viterbi_repairs_what_argmax_breaks():
    # argmax alone would output O I-PER (invalid); Viterbi must choose a valid sequence.
    emissions = torch.log(torch.tensor([[[0.9, 0.05, 0.01, 0.02, 0.02], [0.3, 0.1, 0.5, 0.05, 0.05]]]))
    transitions, start = bio_constraints(LABELS)
    (path,) = viterbi(emissions, torch.tensor([2]), transitions, start)
    assert is_valid_bio([LABELS[i] for i in path])


def test_entity_spans_strict_iob2():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]) == [
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6)]
    assert entity_spans(["I-PER", "O"]) == []  # strict: an I- without B- is no entity


def test_special_token_frame(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    assert special_token_frame(tokenizer) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])


def test_alignment_first_subword_carries_the_label(tiny_bert):
    from transformers import AutoTokenizer

    from peftbench_plugins.tasks.kwdlc import KwdlcConfig, KwdlcNer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    task = KwdlcNer()
    config = KwdlcConfig(types=("PERSON", "LOCATION"))
    labels = task.labels(config)
    example = {"tokens": ["田中太郎", "は", "大阪"], "tags": ["B-PERSON", "O", "B-LOCATION"]}
    (encoded,) = task.encode([example], tokenizer, config)
    pieces = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in example["tokens"]]
    assert len(pieces[0]) > 1  # a multi-piece word, so the rule is exercised
    expected = [IGNORE]
    for piece, tag in zip(pieces, example["tags"]):
        expected += [labels.index(tag)] + [IGNORE] * (len(piece) - 1)
    assert encoded["labels"] == expected + [IGNORE]
    assert encoded["word_tags"] == [labels.index(t) for t in example["tags"]]


def test_truncated_words_count_as_missed_entities(tiny_bert):
    from transformers import AutoTokenizer

    from peftbench_plugins.tasks.kwdlc import KwdlcConfig, KwdlcNer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    task = KwdlcNer()
    config = KwdlcConfig(max_length=8)
    words = ["大阪"] * 10
    tags = ["O"] * 8 + ["B-LOCATION", "I-LOCATION"]
    example = {"tokens": words, "tags": tags}
    (encoded,) = task.encode([example], tokenizer, config)
    assert len(encoded["input_ids"]) <= 8
    report = task.encoding_report([example], [encoded], config)
    assert report == {"sentences_truncated": 1, "entities_lost_to_truncation": 1}
    batch = task.collator(tokenizer, config)([encoded])
    logits = torch.zeros(1, batch["input_ids"].shape[1], len(task.labels(config)))
    predictions, references = task.decode(logits, batch, config)
    assert references == [tags]  # gold keeps the cut-off entity
    assert len(predictions[0]) == 10 and predictions[0][-2:] == ["O", "O"]
    assert task.score(predictions, references, config)["recall"] == 0.0


def test_scores_equal_seqeval():
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    from peftbench_plugins.tasks.kwdlc import KwdlcConfig, KwdlcNer

    refs = [["B-PERSON", "I-PERSON", "O", "B-LOCATION"], ["O", "B-DATE", "O"]]
    preds = [["B-PERSON", "I-PERSON", "O", "O"], ["O", "B-DATE", "B-DATE"]]
    scores = KwdlcNer().score(preds, refs, KwdlcConfig())
    assert scores["f1"] == pytest.approx(f1_score(refs, preds, mode="strict", scheme=IOB2))
    assert scores["precision"] == pytest.approx(precision_score(refs, preds, mode="strict", scheme=IOB2))
    assert scores["recall"] == pytest.approx(recall_score(refs, preds, mode="strict", scheme=IOB2))
    assert scores["f1_PERSON"] == 1.0 and scores["f1_LOCATION"] == 0.0
    assert scores["token_accuracy"] == pytest.approx(5 / 7)
