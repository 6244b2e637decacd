"""What a model and its artefact weigh: parameters by role (counted once when tied), tensor and folder bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch


def _logical_numel(param: torch.nn.Parameter) -> int:
    """The weights a parameter holds: a 4-bit quantized weight (bitsandbytes' Params4bit) packs two
    per byte, so its tensor has half as many elements as the layer has weights (peft counts it so)."""
    if type(param).__name__ == "Params4bit" and param.element_size() == 1:
        return param.numel() * 2
    return param.numel()


def count_parameters(
    model: torch.nn.Module,
    is_adapter: Callable[[str], bool],
    head_modules: Iterable[str],
    is_auxiliary: Callable[[str], bool] = lambda name: False,
) -> dict[str, int]:
    """Trainable parameters split into adapter / head / backbone / auxiliary, and the model total.

    A parameter is *auxiliary* when the method trains but does not deploy it
    (auxiliary-task heads), *head* when a component of its dotted name is one
    of the task-head modules the backbone declared (e.g. ``classifier``),
    *adapter* when the method says it added it, else *backbone*. Shared (tied)
    tensors are counted once. ``trainable`` is what deploys (auxiliary excluded).
    """
    heads = set(head_modules)
    split = {"adapter": 0, "head": 0, "backbone": 0}
    auxiliary = 0
    total = 0
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += _logical_numel(param)
        if not param.requires_grad:
            continue
        if is_auxiliary(name):
            auxiliary += param.numel()
        elif is_adapter(name):
            split["adapter"] += param.numel()
        elif heads.intersection(name.split(".")):
            split["head"] += param.numel()
        else:
            split["backbone"] += param.numel()
    return {
        "adapter": split["adapter"],
        "head": split["head"],
        "backbone_trainable": split["backbone"],
        "trainable": sum(split.values()),
        "auxiliary": auxiliary,
        "total": total,
    }


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def directory_bytes(path: str | os.PathLike) -> int:
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
