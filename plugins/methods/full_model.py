"""Full fine-tuning: every parameter trains; the whole model is the artefact."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

from peftbench.sdk import LoadedBackbone, Method, Stage

from .learning_rates import FAMILIES

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


@dataclass(frozen=True)
class FullConfig:
    lr: float = FAMILIES["full"].lr  # source: plugins/methods/learning_rates.py

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class FullFineTuning(Method):
    lr_range = (FAMILIES["full"].low, FAMILIES["full"].high)
    name = "full"
    description = "full fine-tuning: all weights train and are stored per task"
    Config = FullConfig
    packed_batches = True

    def prepare(self, loaded: LoadedBackbone, config: FullConfig, stage: Stage, previous=None) -> torch.nn.Module:
        for param in loaded.model.parameters():
            param.requires_grad_(True)
        return loaded.model

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        # Tied weights (e.g. MLM decoder = embeddings) are stored once.
        unique: dict[int, tuple[str, torch.Tensor]] = {}
        for name, tensor in model.state_dict(keep_vars=True).items():
            unique.setdefault(id(tensor), (name, tensor))
        return dict(unique.values())

    def save(self, model: torch.nn.Module, directory: str) -> None:
        model.save_pretrained(directory, safe_serialization=True)
