"""L3Masking's masking policy (study S5, B): mask what the vanilla MLM finds hard.

1. Score: for every token its pseudo-likelihood P under the pre-trained MLM,
   PLL-word-l2r (Kauf & Ivanova, 2023): for a word of tokens t_1..t_k, t_i is
   scored with t_i..t_k masked and t_1..t_{i-1} visible, i.e. the whole word
   is masked and its tokens are scored left to right, each unmasked once
   scored. One forward pass per token, batched.
2. Rescale: u_i = 1 - P_i over a document's scorable (non-special) tokens,
   and the masking probability is f(u)_i = min(1, lambda * u_i) with the
   single lambda >= 0 that makes the document's mean exactly the target rate
   rho. Every probability is in [0, 1]; rare/domain tokens (large u) are
   masked more. When fewer than rho * n tokens have u > 0 (the model is sure
   of almost everything) those get 1 and the rest of the budget is spread
   evenly over the others; when u is 0 everywhere, f is uniform rho.
3. Train: each chosen token (a Bernoulli draw with its probability) is
   replaced as in BERT: 80% [MASK], 10% a random token, 10% kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


def word_spans(documents: Sequence[Sequence[int]], tokenizer: Any) -> list[list[tuple[int, int]]]:
    """Per document, (start, end) of each word over the non-special tokens, from the tokenizer's
    sub-word marks: WordPiece continues with "##", SentencePiece starts with "▁", byte-level BPE
    with "Ġ" (the vocabulary tells which); without marks every token is a word."""
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}  # [UNK] stands for text
    vocab = tokenizer.get_vocab()
    mark = next((m for m in ("##", "▁", "Ġ") if any(t.startswith(m) for t in vocab)), None)
    if mark == "##":
        starts_word = lambda tok: not tok.startswith("##")  # noqa: E731
    elif mark:
        starts_word = lambda tok: tok.startswith(mark)  # noqa: E731
    else:
        starts_word = lambda tok: True  # noqa: E731
    result = []
    for ids in documents:
        spans: list[tuple[int, int]] = []
        previous_special = True
        for position, (token_id, token) in enumerate(zip(ids, tokenizer.convert_ids_to_tokens(list(ids)))):
            if token_id in special:
                previous_special = True
                continue
            if previous_special or starts_word(token):
                spans.append((position, position + 1))
            else:
                spans[-1] = (spans[-1][0], position + 1)
            previous_special = False
        result.append(spans)
    return result


def pll_word_l2r(model: torch.nn.Module, documents: Sequence[Sequence[int]], spans: Sequence[Sequence[tuple[int, int]]],
                 mask_id: int, pad_id: int, batch_size: int = 16,
                 advance: Callable[[int], None] = lambda n: None) -> list[list[float | None]]:
    """P_MLM(token | context) per token (None for tokens outside every word, e.g. special tokens)."""
    import torch

    jobs = [(d, i, end) for d, doc_spans in enumerate(spans) for start, end in doc_spans for i in range(start, end)]
    jobs.sort(key=lambda job: len(documents[job[0]]))  # similar lengths share a batch: less padding
    probabilities: list[list[float | None]] = [[None] * len(doc) for doc in documents]
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for first in range(0, len(jobs), batch_size):
            chunk = jobs[first:first + batch_size]
            width = max(len(documents[d]) for d, _, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (d, i, end) in enumerate(chunk):
                doc = documents[d]
                ids[row, :len(doc)] = torch.tensor(doc)
                attention[row, :len(doc)] = 1
                ids[row, i:end] = mask_id  # this token and the rest of its word stay hidden
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
            rows = torch.arange(len(chunk), device=device)
            positions = torch.tensor([i for _, i, _ in chunk], device=device)
            targets = torch.tensor([documents[d][i] for d, i, _ in chunk], device=device)
            log_probs = torch.log_softmax(logits[rows, positions].float(), dim=-1)[rows, targets]
            for (d, i, _), value in zip(chunk, log_probs.exp().tolist()):
                probabilities[d][i] = value
            advance(len(chunk))
    return probabilities


def mask_probabilities(likelihoods: Sequence[float | None], rate: float) -> list[float]:
    """f(1 - P) rescaled to mean ``rate`` over the scored tokens, each in [0, 1]; 0 where P is None."""
    import numpy as np

    if not 0 < rate < 1:
        raise ValueError(f"the target mask rate must be in (0, 1), got {rate}")
    scored = [i for i, p in enumerate(likelihoods) if p is not None]
    result = [0.0] * len(likelihoods)
    n = len(scored)
    if n == 0:
        return result
    u = np.clip(1.0 - np.asarray([likelihoods[i] for i in scored], dtype=np.float64), 0.0, 1.0)
    budget = rate * n
    order = np.argsort(-u, kind="stable")
    ranked = u[order]
    positive = int((ranked > 0).sum())
    probs = np.zeros(n)
    if positive <= budget:
        # Too few uncertain tokens to reach the rate by scaling: they all get 1, the rest share what is left.
        probs[order[:positive]] = 1.0
        if positive < n:
            probs[order[positive:]] = (budget - positive) / (n - positive)
    else:
        suffix = np.cumsum(ranked[::-1])[::-1]  # suffix[k] = sum of ranked[k:]
        for clipped in range(n):  # the `clipped` largest are capped at 1
            scale = (budget - clipped) / suffix[clipped]
            if scale * ranked[clipped] <= 1.0 + 1e-12:
                probs[order[:clipped]] = 1.0
                probs[order[clipped:]] = np.minimum(1.0, scale * ranked[clipped:])
                break
    for index, value in zip(scored, probs.tolist()):
        result[index] = float(min(1.0, max(0.0, value)))
    return result


def bert_masking(input_ids: torch.Tensor, probabilities: torch.Tensor, mask_id: int, vocab_size: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose tokens with their own probabilities, then 80% [MASK] / 10% random / 10% kept.
    Returns (masked input ids, labels with -100 where nothing is predicted)."""
    import torch

    chosen = torch.bernoulli(probabilities, generator=generator).bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked = input_ids.clone()
    replace = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & chosen
    masked[replace] = mask_id
    randomize = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool() & chosen & ~replace
    masked[randomize] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomize]
    return masked, labels

