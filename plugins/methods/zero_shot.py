"""The untrained base as a row: ``zero-shot`` evaluates a backbone's own language-model output with
nothing trained, recorded like any run, so a decoder table shows what the base model already does
(and the "did not learn" test can be asked against it as well as against the majority floor).

It needs a task the pre-trained model can answer as it is: a text-generation head (GSM8K, instruction
SFT, or any classification task with ``--set as_generation=true``, scored by the label words'
log-likelihood and by generation); a new classification head would be random weights, so that is
refused in one line. Nothing is saved: the artefact is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftbench.sdk import ConfigError, LoadedBackbone, Method, Stage, hookimpl

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


@dataclass(frozen=True)
class ZeroShotConfig:
    """No settings: nothing trains."""


class ZeroShot(Method):
    name = "zero-shot"
    description = "the base model as it is, nothing trained (text-generation tasks; classification with as_generation)"
    Config = ZeroShotConfig
    quantized_base = True  # it leaves every base weight as loaded
    packed_batches = True

    def prepare(self, loaded: LoadedBackbone, config: ZeroShotConfig, stage: Stage,
                previous: torch.nn.Module | None = None) -> torch.nn.Module:
        if stage.head.kind != "text-generation":
            raise ConfigError(f"zero-shot scores a pre-trained model's own output; a {stage.head.kind} head would "
                              "be new, untrained weights",
                              "use a causal LM with a text-generation task, or --set as_generation=true")
        for param in loaded.model.parameters():
            param.requires_grad_(False)
        return loaded.model

    def learning_rate(self, config: ZeroShotConfig, stage: Stage) -> float:
        return 0.0

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def save(self, model: torch.nn.Module, directory: str) -> None:
        return None  # nothing trained, nothing to store


@hookimpl
def register_methods(register) -> None:
    register(ZeroShot())
