"""BitFit (Ben Zaken et al., 2022) as a stand-alone peftbench plugin.

Only bias terms of the encoder and the task head train. Installing this
distribution (`pip install ./examples/peftbench-plugin-bitfit`) makes
`peftbench run --method bitfit ...` available with no change to peftbench.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from peftbench.sdk import LoadedBackbone, Method, Stage, hookimpl


@dataclass(frozen=True)
class BitFitConfig:
    lr: float = 1e-3


class BitFit(Method):
    name = "bitfit"
    description = "BitFit: only bias terms (and the task head) train"
    Config = BitFitConfig

    def prepare(self, loaded: LoadedBackbone, config: BitFitConfig, stage: Stage, previous=None) -> torch.nn.Module:
        heads = set(loaded.head_modules)
        for name, param in loaded.model.named_parameters():
            param.requires_grad_(name.endswith(".bias") or bool(heads.intersection(name.split("."))))
        return loaded.model

    def is_adapter_parameter(self, name: str) -> bool:
        return name.endswith(".bias")

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def save(self, model: torch.nn.Module, directory: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        tensors = {n: t.detach().contiguous().cpu() for n, t in self.artifact_tensors(model).items()}
        save_file(tensors, os.path.join(directory, "bitfit.safetensors"))


@hookimpl
def register_methods(register) -> None:
    register(BitFit())
