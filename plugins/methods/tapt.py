"""Task-adaptive pre-training (TAPT, study S1) in front of any adapter-style method:
`tapt-lora`, `tapt-adapter`.

Stage "tapt": masked-LM on the task's training text (plugins/mlm.py) with the
inner method's modules (LoRA, adapters) on the encoder; of the MLM head, by
default the transform (dense + LayerNorm) and the decoder bias train while the
decoder weight stays tied to the frozen word embeddings. Stage "finetune": a
fresh task head, the inner method's weights from stage 1 copied in exactly,
then trained as the inner method trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field, make_dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from peftbench.sdk import ConfigError, HeadSpec, LoadedBackbone, Method, Stage, hookimpl

from .adapter import BottleneckAdapter
from .lora import Lora
from .mlm import MaskedLMObjective

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

TAPT_FIELDS = [
    ("tapt_lr", float, 2e-4),
    ("tapt_batch_size", int, 32),
    ("tapt_epochs", int, 50),  # S1: at most 50, chosen by dev loss
    ("tapt_patience", int | None, 3),
    ("mlm_probability", float, 0.15),
    # Which MLM-head parameters train in stage 1: S1's transform + decoder bias, or the whole
    # output layer (the decoder weight, tied to the word embeddings, then trains too).
    ("tapt_head", Literal["transform+bias", "all"], "transform+bias"),
]


def _tapt_config(inner: type) -> type:
    def __post_init__(self) -> None:
        inner.__post_init__(self) if hasattr(inner, "__post_init__") else None
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not self.tapt_lr > 0 or self.tapt_batch_size < 1 or self.tapt_epochs < 1:
            raise ValueError("tapt_lr must be > 0, tapt_batch_size and tapt_epochs >= 1")

    if "train_head" not in {f.name for f in dataclasses.fields(inner)}:
        raise TypeError(f"{inner.__name__} needs a train_head setting to be wrapped by TAPT")
    return make_dataclass(f"Tapt{inner.__name__}", [(n, t, field(default=d)) for n, t, d in TAPT_FIELDS],
                          bases=(inner,), frozen=True, namespace={"__post_init__": __post_init__})


def transfer_parameters(source: torch.nn.Module, target: torch.nn.Module, select) -> None:
    """Copy the inner method's parameters from the TAPT model into the fine-tuning model, exactly.

    Both wrap the same encoder, so parameter names match one to one; anything
    else is an error rather than a partial copy.
    """
    import torch

    carried = {n: p for n, p in source.named_parameters() if select(n)}
    receiving = {n: p for n, p in target.named_parameters() if select(n)}
    if carried.keys() != receiving.keys() or any(carried[n].shape != receiving[n].shape for n in receiving):
        differing = sorted(receiving.keys() ^ carried.keys())[:3] or "shapes differ"
        raise ConfigError(f"TAPT weights do not match the fine-tuning model's ({differing})",
                          "both stages must use the same method settings")
    with torch.no_grad():
        for name, param in receiving.items():
            param.copy_(carried[name])


class Tapt(Method):
    def __init__(self, inner: Method) -> None:
        self.inner = inner
        self.name = f"tapt-{inner.name}"
        self.description = f"TAPT+{inner.name}: masked-LM on the task's text with {inner.name}, then fine-tuning " \
                           f"from those weights"
        self.Config = _tapt_config(inner.Config)
        self.mergeable = inner.mergeable
        self.capacity = inner.capacity
        self.libraries = inner.libraries

    def stages(self, task, task_config, config: Any, backbone=None) -> list[Stage]:
        tapt = Stage(
            "tapt", HeadSpec("masked-lm"), objective=MaskedLMObjective(task, config.mlm_probability),
            train_overrides={"epochs": config.tapt_epochs, "batch_size": config.tapt_batch_size,
                             "monitor": "loss", "patience": config.tapt_patience},
        )
        return [tapt, Stage("finetune", task.head(task_config))]

    def learning_rate(self, config: Any, stage: Stage) -> float:
        return config.tapt_lr if stage.name == "tapt" else self.inner.learning_rate(config, stage)

    def prepare(self, loaded: LoadedBackbone, config: Any, stage: Stage, previous=None) -> torch.nn.Module:
        if stage.name != "tapt":
            model = self.inner.prepare(loaded, config, stage)
            if previous is not None:
                transfer_parameters(previous, model, self.inner.is_adapter_parameter)
            return model
        # The inner method must not wrap the MLM head itself (peft's modules_to_save would copy
        # and untie the 32k x 768 decoder); its parameters are unfrozen here instead.
        model = self.inner.prepare(loaded, replace(config, train_head=False), stage)
        heads = set(loaded.head_modules)
        trained_head = []
        for name, param in model.named_parameters():  # the tied decoder weight is listed as the embeddings
            if heads.intersection(name.split(".")) and not self.inner.is_adapter_parameter(name):
                param.requires_grad_(True)
                trained_head.append(name)
        if config.tapt_head == "all":
            # Tied to the word embeddings: training the output layer trains them too (S1: 25,642,496).
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            base.get_output_embeddings().weight.requires_grad_(True)
            trained_head += [n for n, p in model.named_parameters()
                             if p is base.get_output_embeddings().weight]
        model._peftbench_tapt_head = trained_head
        return model

    def is_adapter_parameter(self, name: str) -> bool:
        return self.inner.is_adapter_parameter(name)

    def loss(self, model, batch):
        return self.inner.loss(model, batch)

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        # Stage 1 stores the inner method's weights plus every MLM-head tensor it trained (S1 Table 6.1).
        tensors = dict(self.inner.artifact_tensors(model))
        named = dict(model.named_parameters())
        for name in getattr(model, "_peftbench_tapt_head", []):
            tensors.setdefault(name, named[name])
        return tensors

    def save(self, model: torch.nn.Module, directory: str) -> None:
        self.inner.save(model, directory)

    def inference_modes(self, model: torch.nn.Module):
        return self.inner.inference_modes(model)


@hookimpl
def register_methods(register) -> None:
    for inner in (Lora(), BottleneckAdapter()):
        register(Tapt(inner))
