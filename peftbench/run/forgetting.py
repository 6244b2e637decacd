"""Forgetting: how much worse a causal LM models general text after tuning than before.

``--set forgetting_data=FILE`` (plain text, one document per non-empty line; or JSONL with a
``text`` field) is scored twice as the mean per-token cross-entropy with shifted targets (position
t predicts token t + 1, padding excluded): on the base model as loaded, before the method attaches
anything, and on the tuned model after training. ``forgetting = after - before`` (nats per token;
positive: the tuned model lost some of what it knew). Two mistakes peers made are avoided by
construction: targets are shifted, and "before" is never taken on a model the method has wrapped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError


def read_texts(path: str, limit: int | None = None) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"forgetting_data {file} is not a file", "pass a plain-text or JSONL file")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if file.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}:{number} is not JSON ({exc.msg})", "one JSON object per line") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{file}:{number} has no string field 'text'", 'write {"text": "..."} per line')
            texts.append(row["text"])
        lines = [text for text in texts if text.strip()]
    if not lines:
        raise DataError(f"forgetting_data {file} holds no text")
    return lines[:limit]


def require_causal_lm(model: torch.nn.Module) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if type(model).__name__ not in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
        raise ConfigError(f"forgetting_data needs a causal language model, not a {type(model).__name__}",
                          "measure forgetting on a decoder task (e.g. gsm8k) or drop forgetting_data")


def mean_token_loss(model: torch.nn.Module, tokenizer: Any, texts: list[str], max_length: int, batch_size: int,
                    device: torch.device, autocast=None) -> tuple[float, int]:
    """(mean cross-entropy per predicted token, predicted tokens) over ``texts``."""
    import contextlib

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length)
            width = max(len(ids) for ids in encoded["input_ids"])
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in encoded["input_ids"]], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in encoded["input_ids"]], device=device)
            with autocast() if autocast else contextlib.nullcontext():
                logits = model(input_ids=ids, attention_mask=mask).logits
            logits = logits[:, -width:]  # a prompt tuner's virtual tokens come first: their positions score nothing
            losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:],
                                                       reduction="none")
            kept = mask[:, 1:].bool()
            total += losses[kept].sum().item()
            count += int(kept.sum())
    model.train(was_training)
    if not count:
        raise DataError("forgetting_data has no text of two tokens or more", "add longer texts")
    return total / count, count


def as_kbit_training_has_it(model: torch.nn.Module) -> None:
    """A k-bit base's float parameters in float32, as k-bit training casts them (peft's
    ``prepare_model_for_kbit_training``), so forgetting's "before" runs in the dtype its "after" will:
    otherwise an untrained adapter would show a forgetting that is only the change of dtype."""
    import torch

    for param in model.parameters():
        if param.dtype in (torch.float16, torch.bfloat16) and type(param).__name__ != "Params4bit":
            param.data = param.data.to(torch.float32)


def describe(path: str, texts: list[str]) -> dict[str, Any]:
    """Which data it was (the confound check compares records by it)."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    return {"data": str(path), "fingerprint": digest, "texts": len(texts)}
