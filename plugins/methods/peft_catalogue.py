"""Every tuner type peft implements, as a method named after it (`ia3`, `loha`, `lokr`, `vera`,
`boft`, `prefix-tuning`, `prompt-tuning`, ...), plus LoRA's variants `dora`, `rslora`, `pissa` and
`olora`.

The list comes from peft itself (``peft.PeftType``), not from a copy of it: a peft release
that adds a tuner adds a method here. Each method's settings are its peft config
dataclass's fields that a command line can express (numbers, booleans, strings, choices,
lists of names), with peft's defaults, plus peftbench's ``lr`` and ``train_head``.
A type that cannot apply to the run's model (e.g. a decoder-only prompt method on an
encoder classifier) is refused with peft's own reason in one line.

LoRA itself is plugins/methods/lora_model.py (S1/S2's method, with its study defaults).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from peftbench.sdk import ConfigError, LoadedBackbone, Method, Stage, cache_root, write_json_atomic

from .learning_rates import peft_family
from .lora_model import is_quantized, peft_model

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

# Not settings: peftbench decides them (the model, the head, the task type) or they are bookkeeping.
DECIDED_BY_PEFTBENCH = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode",
                        "auto_mapping", "modules_to_save"}
TASK_TYPES = {"sequence-classification": "SEQ_CLS", "token-classification": "TOKEN_CLS"}
# A text generator's task type: prompt learners (prompt tuning, p-tuning, CPT) need one to know where
# virtual tokens go and how to generate with them.
GENERATION_TASK_TYPES = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
# LoRA variants peft selects with one LoraConfig setting (those needing data or quantisation, e.g.
# EVA, CorDA, LoftQ, are left out).
LORA_VARIANTS = {
    "dora": ({"use_dora": True}, "DoRA: LoRA with weight decomposition (magnitude + direction)"),
    "rslora": ({"use_rslora": True}, "rsLoRA: LoRA scaled by alpha/sqrt(r), stable at high ranks"),
    "pissa": ({"init_lora_weights": "pissa"}, "PiSSA: LoRA initialised from the principal singular vectors"),
    "olora": ({"init_lora_weights": "olora"}, "OLoRA: LoRA initialised by QR (orthonormal) decomposition"),
}


def command_line_type(hint: Any) -> Any | None:
    """The field's type as `--set` can parse it (lists become tuples); None: not expressible."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (int, float, bool, str) or origin is Literal:
        return hint
    if origin in (list, tuple) and args and args[0] in (int, str):
        return tuple[args[0], ...]
    if origin in (typing.Union, types.UnionType):
        members = [command_line_type(a) for a in args if a is not type(None)]
        if any(m is None for m in members):
            members = [m for m in members if m is not None and typing.get_origin(m) is tuple] or [None]
        if None in members:
            return None
        # "a,b" parses as a tuple of names, which also covers a single name (peft: list[str] | str).
        if any(typing.get_origin(m) is tuple for m in members):
            members = [m for m in members if m is not str and m is not int]
        unique = list(dict.fromkeys(members))
        kind = unique[0] if len(unique) == 1 else typing.Union[tuple(unique)]
        return kind | None if type(None) in args else kind
    return None


def _peft_value(value: Any) -> Any:
    """A `--set` value as peft takes it: names as a list, except peft's own wildcard "all-linear",
    which it only recognises as a plain string."""
    if isinstance(value, tuple):
        return "all-linear" if value == ("all-linear",) else list(value)
    return value


def field_default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def describe_type(kind: Any) -> Any:
    """A command-line type as JSON (for the catalogue cache)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return {"choices": list(args)}
    if origin is tuple:
        return {"names" if args[0] is str else "numbers": True}
    if origin in (typing.Union, types.UnionType):
        return {"any": [describe_type(a) for a in args if a is not type(None)], "none": type(None) in args}
    return kind.__name__


def rebuild_type(described: Any) -> Any:
    if isinstance(described, str):
        return {"int": int, "float": float, "bool": bool, "str": str}[described]
    if "choices" in described:
        return Literal[tuple(described["choices"])]
    if "names" in described or "numbers" in described:
        return tuple[str, ...] if "names" in described else tuple[int, ...]
    members = tuple(rebuild_type(a) for a in described["any"])
    kind = members[0] if len(members) == 1 else typing.Union[members]
    return kind | None if described["none"] else kind


def settings_class(name: str, fields: list, lr: float) -> type:
    """A frozen dataclass from catalogue fields ([name, described type, default]), plus lr (its
    family's default) and train_head."""
    rows = [(n, rebuild_type(kind), dataclasses.field(default=tuple(d) if isinstance(d, list) else d))
            for n, kind, d in fields]
    rows += [("lr", float, dataclasses.field(default=lr)), ("train_head", bool, dataclasses.field(default=True))]
    return dataclasses.make_dataclass(f"{name.title().replace('-', '')}Settings", rows, frozen=True)


def _catalogue_entry(peft_type: str, name: str, about: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """What listing and running a tuner need, from its peft config dataclass."""
    from peft import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING

    config_class = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    hints, fields = typing.get_type_hints(config_class), []
    for field in dataclasses.fields(config_class):
        kind = command_line_type(hints.get(field.name))
        default = overrides.get(field.name, field_default(field))
        if field.name == "num_virtual_tokens" and default is None:
            default = 20  # peft leaves it unset (required); 20 is what peft's own examples use
        if field.name in DECIDED_BY_PEFTBENCH or kind is None or field.name in ("lr", "train_head"):
            continue
        if default is None or isinstance(default, (int, float, str, list, tuple)):
            fields.append([field.name, describe_type(kind), list(default) if isinstance(default, tuple) else default])
    prompt = issubclass(config_class, PromptLearningConfig)
    return {"peft_type": peft_type, "name": name, "prompt_learning": prompt, "fields": fields,
            "quantized_base": prompt or _has_kbit_layers(peft_type),
            "prefix": PEFT_TYPE_TO_PREFIX_MAPPING.get(peft_type) or f"{peft_type.lower()}_",
            "description": about or f"peft {peft_type} ({'virtual tokens' if prompt else 'tuner layers'}) "
                                    f"+ trainable task head"}


def _has_kbit_layers(peft_type: str) -> bool:
    """Whether peft ships this tuner's layers for bitsandbytes' 4/8-bit linear layers (its ``bnb``
    module): only those can wrap a quantized base (a prompt tuner never touches the base's layers)."""
    import importlib.util

    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    package = PEFT_TYPE_TO_TUNER_MAPPING[peft_type].__module__.rsplit(".", 1)[0]
    return importlib.util.find_spec(f"{package}.bnb") is not None


def cached_catalogue(library: str, source_file: str, build: Callable[[], list[dict]]) -> list[dict[str, Any]]:
    """``build()`` (which imports ``library``) once per version of the library and of the plugin's
    ``source_file``; later calls read the cache folder, so listing methods imports neither it nor torch."""
    version = importlib.metadata.version(library)
    code = hashlib.sha256(Path(source_file).read_bytes()).hexdigest()[:12]
    path = cache_root() / f"{library}-{version}-methods-{code}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads(path.read_text(encoding="utf-8"))["methods"]
    entries = build()
    with contextlib.suppress(OSError):
        write_json_atomic(path, {"methods": entries})
    return entries


def tuner_entries() -> list[dict[str, Any]]:
    from peft import PeftType

    entries = [_catalogue_entry(t.value, t.value.lower().replace("_", "-"), None, {})
               for t in PeftType if t.value != "LORA"]  # LoRA itself: plugins/methods/lora_model.py
    return entries + [_catalogue_entry("LORA", name, f"{about} (peft) + trainable task head", overrides)
                      for name, (overrides, about) in LORA_VARIANTS.items()]


# Tuners peft injects as `past_key_values`. transformers 5's models name their cache otherwise and
# take **kwargs, so without this check a prefix would be dropped silently (a causal LM) or fail
# at the first step (an encoder).
PREFIX_TYPES = ("PREFIX_TUNING", "CARTRIDGE")
OWN_ATTENTION_TYPES = ("ADAPTION_PROMPT",)  # replaces the attention modules' forward with its own


def takes_past_key_values(model: torch.nn.Module) -> bool:
    import inspect

    return any("past_key_values" in inspect.signature(m.forward).parameters
               for m in (model, getattr(model, "base_model", model)))


class PeftTuner(Method):
    """One peft tuner type; what trains is what peft marks trainable, plus the task head."""

    libraries = ("peft",)

    def __init__(self, entry: dict[str, Any]) -> None:
        self.peft_type, self.name, self.prefix = entry["peft_type"], entry["name"], entry["prefix"]
        self.description, self.prompt_learning = entry["description"], entry["prompt_learning"]
        self.mergeable = None if self.prompt_learning else True
        self.quantized_base = entry["quantized_base"]
        # Virtual tokens or a prefix per row, or (adaption prompt) an attention of its own: a packed
        # row would share them across its examples. Every other tuner changes layers only.
        self.packed_batches = not self.prompt_learning and self.peft_type not in OWN_ATTENTION_TYPES
        family = peft_family(self.peft_type)
        self.lr_range = (family.low, family.high)
        self.Config = settings_class(self.name, entry["fields"], family.lr)
        names = {f.name for f in dataclasses.fields(self.Config)}  # the size setting, for --match-params
        size = "num_virtual_tokens" if self.prompt_learning else "r"
        # A config with an initial rank (AdaLoRA: init_r, target_r) ignores r, and its count is set
        # by two settings: no single size to match a budget with.
        self.capacity = (size, range(1, 1025)) if size in names and "init_r" not in names else None
        # LoRA's variants are one LoraConfig setting away from LoRA: the same family, compared by its settings.
        self.family = "lora" if self.peft_type == "LORA" else None

    def family_settings(self, config: Any) -> dict[str, Any]:
        if self.family != "lora":
            return {}
        target = config.target_modules
        return {"r": config.r, "alpha": float(config.lora_alpha), "dropout": float(config.lora_dropout),
                "target": ["auto"] if target is None else ([target] if isinstance(target, str) else list(target))}

    def prepare(self, loaded: LoadedBackbone, config: Any, stage: Stage, previous=None) -> torch.nn.Module:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

        settings = {k: _peft_value(v) for k, v in dataclasses.asdict(config).items() if k not in ("lr", "train_head")}
        scheduled = "total_step" in settings and settings["total_step"] is None
        if scheduled:  # AdaLoRA's schedule: the run's own update count, set at the first update
            settings["total_step"] = settings.get("tinit", 0) + settings.get("tfinal", 0) + 1
        task_type = TASK_TYPES.get(stage.head.kind) or GENERATION_TASK_TYPES.get(loaded.info.get("generation_format"))
        try:
            peft_config = PEFT_TYPE_TO_CONFIG_MAPPING[self.peft_type](
                **settings, **({"task_type": task_type} if task_type else {}),
                **({"modules_to_save": list(loaded.head_modules)} if config.train_head and not task_type else {}))
            if self.peft_type in PREFIX_TYPES and not takes_past_key_values(loaded.model):
                raise ValueError(f"it injects its prefixes as `past_key_values`, which {type(loaded.model).__name__} "
                                 f"does not take under transformers {importlib.metadata.version('transformers')}")
            if {"n_tasks", "num_tasks"} & settings.keys():
                raise ValueError("it needs a task id per example (multi-task prompts), which peftbench's tasks "
                                 "do not give")
            model = peft_model(loaded.model, peft_config)
            if not any(self.is_adapter_parameter(n) and p.requires_grad and p.numel()
                       for n, p in model.named_parameters()):
                raise ValueError("it added no trainable parameters with these settings")
        except (ValueError, TypeError, NotImplementedError, AttributeError, RuntimeError, KeyError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            dry_run = any(p.is_meta for p in loaded.model.parameters())
            if dry_run and any(word in reason for word in ("meta", "set_data", "copy out")):  # needs the weights
                raise ConfigError(f"{self.name} computes its initial weights from the backbone's, which a dry run "
                                  f"does not load", "run it without --dry-run to count its parameters") from None
            raise ConfigError(f"peft cannot apply {self.name} to {type(loaded.model).__name__}: {reason}",
                              "change its settings (`peftbench list` shows them) or pick another method") from None
        if not self.prompt_learning and not any(p.is_meta for p in model.parameters()):
            # Recorded with the inference times: True only where merged inference will be timed.
            self.mergeable = _merges_and_unmerges(model)
        _freeze_bookkeeping(model)
        model._peftbench_total_step_from_schedule = scheduled
        if task_type and not config.train_head:  # peft trains the classifier of SEQ_CLS/TOKEN_CLS models itself
            for name, param in model.named_parameters():
                if set(loaded.head_modules).intersection(name.split(".")):
                    param.requires_grad_(False)
        return model

    def after_update(self, model: torch.nn.Module, update: int, total_updates: int) -> None:
        """Tuners that reallocate as they train (AdaLoRA's ranks) do it here, as peft asks: after
        each optimizer step, before the gradients are cleared."""
        base = model.base_model
        if not hasattr(base, "update_and_allocate"):
            return
        if update == 1 and getattr(model, "_peftbench_total_step_from_schedule", False):
            tuner = base.peft_config[base.trainable_adapter_name]
            if total_updates <= tuner.tinit + tuner.tfinal:
                raise ConfigError(f"{self.name}: tinit + tfinal = {tuner.tinit + tuner.tfinal} leaves none of the "
                                  f"run's {total_updates} updates for reallocating ranks",
                                  "lower tinit/tfinal or train longer")
            base.rankallocator.set_total_step(total_updates)
        base.update_and_allocate(update)

    def is_adapter_parameter(self, name: str) -> bool:
        return self.prefix in name or "prompt_encoder" in name

    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        if any(p.is_meta for p in model.parameters()):  # a dry run: peft cannot copy prompts out of meta
            return {n: p for n, p in model.named_parameters() if p.requires_grad}
        return get_peft_model_state_dict(model)

    def save(self, model: torch.nn.Module, directory: str) -> None:
        model.save_pretrained(directory, safe_serialization=True)
        (Path(directory) / "README.md").unlink(missing_ok=True)  # peft's boilerplate model card

    @contextlib.contextmanager
    def inference_modes(self, model: torch.nn.Module) -> Iterator[Iterator[str]]:
        def modes() -> Iterator[str]:
            yield "unmerged"
            if self.mergeable and not is_quantized(model):  # see lora.inference_modes
                model.merge_adapter()
                yield "merged"

        try:
            yield modes()
        finally:  # layer by layer: some tuners (OSF) refuse unmerging at the model level only
            for layer in _tuner_layers(model):
                if layer.merged:
                    layer.unmerge()


def _tuner_layers(model: torch.nn.Module) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def _freeze_bookkeeping(model: torch.nn.Module) -> None:
    """peft keeps some per-layer values that never train as Parameters (AdaLoRA's ranknum, listed in
    the layer's other_param_names); on the meta device of a dry run it re-creates them trainable."""
    import torch

    for layer in _tuner_layers(model):
        for attribute in getattr(layer, "other_param_names", ()):
            values = getattr(layer, attribute, None)
            if isinstance(values, torch.nn.ParameterDict):
                for param in values.values():
                    param.requires_grad_(False)


def _merges_and_unmerges(model: torch.nn.Module) -> bool:
    """Whether this tuner's layers merge and unmerge (a few peft tuners, e.g. Lily and OSF, cannot do
    one or the other), tried on a copy of one layer so the model itself is never left merged."""
    import copy

    layers = _tuner_layers(model)
    if not layers:
        return False
    probe = copy.deepcopy(layers[0])
    try:
        probe.merge()
        probe.unmerge()
    except NotImplementedError:
        return False
    return not probe.merged
