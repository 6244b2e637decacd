"""Bottleneck adapters through AdapterHub's `adapters` library.

`houlsby` (`double_seq_bn`: an adapter after attention and after the FFN of
every layer) or `pfeiffer` (`seq_bn`: after the FFN only). The bottleneck is
hidden / reduction_factor, or set directly with `bottleneck`. Only the
adapters and the task head train. The artefact is the library's adapter file
written as safetensors (its default is a pickled .bin) plus the head.
Adapters cannot be merged into the weights: inference always pays for them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from peftbench.sdk import ConfigError, LoadedBackbone, Method, Stage

from .learning_rates import FAMILIES

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

LIBRARY_CONFIGS = {"houlsby": "double_seq_bn", "pfeiffer": "seq_bn", "double_seq_bn": "double_seq_bn",
                   "seq_bn": "seq_bn"}
ADAPTER_NAME = "task"


@dataclass(frozen=True)
class AdapterSettings:
    config: Literal["houlsby", "pfeiffer", "double_seq_bn", "seq_bn"] = "pfeiffer"
    reduction_factor: float = 16.0
    bottleneck: int | None = None  # overrides reduction_factor (bottleneck = hidden / reduction_factor)
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = "relu"
    lr: float = FAMILIES["bottleneck"].lr  # source: plugins/methods/learning_rates.py
    train_head: bool = True

    def __post_init__(self) -> None:
        if self.reduction_factor <= 0:
            raise ValueError(f"reduction_factor must be > 0, got {self.reduction_factor}")
        if self.bottleneck is not None and self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def bottleneck_size(hidden: int, config: AdapterSettings) -> int:
    if config.bottleneck is not None:
        if config.bottleneck > hidden:
            raise ConfigError(f"bottleneck {config.bottleneck} is larger than the hidden size {hidden}")
        return config.bottleneck
    size = hidden / config.reduction_factor
    if not size.is_integer() or size < 1:
        divisors = [f"{hidden // b:g}" for b in (1, 2, 4, 8, 16, 32, 64) if hidden % b == 0 and hidden // b >= 1][:6]
        raise ConfigError(f"reduction_factor {config.reduction_factor:g} does not divide the hidden size {hidden}",
                          f"use e.g. reduction_factor in {{{', '.join(f'{hidden / int(d):g}' for d in divisors)}}} "
                          "or set bottleneck=N")
    return int(size)


class BottleneckAdapter(Method):
    lr_range = (FAMILIES["bottleneck"].low, FAMILIES["bottleneck"].high)
    name = "adapter"
    description = "bottleneck adapters (AdapterHub `adapters`): houlsby or pfeiffer, + trainable task head"
    Config = AdapterSettings
    mergeable = False
    capacity = ("bottleneck", range(1, 4097))
    libraries = ("adapters",)
    adapter_name = ADAPTER_NAME

    def prepare(self, loaded: LoadedBackbone, config: AdapterSettings, stage: Stage, previous=None) -> torch.nn.Module:
        import adapters
        from adapters import DoubleSeqBnConfig, SeqBnConfig

        logging.getLogger("adapters").setLevel(logging.ERROR)  # its notices would bury peftbench's output

        model = loaded.model
        hidden = model.config.hidden_size
        size = bottleneck_size(hidden, config)
        # The library computes int(hidden // reduction_factor); hidden / (size + 0.5) makes that
        # exactly `size` for any bottleneck, not only divisors of the hidden size.
        factor = config.reduction_factor if config.bottleneck is None else hidden / (size + 0.5)
        library_config = {"double_seq_bn": DoubleSeqBnConfig, "seq_bn": SeqBnConfig}[LIBRARY_CONFIGS[config.config]](
            reduction_factor=factor, non_linearity=config.non_linearity)
        adapters.init(model)
        model.add_adapter(self.adapter_name, config=library_config)
        model.train_adapter(self.adapter_name)  # freezes the encoder, activates the adapter
        set_head_trainable(model, loaded, config.train_head)
        return model

    def is_adapter_parameter(self, name: str) -> bool:
        return f".adapters.{self.adapter_name}." in name

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def save(self, model: torch.nn.Module, directory: str) -> None:
        save_adapter_files(model, directory, self.adapter_name, self.is_adapter_parameter)


def set_head_trainable(model: torch.nn.Module, loaded: LoadedBackbone, trainable: bool) -> None:
    heads = set(loaded.head_modules)
    for name, param in model.named_parameters():
        if heads.intersection(name.split(".")):
            param.requires_grad_(trainable)


def save_adapter_files(model: torch.nn.Module, directory: str, adapter: str, is_adapter_parameter) -> None:
    """The library's adapter files as safetensors, plus the trained head; never a pickle."""
    from safetensors.torch import save_file

    try:
        model.save_adapter(directory, adapter, use_safetensors=True)
    except RuntimeError:  # tensors shared inside the adapter (prefix pools): safetensors refuses them
        model.save_adapter(directory, adapter, use_safetensors=False)  # its config; the .bin goes below
        unique = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters()  # shared ones once
                  if is_adapter_parameter(n)}
        save_file(unique, os.path.join(directory, "adapter.safetensors"))
    head = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters()
            if p.requires_grad and not is_adapter_parameter(n)}
    if head:
        save_file(head, os.path.join(directory, "head.safetensors"))
    for name in os.listdir(directory):  # the library may also write a pickled copy: keep safetensors only
        if name.endswith(".bin"):
            os.remove(os.path.join(directory, name))
