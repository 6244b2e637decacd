"""Bytes by part over one training step: what memory predictions trace on fake tensors and what a run
with ``--set memory_trace=true`` traces on its own real step, with the same code.

Every storage an operation creates is counted from its creation until the last tensor viewing it is
freed (a weak reference to the storage), under the part the step was in when it was made: the
model's parameters and buffers are weights; a parameter's gradient becomes a gradient once autograd
accumulates it; what the optimizer's step makes is optimizer state; everything else (activations kept
for backward, temporaries, logits) is activations. The peak is the largest sum seen after any
operation, with its split. On CUDA each storage is rounded up to the caching allocator's 512-byte
blocks, as torch's ``max_memory_allocated`` counts it.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from ..records.record import StepMemory

PARTS = ("weights", "gradients", "optimizer", "activations")
CUDA_BLOCK = 512  # bytes: the caching allocator's smallest block


class StepAccounting(TorchDispatchMode):
    """Live bytes by part while it is entered (see the module's docstring)."""

    def __init__(self, block: int = 1) -> None:
        super().__init__()
        self.block = block
        self.phase = "activations"
        self.parts: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storage -> [part, bytes]
        self.live = dict.fromkeys(PARTS, 0)
        self.peak = StepMemory(0, 0, 0, 0, 0)

    def count(self, tensor: Any, part: str) -> None:
        """Count the tensor's storage under ``part`` (a storage already counted moves to ``part``)."""
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        entry = self.parts.get(storage)
        if entry is not None:
            self.live[entry[0]] -= entry[1]
            entry[0] = part
            self.live[part] += entry[1]
            return
        nbytes = -(-storage.nbytes() // self.block) * self.block
        entry = [part, nbytes]
        self.parts[storage] = entry
        self.live[part] += nbytes
        weakref.finalize(storage, self._freed, entry)
        self._update_peak()

    def _freed(self, entry: list) -> None:
        self.live[entry[0]] -= entry[1]

    def _update_peak(self) -> None:
        total = sum(self.live.values())
        if total > self.peak.peak_bytes:
            self.peak = StepMemory(total, **self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.untyped_storage() not in self.parts:
                self.count(leaf, self.phase)
        return out


@contextlib.contextmanager
def accounted(model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> Iterator[StepAccounting]:
    """Trace what happens inside the block: the model's weights, the optimizer's state and any gradients
    already there counted first, gradients and optimizer steps followed by hooks."""
    accounting = StepAccounting(CUDA_BLOCK if device.type == "cuda" else 1)
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
    for tensor in (*model.parameters(), *model.buffers()):
        accounting.count(tensor, "weights")
    for param in model.parameters():
        accounting.count(param.grad, "gradients")
    for state in inner.state.values():
        for value in state.values():
            accounting.count(value, "optimizer")
    hooks = [param.register_post_accumulate_grad_hook(lambda p: accounting.count(p.grad, "gradients"))
             for param in model.parameters() if param.requires_grad]
    hooks.append(inner.register_step_pre_hook(_phase(accounting, "optimizer")))
    hooks.append(inner.register_step_post_hook(_phase(accounting, "activations")))
    try:
        with accounting:
            yield accounting
    finally:
        for hook in hooks:
            hook.remove()


def _phase(accounting: StepAccounting, phase: str) -> Callable[..., None]:
    def set_phase(*_: Any) -> None:
        accounting.phase = phase
    return set_phase


@contextlib.contextmanager
def inference_accounted(model: torch.nn.Module, device: torch.device) -> Iterator[StepAccounting]:
    """Trace an evaluation forward pass: weights, then whatever the pass makes."""
    accounting = StepAccounting(CUDA_BLOCK if device.type == "cuda" else 1)
    for tensor in (*model.parameters(), *model.buffers()):
        accounting.count(tensor, "weights")
    with accounting:
        yield accounting
