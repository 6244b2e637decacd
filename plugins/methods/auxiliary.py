"""The contract of an auxiliary task in multi-task fine-tuning (plugins/methods/multitask.py): per-token
targets built from the training documents, a head on the shared encoder, and a loss."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from peftbench.sdk import Example, LoadedBackbone, Task

if TYPE_CHECKING:  # annotations only: listing the multi-task methods does not import torch
    import torch
    from torch import nn


class Auxiliary(ABC):
    """An auxiliary task: per-token targets for the training documents, a head, a loss."""

    name: str
    fields: tuple[str, ...]  # per-token fields `annotate` adds to training examples
    pad_values: tuple[float, ...]
    needs_hidden_states = False

    def __init__(self, config: Any, backbone: Any) -> None:
        self.config, self.backbone = config, backbone

    def bind(self, task: Task, train: list[Example], task_config: Any) -> None:
        """Called when the data is loaded: targets are built from the training split only."""
        self.task, self.train, self.task_config = task, train, task_config

    @abstractmethod
    def cache_key(self) -> dict[str, Any]:
        """Settings that change the targets."""

    @abstractmethod
    def annotate(self, encoded: list[dict], tokenizer: Any) -> None:
        """Add ``fields`` to each encoded training example, aligned with its input_ids."""

    def collate(self, batch: dict[str, torch.Tensor], tokenizer: Any) -> None:
        """Turn padded fields into what `loss` reads (e.g. draw the masks)."""

    @abstractmethod
    def head(self, main: nn.Module, loaded: LoadedBackbone) -> nn.Module | None:
        """The auxiliary head (None when it cannot be built without data, i.e. in a dry-run)."""

    @abstractmethod
    def loss(self, head: nn.Module, outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The auxiliary loss for a batch (``outputs``: the main model's, with hidden states if asked)."""
