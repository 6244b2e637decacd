"""Embedding tuning as a stand-alone peftbench plugin: only the backbone's input (word) embeddings
and the task head train; every layer above stays frozen. The embeddings are the method's own
parameters (counted as 'adapter'), found through transformers' `get_input_embeddings`, so it works
on any architecture that has them.

Installing this distribution (`pip install ./examples/peftbench-plugin-embedding-tuning`) makes
`peftbench run --method embedding-tuning ...` available, and with it `tapt+embedding-tuning` and
`mtl-ngram+embedding-tuning`, with no change to peftbench.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from peftbench.sdk import ConfigError, LoadedBackbone, Method, Stage, hookimpl


@dataclass(frozen=True)
class EmbeddingTuningConfig:
    lr: float = 1e-3  # embedding rows and a fresh head take larger steps than full fine-tuning

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class EmbeddingTuning(Method):
    name = "embedding-tuning"
    description = "embedding tuning: only the input embeddings and the task head train"
    Config = EmbeddingTuningConfig

    def __init__(self) -> None:
        self._embeddings: frozenset[str] = frozenset()  # the embedding weight's name, from the last prepare

    def prepare(self, loaded: LoadedBackbone, config: EmbeddingTuningConfig, stage: Stage,
                previous: torch.nn.Module | None = None) -> torch.nn.Module:
        embeddings = loaded.model.get_input_embeddings()
        if embeddings is None:
            raise ConfigError("embedding-tuning: this backbone has no input embeddings", "pick another method")
        self._embeddings = frozenset(n for n, p in loaded.model.named_parameters() if p is embeddings.weight)
        heads = set(loaded.head_modules)
        for name, param in loaded.model.named_parameters():
            param.requires_grad_(name in self._embeddings or bool(heads.intersection(name.split("."))))
        return loaded.model

    def is_adapter_parameter(self, name: str) -> bool:
        # A wrapper (multi-task) may hold the model under a prefix of its own.
        return any(name == own or name.endswith("." + own) for own in self._embeddings)

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: param for name, param in model.named_parameters() if param.requires_grad}

    def save(self, model: torch.nn.Module, directory: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.artifact_tensors(model).items()}
        save_file(tensors, os.path.join(directory, "embedding-tuning.safetensors"))


@hookimpl
def register_methods(register) -> None:
    register(EmbeddingTuning())
