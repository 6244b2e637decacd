"""L3Masking: PLL-word-l2r against a slow reference, the rescaling f, BERT's 80/10/10 draw."""

from __future__ import annotations

import random

import pytest
import torch

from peftbench_plugins.methods.l3masking import bert_masking, mask_probabilities, pll_word_l2r, word_spans


@pytest.fixture(scope="module")
def tiny_mlm():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=32))
    return model.eval()


def slow_pll(model, document, spans, mask_id):
    """One sequence at a time: mask the token and the rest of its word, read P(token)."""
    result = [None] * len(document)
    for start, end in spans:
        for i in range(start, end):
            masked = list(document)
            masked[i:end] = [mask_id] * (end - i)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([masked])).logits[0, i]
            result[i] = torch.softmax(logits, -1)[document[i]].item()
    return result


def test_pll_word_l2r_equals_the_slow_reference(tiny_mlm):
    rng = random.Random(0)
    documents = [[2] + [rng.randrange(5, 40) for _ in range(n)] + [3] for n in (3, 7, 11)]
    # Words: spans over the non-special tokens, some of several tokens.
    spans = [[(1, 3), (3, 4)], [(1, 2), (2, 5), (5, 8)], [(1, 4), (4, 5), (5, 9), (9, 12)]]
    fast = pll_word_l2r(tiny_mlm, documents, spans, mask_id=4, pad_id=0, batch_size=5)
    for document, doc_spans, got in zip(documents, spans, fast):
        want = slow_pll(tiny_mlm, document, doc_spans, mask_id=4)
        assert [g is None for g in got] == [w is None for w in want]
        assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None], abs=1e-5)
        assert got[0] is None and got[-1] is None  # special tokens are not scored


def test_word_spans_follow_wordpiece_continuations(tmp_path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "##ed", "go", "un", "##known"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(tmp_path)  # reads vocab.txt (transformers 4 and 5)
    ids = tokenizer("playing go unknown xyz played")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    (spans,) = word_spans([ids], tokenizer)
    assert [tokens[a:b] for a, b in spans] == [["play", "##ing"], ["go"], ["un", "##known"], ["[UNK]"],
                                               ["play", "##ed"]]  # [UNK] stands for a word; [CLS]/[SEP] do not


@pytest.mark.parametrize("rate", [0.05, 0.15, 0.5])
def test_mask_probabilities_have_the_target_mean_and_stay_in_bounds(rate):
    rng = random.Random(1)
    for trial in range(200):
        n = rng.randrange(1, 60)
        likelihoods = [rng.random() ** rng.choice((0.2, 1, 5)) for _ in range(n)]
        if trial % 5 == 0:  # a confident model: most tokens certain
            likelihoods = [1.0 if rng.random() < 0.9 else rng.random() for _ in range(n)]
        probabilities = mask_probabilities([None] + likelihoods + [None], rate)
        assert probabilities[0] == probabilities[-1] == 0.0
        inner = probabilities[1:-1]
        assert all(0.0 <= p <= 1.0 for p in inner)
        assert sum(inner) / n == pytest.approx(rate, abs=1e-9)


def test_mask_probabilities_prefer_hard_tokens_and_handle_edges():
    probabilities = mask_probabilities([0.99, 0.5, 0.01, 0.9], 0.25)
    assert probabilities[2] > probabilities[1] > probabilities[3] > probabilities[0]
    assert mask_probabilities([1.0, 1.0, 1.0], 0.15) == pytest.approx([0.15] * 3)  # nothing uncertain: uniform
    # One uncertain token of ten cannot carry a 50% rate alone: it gets 1, the others share the rest.
    assert mask_probabilities([0.0] + [1.0] * 9, 0.5) == pytest.approx([1.0] + [4 / 9] * 9)
    assert mask_probabilities([None, None], 0.15) == [0.0, 0.0]
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\)"):
            mask_probabilities([0.5], bad)


def test_bert_masking_draws_with_the_given_probabilities():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (64, 128), generator=generator)
    probabilities = torch.zeros(ids.shape)
    probabilities[:, 5:69] = 1.0  # exactly these positions are chosen
    masked, labels = bert_masking(ids, probabilities, mask_id=4, vocab_size=100, generator=generator)
    chosen = labels != -100
    assert chosen[:, 5:69].all() and not chosen[:, :5].any() and not chosen[:, 69:].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    share_masked = (masked[chosen] == 4).float().mean().item()
    share_kept = (masked[chosen] == ids[chosen]).float().mean().item()
    assert share_masked == pytest.approx(0.8, abs=0.02)
    assert 0.09 < share_kept < 0.13  # 10% kept + random draws that hit the same token
