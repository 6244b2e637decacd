"""TAPT+LoRA (study S1): task-adaptive masked-LM pre-training with LoRA, then
LoRA fine-tuning that starts from the TAPT LoRA weights.

Stage "tapt": masked-LM on the task's training text (plugins/mlm.py), LoRA on
the chosen matrices; of the MLM head, by default the transform (dense +
LayerNorm) and the decoder bias train while the decoder weight stays tied to
the (frozen) word embeddings. Stage "finetune": a fresh task head, the LoRA
weights of stage 1 copied in exactly, LoRA + head train.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from peftbench.api import HeadSpec, LoadedBackbone, Stage
from peftbench.errors import ConfigError
from peftbench.hookspecs import hookimpl

from .lora import Lora, LoraSettings
from .mlm import MaskedLMObjective


@dataclass(frozen=True)
class TaptLoraSettings(LoraSettings):
    tapt_lr: float = 2e-4
    tapt_batch_size: int = 32
    tapt_epochs: int = 50  # S1: at most 50, chosen by dev loss
    tapt_patience: int | None = 3
    mlm_probability: float = 0.15
    # Which MLM-head parameters train in stage 1: S1's transform + decoder bias, or the whole
    # output layer (the decoder weight, tied to the word embeddings, then trains too).
    tapt_head: Literal["transform+bias", "all"] = "transform+bias"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not self.tapt_lr > 0 or self.tapt_batch_size < 1 or self.tapt_epochs < 1:
            raise ValueError("tapt_lr must be > 0, tapt_batch_size and tapt_epochs >= 1")


def transfer_lora(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Copy every LoRA matrix from the TAPT model into the fine-tuning model, exactly.

    Both wrap the same encoder, so LoRA parameter names match one to one;
    anything else is an error rather than a partial copy.
    """
    carried = {n: p for n, p in source.named_parameters() if "lora_" in n}
    receiving = {n: p for n, p in target.named_parameters() if "lora_" in n}
    if carried.keys() != receiving.keys():
        missing = sorted(receiving.keys() - carried.keys())[:3] or sorted(carried.keys() - receiving.keys())[:3]
        raise ConfigError(f"TAPT LoRA weights do not match the fine-tuning model's LoRA layers ({missing})",
                          "both stages must use the same r and target")
    with torch.no_grad():
        for name, param in receiving.items():
            param.copy_(carried[name])


class TaptLora(Lora):
    name = "tapt-lora"
    description = "TAPT+LoRA: masked-LM on the task's text with LoRA, then LoRA fine-tuning from those weights"
    Config = TaptLoraSettings

    def stages(self, task, task_config, config: TaptLoraSettings) -> list[Stage]:
        tapt = Stage(
            "tapt", HeadSpec("masked-lm"), objective=MaskedLMObjective(task, config.mlm_probability),
            train_overrides={"epochs": config.tapt_epochs, "batch_size": config.tapt_batch_size,
                             "monitor": "loss", "patience": config.tapt_patience},
        )
        return [tapt, Stage("finetune", task.head(task_config))]

    def learning_rate(self, config: TaptLoraSettings, stage: Stage) -> float:
        return config.tapt_lr if stage.name == "tapt" else config.lr

    def prepare(self, loaded: LoadedBackbone, config: TaptLoraSettings, stage: Stage, previous=None) -> torch.nn.Module:
        if stage.name == "finetune":
            model = super().prepare(loaded, config, stage)
            if previous is not None:
                transfer_lora(previous, model)
            return model
        # Stage 1: LoRA without modules_to_save; MLM head parameters are unfrozen by hand
        # because peft's modules_to_save would copy (and untie) the 32k x 768 decoder.
        model = super().prepare(loaded, replace(config, train_head=False), stage)
        heads = set(loaded.head_modules)
        for name, param in model.named_parameters():  # the tied decoder weight is listed as the embeddings
            if heads.intersection(name.split(".")) and "lora_" not in name:
                param.requires_grad_(True)
        if config.tapt_head == "all":
            # Tied to the word embeddings: training the output layer trains them too (S1: 25,642,496).
            model.get_base_model().get_output_embeddings().weight.requires_grad_(True)
        return model

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        # Stage 1 stores the LoRA weights plus every MLM-head tensor it trained (S1 Table 6.1).
        tensors = super().artifact_tensors(model)
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_" not in name and "modules_to_save" not in name:
                tensors.setdefault(name, param)
        return tensors


@hookimpl
def register_methods(register) -> None:
    register(TaptLora())
