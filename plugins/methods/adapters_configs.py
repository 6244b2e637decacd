"""Every configuration AdapterHub's `adapters` library names, as a method `adapters-<name>`:
Compacter, prefix tuning, prompt tuning, IA3, LoRA, DoRA, VeRA, LoReFT / NoReFT / DiReFT,
MAM, UniPELT, parallel and invertible bottleneck adapters, ...

The list is the library's own (``adapters.ADAPTER_CONFIG_MAP``; aliases of an identical
configuration, such as `pfeiffer` and `seq_bn`, appear once); the `adapters-` prefix keeps
them apart from peft's methods of the same name. Settings are the configuration
dataclass's fields a command line can express, with the library's defaults, plus `lr`
and `train_head`; read once per library version and cached, like peft's tuners. Where the library
is not installed (it comes with the extra `peftbench[adapters]`), the list is read from the snapshot
beside this file, so the methods still appear and a run of one says what to install. Only the
library's modules and the head train. LoRA, IA3 and VeRA merge into the weights for
inference (timed both ways); the others are timed unmerged.

`adapter` (plugins/methods/bottleneck.py) is S1/S2's bottleneck method with its study settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from peftbench.sdk import ConfigError, LoadedBackbone, Stage, hookimpl, is_installed

from .bottleneck import BottleneckAdapter, set_head_trainable
from .learning_rates import adapters_family
from .peft_catalogue import cached_catalogue, command_line_type, describe_type, field_default, settings_class

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

ADAPTER_NAME = "peftbench_task"
SNAPSHOT = Path(__file__).with_name("adapters_catalogue.json")  # _config_entries() of adapters 1.3.0
# Merged into the weights for inference: the LoRA family, except where the library's merge is not
# exact (adapters 1.3: DoRA and DVoRA change the logits when merged, MTL-LoRA's merge fails);
# tests/test_adapters_configs.py checks merged against unmerged logits for these.
EXACT_MERGES = ("LoRAConfig", "IA3Config", "VeraConfig")


def _entry(key: str, config: Any) -> dict[str, Any]:
    # A combination of configurations (MAM, UniPELT) is no dataclass: it runs with the library's settings.
    parts = dataclasses.fields(config) if dataclasses.is_dataclass(config) else ()
    hints, fields = typing.get_type_hints(type(config)) if parts else {}, []
    for field in parts:
        kind, default = command_line_type(hints.get(field.name)), getattr(config, field.name, field_default(field))
        if kind is not None and field.name not in ("lr", "train_head", "architecture") and (
                default is None or isinstance(default, (int, float, str, list, tuple))):
            fields.append([field.name, describe_type(kind), list(default) if isinstance(default, tuple) else default])
    name = "adapters-" + key.replace("++", "pp").replace("+", "-").replace("_", "-")
    return {"key": key, "name": name, "fields": fields, "merges": type(config).__name__ in EXACT_MERGES,
            "config_class": type(config).__name__,
            "description": f"adapters library config {key!r} ({type(config).__name__}) + trainable task head"}


def _config_entries() -> list[dict[str, Any]]:
    from adapters import ADAPTER_CONFIG_MAP

    entries, seen = [], []
    for key, config in ADAPTER_CONFIG_MAP.items():
        identity = (type(config).__name__, config.to_dict())
        if identity not in seen:  # not an alias of a configuration already listed
            seen.append(identity)
            entries.append(_entry(key, config))
    return entries


class AdaptersConfig(BottleneckAdapter):
    """One named configuration of the `adapters` library (artefact and files as `adapter`'s)."""

    adapter_name = ADAPTER_NAME

    def __init__(self, entry: dict[str, Any]) -> None:
        self.key, self.name, self.description = entry["key"], entry["name"], entry["description"]
        self.mergeable = bool(entry["merges"])
        family = adapters_family(entry["config_class"])
        self.lr_range = (family.low, family.high)
        self.Config = settings_class(self.name, entry["fields"], family.lr)
        names = {f.name for f in dataclasses.fields(self.Config)}
        size = next((s for s in ("r", "prefix_length", "prompt_length") if s in names), None)
        self.capacity = (size, range(1, 1025)) if size else None

    def prepare(self, loaded: LoadedBackbone, config: Any, stage: Stage, previous=None) -> torch.nn.Module:
        import adapters
        from adapters import ADAPTER_CONFIG_MAP

        logging.getLogger("adapters").setLevel(logging.ERROR)  # its notices would bury peftbench's output
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
                    if k not in ("lr", "train_head")}
        model = loaded.model
        try:
            adapters.init(model)
            library_config = ADAPTER_CONFIG_MAP[self.key]
            model.add_adapter(self.adapter_name,
                              config=library_config.replace(**settings) if settings else library_config)
            model.train_adapter(self.adapter_name)  # freezes the encoder, activates the adapter
        except (ValueError, TypeError, AssertionError, AttributeError, KeyError, NotImplementedError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(f"adapters cannot apply {self.name} to {type(model).__name__}: {reason}",
                              "change its settings (`peftbench list` shows them) or pick another method") from None
        set_head_trainable(model, loaded, config.train_head)
        return model

    def is_adapter_parameter(self, name: str) -> bool:
        return f".{self.adapter_name}." in name  # in any of the library's containers (adapters, loras, refts...)

    @contextlib.contextmanager
    def inference_modes(self, model: torch.nn.Module) -> Iterator[Iterator[str]]:
        merged = []

        def modes() -> Iterator[str]:
            yield "unmerged"
            if self.mergeable:
                model.merge_adapter(self.adapter_name)
                merged.append(True)
                yield "merged"

        try:
            yield modes()
        finally:
            if merged:
                model.reset_adapter()  # back to the unmerged, trainable form


def catalogue() -> list[dict[str, Any]]:
    if is_installed("adapters"):
        return cached_catalogue("adapters", __file__, _config_entries)
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))["methods"]


@hookimpl
def register_methods(register) -> None:
    for entry in catalogue():
        register(AdaptersConfig(entry))
