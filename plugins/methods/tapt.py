"""Task-adaptive pre-training (TAPT, study S1) in front of any method: `tapt+<method>`
(e.g. `tapt+ia3`, or a method from another package); `tapt-lora` and `tapt-adapter` are
S1's names for `tapt+lora` and `tapt+adapter`.

Stage "tapt": masked-LM on the task's training text (plugins/mlm.py) with the
inner method's modules (LoRA, adapters, ...) on the encoder; of the MLM head, by
default the transform (dense + LayerNorm) and the decoder bias train while the
decoder weight stays tied to the frozen word embeddings. Stage "finetune": a
fresh task head, the inner method's weights from stage 1 copied in exactly,
then trained as the inner method trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field, make_dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from peftbench.sdk import ConfigError, HeadSpec, LoadedBackbone, Method, MethodWrapper, Stage, hookimpl

from .bottleneck import BottleneckAdapter
from .lora_model import Lora
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


def _tapt_config(inner: type, name: str) -> type:
    def __post_init__(self) -> None:
        inner.__post_init__(self) if hasattr(inner, "__post_init__") else None
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not self.tapt_lr > 0 or self.tapt_batch_size < 1 or self.tapt_epochs < 1:
            raise ValueError("tapt_lr must be > 0, tapt_batch_size and tapt_epochs >= 1")

    clash = sorted({f.name for f in dataclasses.fields(inner)} & {n for n, _, _ in TAPT_FIELDS})
    if clash:
        raise ConfigError(f"{name}: the method's own settings {', '.join(clash)} clash with TAPT's",
                          "rename those settings in the method's plugin")
    return make_dataclass(f"Tapt{inner.__name__}", [(n, t, field(default=d)) for n, t, d in TAPT_FIELDS],
                          bases=(inner,), frozen=True, namespace={"__post_init__": __post_init__})


def transfer_parameters(source: torch.nn.Module, target: torch.nn.Module, select, skip=()) -> None:
    """Copy the inner method's parameters from the TAPT model into the fine-tuning model, exactly.

    Both wrap the same encoder, so every carried parameter (``select``ed, not in ``skip``: the
    masked-LM head's) must land on a parameter of the same name and shape; anything else is an
    error rather than a partial copy. A selected parameter only the fine-tuning model has (e.g.
    BERT's pooler bias under BitFit: the masked-LM model has no pooler) starts as initialised.
    """
    import torch

    carried = {n: p for n, p in source.named_parameters() if select(n) and n not in skip}
    receiving = {n: p for n, p in target.named_parameters() if select(n)}
    lost = sorted(n for n in carried if n not in receiving or receiving[n].shape != carried[n].shape)
    if lost:
        raise ConfigError(f"TAPT weights do not match the fine-tuning model's ({', '.join(lost[:3])})",
                          "both stages must use the same method settings")
    with torch.no_grad():
        for name, param in carried.items():
            receiving[name].copy_(param)


class Tapt(Method):
    def __init__(self, inner: Method, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or f"tapt-{inner.name}"
        self.description = f"TAPT+{inner.name}: masked-LM on the task's text with {inner.name}, then fine-tuning " \
                           f"from those weights"
        self.Config = _tapt_config(inner.Config, self.name)
        self.capacity = inner.capacity
        self.libraries = inner.libraries

    @property
    def mergeable(self) -> bool | None:  # the inner method's, as known once it has prepared a model
        return self.inner.mergeable

    def stages(self, task, task_config, config: Any, backbone=None) -> list[Stage]:
        if task.head(task_config).kind == "text-generation":
            raise ConfigError(f"{self.name} pre-trains with masked-LM, which needs an encoder; task {task.name} trains "
                              "a text generator", f"use {self.inner.name} alone for generation tasks")
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
                transfer_parameters(previous, model, self.inner.is_adapter_parameter,
                                    skip=set(getattr(previous, "_peftbench_tapt_head", ())))
            return model
        # The inner method must not wrap the MLM head itself (peft's modules_to_save would copy
        # and untie the 32k x 768 decoder); its parameters are unfrozen here instead.
        has_train_head = "train_head" in {f.name for f in dataclasses.fields(config)}
        model = self.inner.prepare(loaded, replace(config, train_head=False) if has_train_head else config, stage)
        heads = set(loaded.head_modules)
        trained_head = []
        for name, param in model.named_parameters():  # the tied decoder weight is listed as the embeddings
            if heads.intersection(name.split(".")):
                param.requires_grad_(True)
                trained_head.append(name)  # stays behind with the head: never carried to fine-tuning
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

    def after_update(self, model, update: int, total_updates: int) -> None:
        self.inner.after_update(model, update, total_updates)

    def search_space(self, config):
        return self.inner.search_space(config)  # what tunes is the wrapped method's

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


TaptSettings = make_dataclass("TaptSettings", [(n, t, field(default=d)) for n, t, d in TAPT_FIELDS], frozen=True)


class TaptWrapper(MethodWrapper):
    prefix = "tapt"
    description = "TAPT: masked-LM on the task's text with the method's own trainable parts, then fine-tuning " \
                  "from those weights (S1)"
    Config = TaptSettings

    def wrap(self, inner: Method) -> Method:
        if type(inner).stages is not Method.stages:
            raise ConfigError(f"tapt+{inner.name}: {inner.name} has training stages of its own; TAPT wraps a "
                              f"single-stage method", f"wrap the method {inner.name} itself wraps")
        return Tapt(inner, name=f"tapt+{inner.name}")


@hookimpl
def register_methods(register) -> None:
    for inner in (Lora(), BottleneckAdapter()):
        register(Tapt(inner))  # S1's names: tapt-lora, tapt-adapter


@hookimpl
def register_method_wrappers(register) -> None:
    register(TaptWrapper())
