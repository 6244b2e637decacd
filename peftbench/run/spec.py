"""What defines a run: the typed RunSpec, and how names + `--set` pairs resolve into one.

A RunSpec names the components and holds their resolved settings; its hash is
the run's identity (a suite skips a run whose hash already has a successful
record). It crosses process and machine boundaries as one JSON object
(``to_json`` / ``load_spec``), never as strings parsed again on the other side.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..api import Backbone, Method, Task
from ..config import TrainConfig, apply_sets, config_hash, overrides_of
from ..errors import ConfigError
from ..components.installed import require_installed
from ..components.plugins import Components
from ..records.record import Budget

SPEC_FORMAT = "peftbench.run-spec/1"


@dataclass(frozen=True)
class TuningSpec:
    """How a suite's tuning made a run: a trial of a study, or one of its finals. Written into the
    run spec (which crosses processes as JSON) and, without ``storage``, into the record. Made by
    ``tuned_suite`` from the suite's ``TuneSettings``, where every default lives."""

    role: Literal["trial", "final"]
    study: str
    trial: int  # the Optuna trial number (a final: the chosen trial's)
    trials: int  # the study's budget
    metric: str  # the dev score the study optimises
    sampler: str
    pruner: str
    space: dict[str, str]  # setting -> its search space, described
    tuned: list[str]
    chosen: dict[str, Any]  # the trial's settings
    selected_on: str = "dev"
    # a trial's: where to report its epochs (the storage URL may hold a password: never recorded)
    trial_id: int | None = None
    epochs: int | None = None
    storage: str | None = None
    # a final's: what the study found
    dev_value: float | None = None
    trials_complete: int | None = None
    trials_pruned: int | None = None
    trials_failed: int | None = None
    tied_with: list[int] | None = None  # other trials with the chosen one's dev score
    tie_rule: str | None = None  # how the tie was broken (where there was one)

    def to_json(self, storage: bool = True) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and (storage or k != "storage")}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "TuningSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise ConfigError(f"{where}: tuning must be an object with keys among {', '.join(sorted(names))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{where}: tuning: {exc}") from None


@dataclass(frozen=True)
class RunSpec:
    method: str
    task: str
    backbone: str
    method_config: Any  # the method's frozen Config dataclass
    task_config: Any  # the task's frozen Config dataclass
    train: TrainConfig = field(default_factory=TrainConfig)
    budget: Budget | None = None  # set by --match-params; its choice is already in method_config
    # Set by a suite's tuning: the run's role (trial or final), its study and trial. Not part of the
    # hash: a run's settings define it; this only says how they were chosen.
    tuning: TuningSpec | None = field(default=None, compare=False)

    @property
    def seed(self) -> int:
        return self.train.seed

    def config_dict(self) -> dict[str, Any]:
        """The settings that define the run (recorded as ``config``; the hash's input)."""
        return {
            "method": self.method,
            "task": self.task,
            "backbone": self.backbone,
            "method_config": dataclasses.asdict(self.method_config),
            "task_config": dataclasses.asdict(self.task_config),
            "train": dataclasses.asdict(self.train),
        }

    @functools.cached_property
    def hash(self) -> str:
        """Stable across runs and machines: the identity a suite uses to skip done runs."""
        identity = self.config_dict()
        defaults = TrainConfig()
        for name in TrainConfig.HASH_OMITS_AT_DEFAULT:
            if getattr(self.train, name) == getattr(defaults, name):
                del identity["train"][name]
        for name in TrainConfig.HASH_OMITS:
            del identity["train"][name]
        # A plugin's settings added after its runs were recorded: left out at their default, likewise.
        for section, config in (("method_config", self.method_config), ("task_config", self.task_config)):
            for name in getattr(config, "HASH_OMITS_AT_DEFAULT", ()):
                default = next(f.default for f in dataclasses.fields(config) if f.name == name)
                if getattr(config, name) == default:
                    del identity[section][name]
        return config_hash(identity)

    def to_json(self) -> dict[str, Any]:
        budget = dataclasses.asdict(self.budget) if self.budget else None
        return {"format": SPEC_FORMAT, **self.config_dict(), "budget": budget,
                "tuning": self.tuning.to_json() if self.tuning else None,
                "config_hash": self.hash}


@dataclass
class Resolved:
    """A spec together with the components it names."""

    spec: RunSpec
    method: Method
    task: Task
    backbone: Backbone

    def __post_init__(self) -> None:
        # Listed without its libraries (e.g. an extra not installed); running it is refused here.
        for kind, component in (("method", self.method), ("task", self.task), ("backbone", self.backbone)):
            require_installed(component, kind)
        quantize = self.spec.train.quantize
        if self.spec.train.quantized and not getattr(self.method, "quantized_base", False):
            raise ConfigError(f"method {self.spec.method} cannot train on a {quantize} quantized base (it would "
                              "update or wrap base weights that are frozen in k bits)",
                              "use a method that supports it (`peftbench list` marks them [k-bit base]) "
                              "or drop quantize")
        if self.spec.train.packing:
            self._check_packing()
        if self.spec.train.quantized and not getattr(self.backbone, "quantizes", False):
            raise ConfigError(f"backbone {self.spec.backbone} cannot load a quantized base",
                              "use a Hugging Face checkpoint, or drop quantize")

    def _check_packing(self) -> None:
        if not getattr(self.task, "packs", False):
            raise ConfigError(f"task {self.spec.task} does not pack its batches",
                              "drop packing (group_by_length=true also cuts padding)")
        if not getattr(self.method, "packed_batches", False):
            raise ConfigError(f"method {self.spec.method} cannot take packed batches (it adds tokens or states "
                              "per row, or its own attention, so examples in one row would mix)",
                              "drop packing (group_by_length=true also cuts padding)")


def resolve(components: Components, method: str, task: str, backbone: str | None = None,
            sets: list[str] | dict[str, Any] | None = None) -> Resolved:
    """Names + settings (`--set` pairs, or typed values from a suite file) -> a validated RunSpec and
    the components it names."""
    method_obj = components.resolve_method(method)
    task_obj = components.tasks.get(task)
    backbone_name = backbone or task_obj.metadata.default_backbone
    backbone_obj = components.resolve_backbone(backbone_name)
    sections = apply_sets(
        {"method": method_obj.default_config(), "task": task_obj.default_config(), "train": TrainConfig()},
        overrides_of(sets),
    )
    spec = RunSpec(method, task, backbone_name, sections["method"], sections["task"], sections["train"])
    return Resolved(spec, method_obj, task_obj, backbone_obj)


# ------------------------------------------------------------------ the JSON form


@functools.lru_cache(maxsize=None)
def _setting_names(config_cls: type) -> frozenset[str]:
    return frozenset(typing.get_type_hints(config_cls))


def config_from_dict(config_cls: type, values: dict[str, Any], where: str) -> Any:
    """A Config dataclass from its JSON form (lists back to tuples), validated by its own checks."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be an object, got {type(values).__name__}")
    hints = _setting_names(config_cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting", f"valid keys: {', '.join(sorted(hints))}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return config_cls(**converted)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def resolve_json(components: Components, data: dict[str, Any], where: str = "spec") -> Resolved:
    """The inverse of ``RunSpec.to_json``: a spec written by this or another process."""
    if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
        raise ConfigError(f"{where} is not a peftbench run spec ({SPEC_FORMAT})",
                          "write it with `peftbench suite run` or RunSpec.to_json")
    missing = [k for k in ("method", "task", "backbone", "method_config", "task_config", "train") if k not in data]
    if missing:
        raise ConfigError(f"{where} has no {', '.join(missing)}", "write the spec again with `peftbench suite run`")
    if data.get("budget") is not None and (not isinstance(data["budget"], dict)
                                           or set(data["budget"]) != {f.name for f in dataclasses.fields(Budget)}):
        raise ConfigError(f"{where}: budget must hold {', '.join(f.name for f in dataclasses.fields(Budget))}")
    method_obj = components.resolve_method(data["method"])
    task_obj = components.tasks.get(data["task"])
    spec = RunSpec(
        data["method"], data["task"], data["backbone"],
        config_from_dict(method_obj.Config, data["method_config"], f"{where}: method_config"),
        config_from_dict(task_obj.Config, data["task_config"], f"{where}: task_config"),
        config_from_dict(TrainConfig, data["train"], f"{where}: train"),
        Budget(**data["budget"]) if data.get("budget") else None,
        TuningSpec.from_json(data["tuning"], where) if data.get("tuning") is not None else None,
    )
    if data.get("config_hash") not in (None, spec.hash):
        raise ConfigError(f"{where}: its settings hash to {spec.hash}, not the {data['config_hash']} it names",
                          "the spec was edited or written by another peftbench version; write it again")
    return Resolved(spec, method_obj, task_obj, components.resolve_backbone(data["backbone"]))


def load_spec(components: Components, path: Path) -> Resolved:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read run spec {path} ({exc})") from None
    return resolve_json(components, data, str(path))
