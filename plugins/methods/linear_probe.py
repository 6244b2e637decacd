"""Linear probing: the backbone is frozen and only the task head trains.

The floor every other method must beat to show that it adapted the backbone at all; it adds no
parameters of its own (0 adapter parameters), and the artefact is the head alone, as safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftbench.sdk import ConfigError, LoadedBackbone, Method, Stage, hookimpl

from .bias_terms import in_head, save_tensors, trained_tensors
from .learning_rates import FAMILIES

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


@dataclass(frozen=True)
class LinearProbeConfig:
    lr: float = FAMILIES["head"].lr  # source: plugins/methods/learning_rates.py

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class LinearProbe(Method):
    lr_range = (FAMILIES["head"].low, FAMILIES["head"].high)
    name = "linear-probe"
    description = "linear probing: the backbone is frozen, only the task head trains"
    Config = LinearProbeConfig
    libraries = ("safetensors",)
    packed_batches = True

    def prepare(self, loaded: LoadedBackbone, config: LinearProbeConfig, stage: Stage,
                previous: torch.nn.Module | None = None) -> torch.nn.Module:
        heads = frozenset(loaded.head_modules)
        if not heads:
            raise ConfigError("linear-probe: this stage's model has no task head to train",
                              "use a method that adapts the backbone (lora, full, ...)")
        for name, param in loaded.model.named_parameters():
            param.requires_grad_(in_head(name, heads))
        return loaded.model

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return trained_tensors(model)

    def save(self, model: torch.nn.Module, directory: str) -> None:
        save_tensors(self.artifact_tensors(model), directory, "head.safetensors")


@hookimpl
def register_methods(register) -> None:
    register(LinearProbe())
