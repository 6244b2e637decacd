"""Linear probing as a stand-alone peftbench plugin: the backbone stays frozen, only the task head
trains. The floor every parameter-efficient method has to beat.

Installing this distribution (`pip install ./examples/peftbench-plugin-linear-probe`) makes
`peftbench run --method linear-probe ...` available, and with it `tapt+linear-probe` and
`mtl-ngram+linear-probe`, with no change to peftbench.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from peftbench.sdk import LoadedBackbone, Method, Stage, hookimpl


@dataclass(frozen=True)
class LinearProbeConfig:
    lr: float = 1e-3  # a freshly initialised head alone takes a larger step than full fine-tuning

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class LinearProbe(Method):
    name = "linear-probe"
    description = "linear probing: the backbone frozen, only the task head trains"
    Config = LinearProbeConfig

    def prepare(self, loaded: LoadedBackbone, config: LinearProbeConfig, stage: Stage,
                previous: torch.nn.Module | None = None) -> torch.nn.Module:
        heads = set(loaded.head_modules)
        for name, param in loaded.model.named_parameters():
            param.requires_grad_(bool(heads.intersection(name.split("."))))
        return loaded.model

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: param for name, param in model.named_parameters() if param.requires_grad}

    def save(self, model: torch.nn.Module, directory: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.artifact_tensors(model).items()}
        save_file(tensors, os.path.join(directory, "head.safetensors"))


@hookimpl
def register_methods(register) -> None:
    register(LinearProbe())
