"""Settings: the training settings every run has, `--set key=value` parsing, the config hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by every method and task."""

    seed: int = 42
    epochs: int = 5
    batch_size: int = 8
    eval_batch_size: int = 32
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    schedule: Literal["linear", "constant"] = "linear"
    grad_clip: float | None = None
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # Model selection / early stopping on the dev split.
    monitor: Literal["score", "loss"] = "score"
    patience: int | None = None
    min_delta: float = 0.0
    # Inference timing over the test split (0 = skip), median over repeats.
    inference_repeats: int = 1
    inference_split: Literal["train", "dev", "test"] = "test"
    # "longest" pads each batch to its longest example; "max_length" pads everything to the
    # task's max_length (what many published scripts do; slower).
    padding: Literal["longest", "max_length"] = "longest"
    # Batches of similar lengths (transformers' LengthGroupedSampler): less padding still.
    group_by_length: bool = False
    # Training batches without padding: each batch's examples laid end to end, kept apart by position
    # ids (the task's packed_collator); the same examples and loss per step. Tasks and methods that can.
    packing: bool = False
    save_artifact: bool = True
    # Gradient accumulation: one optimizer update per grad_accum_steps micro-batches of batch_size,
    # so e.g. full fine-tuning on a small GPU can use the same effective batch as LoRA. Or name the
    # effective batch (batch_size x grad_accum_steps x processes) and let the run pick the steps.
    grad_accum_steps: int = 1
    effective_batch_size: int | None = None
    # Score the test split at the end (tuning trials do not: they select on dev only).
    evaluate_test: bool = True
    # Forgetting (causal LMs): a text or JSONL file whose mean per-token cross-entropy is measured on
    # the base model before the method touches it and on the tuned model after (peftbench/run/forgetting.py).
    forgetting_data: str | None = None
    forgetting_max_length: int = 512
    forgetting_texts: int | None = None  # only the file's first N texts (a large corpus on a slow machine)
    # A frozen base in 4 or 8 bits (bitsandbytes: NF4 with double quantisation for 4bit, LLM.int8 for
    # 8bit), for the methods that train beside a quantized base (QLoRA); compute in this dtype.
    quantize: Literal["none", "4bit", "8bit"] = "none"
    quantize_compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    # torch.compile of the model for training and evaluation (peftbench/run/compiled.py); compile seconds are
    # recorded apart from train seconds. "aot_eager" traces without generating code (checks a model compiles).
    compile: bool = False
    compile_backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    # Memory levers (their effect shows in the predicted peak, peftbench/run/memory.py): recompute each layer's
    # activations in the backward pass instead of keeping them (transformers' non-reentrant gradient
    # checkpointing), and the optimizer: torch's AdamW, or bitsandbytes' 8-bit / paged AdamW (the quant extra).
    gradient_checkpointing: bool = False
    optimizer: Literal["adamw", "adamw8bit", "paged_adamw8bit", "paged_adamw32bit"] = "adamw"
    # Memory planning, not part of a run's identity: the accelerator memory a run may use. A run predicted
    # above it is refused before it starts, or (fit_memory=accumulate) trains smaller micro-batches with
    # more accumulation steps, its effective batch kept. memory_trace=true also traces one real training
    # step's memory by part and records it beside the prediction.
    gpu_memory_gb: float | None = None
    fit_memory: Literal["refuse", "accumulate"] = "refuse"
    memory_trace: bool = False

    # Settings added after runs were first recorded: left out of the config hash at their default,
    # so a suite still recognises the runs it finished before they existed.
    HASH_OMITS_AT_DEFAULT = ("grad_accum_steps", "effective_batch_size", "evaluate_test", "forgetting_data",
                             "forgetting_max_length", "quantize", "quantize_compute_dtype", "compile",
                             "compile_backend", "packing", "gradient_checkpointing", "optimizer", "forgetting_texts")
    # How a run is planned or watched, never what it trains: left out of the config hash whatever their value.
    HASH_OMITS = ("gpu_memory_gb", "fit_memory", "memory_trace")

    @property
    def quantized(self) -> bool:
        """Whether the run trains beside a frozen k-bit base: the one place that reads ``quantize``."""
        return self.quantize != "none"

    def loading(self) -> dict[str, str]:
        """The keywords a quantizing backbone's ``load`` takes (``Backbone.quantizes``), empty when the
        run quantizes nothing: a backbone plugin that never quantizes need not know them."""
        return {"quantize": self.quantize, "compute_dtype": self.quantize_compute_dtype} if self.quantized else {}

    def accumulation_steps(self, processes: int = 1) -> int:
        """Micro-batches per optimizer update on each of ``processes`` data-parallel processes."""
        if self.effective_batch_size is None:
            return self.grad_accum_steps
        per_update = self.batch_size * processes
        if self.effective_batch_size % per_update:
            raise ValueError(f"effective_batch_size {self.effective_batch_size} is not a multiple of batch_size "
                             f"{self.batch_size} x {processes} process(es)")
        return self.effective_batch_size // per_update

    def __post_init__(self) -> None:
        """Checked like method and task settings: at `--set` time, dry runs included."""
        problems = [
            (self.epochs < 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size < 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size < 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (self.weight_decay < 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (not 0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.grad_clip is not None and not self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.patience is not None and self.patience < 1, f"patience must be >= 1, got {self.patience}"),
            (self.min_delta < 0, f"min_delta must be >= 0, got {self.min_delta}"),
            (self.inference_repeats < 0, f"inference_repeats must be >= 0, got {self.inference_repeats}"),
            (self.grad_accum_steps < 1, f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}"),
            (self.effective_batch_size is not None and self.grad_accum_steps != 1,
             "set effective_batch_size or grad_accum_steps, not both"),
            (self.effective_batch_size is not None and (self.effective_batch_size < self.batch_size
                                                        or self.effective_batch_size % self.batch_size),
             f"effective_batch_size must be a multiple of batch_size {self.batch_size}, got "
             f"{self.effective_batch_size}"),
            (self.gpu_memory_gb is not None and not 0 < self.gpu_memory_gb < float("inf"),
             f"gpu_memory_gb must be a positive number of GB, got {self.gpu_memory_gb}"),
            (self.forgetting_max_length < 2, f"forgetting_max_length must be >= 2, got {self.forgetting_max_length}"),
            (self.forgetting_texts is not None and self.forgetting_texts < 1,
             f"forgetting_texts must be >= 1, got {self.forgetting_texts}"),
        ]
        for wrong, message in problems:
            if wrong:
                raise ValueError(message)


def config_hash(resolved: dict[str, Any]) -> str:
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- --set parsing

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(raw: str, annotation: Any, key: str) -> Any:
    """Parse a command-line string into the field's declared type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and raw.strip().lower() in {"none", "null", ""}:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(raw, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: cannot parse {raw!r}")
    if origin is Literal:
        for choice in args:
            if str(choice) == raw:
                return choice
        raise ConfigError(f"{key}={raw!r} is not one of {', '.join(map(str, args))}")
    if origin is tuple:
        item_type = args[0] if args else str
        items = [part.strip() for part in raw.split(",") if part.strip()]
        return tuple(parse_value(item, item_type, key) for item in items)
    if annotation is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{key}={raw!r} is not a boolean", "use true or false")
    if annotation in (int, float):
        try:
            value = annotation(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not a{'n' if annotation is int else ''} {annotation.__name__}") from None
        if annotation is float and not math.isfinite(value):
            raise ConfigError(f"{key}={raw!r} is not a finite number", "give a number such as 5e-4")
        return value
    if annotation is str:
        return raw
    raise ConfigError(f"{key}: fields of type {annotation!r} cannot be set from the command line")


def parse_typed(value: Any, annotation: Any, key: str) -> Any:
    """A value that arrived typed (TOML, JSON, a tuning trial) checked by the parser `--set` uses:
    0.5 for an int setting or "abc" for a float one is refused as it would be on the command line."""
    if value is None:  # only where the setting may be unset: as a string "none" would stand for it
        if type(None) in typing.get_args(annotation):
            return None
        raise ConfigError(f"{key} cannot be unset (null)", "give it a value")
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = ",".join(map(str, value))
    else:
        text = str(value)
    return parse_value(text, annotation, key)


def field_types(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {pair!r} is not key=value", "write e.g. --set r=8")
        if key in parsed:
            raise ConfigError(f"--set {key} is given twice")
        parsed[key] = value
    return parsed


def overrides_of(sets: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """Settings as key -> value: `--set` pairs (their values strings, parsed by the field's type) or a
    mapping of values that arrived typed (a suite file's TOML, a tuning trial), checked the same way."""
    return dict(sets) if isinstance(sets, dict) else parse_sets(sets or [])


def apply_sets(
    sections: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Route each override to the one section (method/task/train) that has the key.

    ``section.key=value`` addresses a section explicitly; a bare key must be
    unambiguous. A string value is parsed as `--set` parses it; a typed one (TOML,
    JSON) is checked by the same parser (``parse_typed``). Returns new config instances.
    """
    changes: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, raw in overrides.items():
        section, _, bare = key.rpartition(".")
        if section:
            if section not in sections:
                raise ConfigError(f"--set {key}: unknown section {section!r}", f"use one of {', '.join(sections)}")
            candidates = [section] if bare in field_types(type(sections[section])) else []
        else:
            candidates = [name for name, cfg in sections.items() if bare in field_types(type(cfg))]
        if not candidates:
            valid = sorted({f"{name}.{f}" for name, cfg in sections.items() for f in field_types(type(cfg))})
            raise ConfigError(f"unknown setting {key!r}", f"valid keys: {', '.join(valid)}")
        if len(candidates) > 1:
            raise ConfigError(
                f"setting {bare!r} exists in {' and '.join(candidates)}",
                f"write {' or '.join(f'{c}.{bare}' for c in candidates)}",
            )
        target = candidates[0]
        annotation = field_types(type(sections[target]))[bare]
        changes[target][bare] = (parse_value(raw, annotation, key) if isinstance(raw, str)
                                 else parse_typed(raw, annotation, key))
    result = {}
    for name, cfg in sections.items():
        try:
            result[name] = dataclasses.replace(cfg, **changes[name])
        except (ValueError, TypeError) as exc:  # __post_init__ validation
            raise ConfigError(f"invalid {name} settings: {exc}") from None
    return result


def describe_fields(config_cls: type | None) -> list[tuple[str, str, str]]:
    """(name, type, default) rows for `peftbench list`."""
    if config_cls is None:
        return []
    hints = field_types(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        type_name = getattr(hints[f.name], "__name__", None) or str(hints[f.name]).replace("typing.", "")
        rows.append((f.name, type_name, repr(default)))
    return rows
