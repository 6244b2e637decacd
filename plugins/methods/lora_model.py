"""LoRA (Hu et al., 2021) through Hugging Face peft.

Low-rank updates W' = W + (alpha/r) B A on the chosen linear layers; the task
head trains in full (optional). The artefact is peft's adapter file: the
LoRA matrices plus the head, in safetensors.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from peftbench.sdk import ConfigError, LoadedBackbone, Method, Stage

from .learning_rates import FAMILIES

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch


def is_quantized(model: torch.nn.Module) -> bool:
    """A base loaded in 4 or 8 bits (``--set quantize=``); peft's wrapper forwards the question."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def peft_model(model: torch.nn.Module, peft_config) -> torch.nn.Module:
    """``peft.get_peft_model``, without the FutureWarning peft 0.21 raises on transformers 5 for every
    model it wraps (it reads ``is_gradient_checkpointing``, which 5 renamed). A quantized base is
    first prepared for k-bit training as QLoRA does (norms and output layer in float32, inputs that
    require grad); gradient checkpointing stays off, a choice of its own, not part of quantization."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        if is_quantized(model):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, peft_config)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    # "auto": peft's default for the architecture (BERT/RoBERTa query,value; T5 q,v; GPT-2 c_attn;
    # Llama/Qwen2/Mistral/Gemma q_proj,v_proj; RWKV key,value,receptance,output; ...); "all-linear":
    # every linear layer but the output layer (QLoRA's choice).
    target: tuple[str, ...] = ("auto",)
    lr: float = FAMILIES["lora"].lr  # source: plugins/methods/learning_rates.py
    train_head: bool = True
    bias: str = "none"

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target:
            raise ValueError("target must name at least one module, e.g. query,value")
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"bias must be none, all or lora_only, got {self.bias!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def _linear_names(model: torch.nn.Module) -> list[str]:
    import torch
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, (torch.nn.Linear, Conv1D))})


def resolve_target(model: torch.nn.Module, target: tuple[str, ...]) -> list[str] | str:
    """The module names LoRA wraps: as given, for "auto" peft's default for the model type, or
    "all-linear" (peft's: every linear layer but the output layer)."""
    if tuple(target) == ("all-linear",):
        return "all-linear"
    if tuple(target) != ("auto",):
        return list(target)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in DEFAULTS:
        raise ConfigError(f"no default LoRA target for model type {kind!r}",
                          f"name the layers with --set target=a,b (linear layers there: "
                          f"{', '.join(_linear_names(model))})")
    return list(DEFAULTS[kind])


class Lora(Method):
    lr_range = (FAMILIES["lora"].low, FAMILIES["lora"].high)
    name = "lora"
    description = "LoRA low-rank adapters (peft) on chosen linear layers + trainable task head"
    libraries = ("peft",)
    Config = LoraSettings
    mergeable = True
    quantized_base = True
    packed_batches = True  # LoRA changes weights only: a packed row is read as given
    capacity = ("r", range(1, 1025))
    family = "lora"

    def family_settings(self, config: LoraSettings) -> dict[str, Any]:
        return {"r": config.r, "alpha": float(config.alpha), "dropout": float(config.dropout), "target": list(config.target)}

    def prepare(self, loaded: LoadedBackbone, config: LoraSettings, stage: Stage, previous=None) -> torch.nn.Module:
        from peft import LoraConfig

        model = loaded.model
        available = _linear_names(model)
        target = resolve_target(model, config.target)
        loaded.info["lora_target"] = target  # recorded with the backbone: what "auto" became
        missing = [] if target == "all-linear" else [t for t in target if t not in available]
        if missing:
            raise ConfigError(f"LoRA target {', '.join(missing)} not found in {type(model).__name__}",
                              f"linear layers there: {', '.join(available)}")
        from transformers.pytorch_utils import Conv1D

        # GPT-2's Conv1D stores its weight transposed; peft must be told.
        transposed = any(isinstance(m, Conv1D) and (target == "all-linear" or n.rsplit(".", 1)[-1] in target)
                         for n, m in model.named_modules())
        peft_config = LoraConfig(
            fan_in_fan_out=transposed,
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=target,
            bias=config.bias,
            modules_to_save=list(loaded.head_modules) if config.train_head else None,
        )
        return peft_model(model, peft_config)

    def is_adapter_parameter(self, name: str) -> bool:
        return "lora_" in name

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(model)

    def save(self, model: torch.nn.Module, directory: str) -> None:
        from pathlib import Path

        model.save_pretrained(directory, safe_serialization=True)
        # peft adds a boilerplate model card; it is not part of what a task needs stored.
        (Path(directory) / "README.md").unlink(missing_ok=True)

    @contextlib.contextmanager
    def inference_modes(self, model: torch.nn.Module) -> Iterator[Iterator[str]]:
        def modes() -> Iterator[str]:
            yield "unmerged"
            # Into a k-bit base, a merge would dequantize, add BA and quantize again: the merged model
            # rounds the update away in part and is not the model that was scored. Not timed.
            if not is_quantized(model):
                model.merge_adapter()  # W' = W + BA: no extra latency at inference
                yield "merged"

        try:
            yield modes()
        finally:
            if any(getattr(m, "merged", False) for m in model.modules()):
                model.unmerge_adapter()
