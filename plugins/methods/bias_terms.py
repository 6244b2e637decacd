"""BitFit (Ben Zaken et al., 2022): only the backbone's bias terms and the task head train.

The bias terms are the method's parameters (counted as 'adapter'); the head's own bias belongs to
the head. Nothing is added to the model, so there is nothing to merge: the artefact is the trained
biases and the head, as safetensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftbench.sdk import ConfigError, LoadedBackbone, Method, Stage

from .learning_rates import FAMILIES

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


@dataclass(frozen=True)
class BitFitConfig:
    lr: float = FAMILIES["bitfit"].lr  # source: plugins/methods/learning_rates.py

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def in_head(name: str, heads: frozenset[str]) -> bool:
    return bool(heads.intersection(name.split(".")))


def trained_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What trains is what a method that only unfreezes parts of the backbone stores."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def save_tensors(tensors: dict[str, torch.Tensor], directory: str, filename: str) -> None:
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, os.path.join(directory, filename))


class BitFit(Method):
    lr_range = (FAMILIES["bitfit"].low, FAMILIES["bitfit"].high)
    name = "bitfit"
    description = "BitFit: only the backbone's bias terms (and the task head) train"
    Config = BitFitConfig
    libraries = ("safetensors",)
    packed_batches = True

    def __init__(self) -> None:
        # The head's modules, from the model last prepared: its bias is head, not BitFit's.
        self._heads: frozenset[str] = frozenset()

    def prepare(self, loaded: LoadedBackbone, config: BitFitConfig, stage: Stage,
                previous: torch.nn.Module | None = None) -> torch.nn.Module:
        self._heads = frozenset(loaded.head_modules)
        biases = 0
        for name, param in loaded.model.named_parameters():
            is_bias = name.endswith(".bias") and not in_head(name, self._heads)
            biases += is_bias
            param.requires_grad_(is_bias or in_head(name, self._heads))
        if not biases:
            raise ConfigError("bitfit: this backbone has no bias terms to train",
                              "use a method that adds parameters (lora, ia3, adapter, ...)")
        return loaded.model

    def is_adapter_parameter(self, name: str) -> bool:
        return name.endswith(".bias") and not in_head(name, self._heads)

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return trained_tensors(model)

    def save(self, model: torch.nn.Module, directory: str) -> None:
        save_tensors(self.artifact_tensors(model), directory, "bitfit.safetensors")
