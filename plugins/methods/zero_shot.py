"""The untrained base as a row: ``zero-shot`` evaluates a backbone's own language-model output with
nothing trained, recorded like any run, so a decoder table shows what the base model already does
(and the "did not learn" test can be asked against it as well as against the majority floor).

It needs a task the pre-trained model can answer as it is: a text-generation head (GSM8K, instruction
SFT, or any classification task with ``--set as_generation=true``, scored by the label words'
log-likelihood and by generation); a new classification head would be random weights, so that is
refused in one line. Nothing is saved: the artefact is empty.

``few-shot`` is the same with ``shots`` examples of the training split (drawn with ``shot_seed``)
shown before every prompt, answers included, as lm-evaluation-harness's ``num_fewshot`` does; the
task renders them (a chat model sees them as earlier turns).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftbench.sdk import ConfigError, LoadedBackbone, Method, Splits, Stage, Task, hookimpl, load_splits

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


@dataclass(frozen=True)
class FewShotConfig:
    shots: int = 5
    shot_seed: int = 1  # which training examples are shown

    def __post_init__(self) -> None:
        if self.shots < 1:
            raise ValueError(f"shots must be >= 1, got {self.shots}")


class Demonstrated(Task):
    """The run's task, loading its data as usual and then, bound to the backbone, showing ``shots``
    of its training examples before every prompt."""

    def __init__(self, inner: Task, config: FewShotConfig) -> None:
        self.inner, self.config, self.shown = inner, config, []
        self.name, self.metadata, self.Config, self.libraries = inner.name, inner.metadata, inner.Config, inner.libraries

    def load(self, config: Any) -> Splits:
        splits = load_splits(self.inner, config)  # the task's own (cached) data; the draw below runs every time
        if len(splits.train) < self.config.shots:
            raise ConfigError(f"shots={self.config.shots} but the training split has {len(splits.train)} examples",
                              "lower shots")
        self.shown = random.Random(self.config.shot_seed).sample(list(splits.train), self.config.shots)
        return splits

    def for_backbone(self, loaded: LoadedBackbone) -> Task:
        shown = self.inner.for_backbone(loaded).with_demonstrations(self.shown)
        if shown is None:
            raise ConfigError(f"task {self.inner.name} cannot show examples in its prompt",
                              "use zero-shot, or a text-generation task (gsm8k, instruction-sft, as_generation=true)")
        return shown

    def head(self, config: Any):
        return self.inner.head(config)

    def data_files(self, config: Any):
        return ()  # not cached as a whole: `load` draws the shown examples each run
    def encode(self, examples, tokenizer, config):  # only ever called on the bound task
        raise ConfigError("few-shot encodes through its backbone-bound task")

    def decode(self, logits, batch, config):
        raise ConfigError("few-shot decodes through its backbone-bound task")

    def score(self, predictions: list, references: list, config: Any) -> dict[str, float]:
        return self.inner.score(predictions, references, config)


class FewShot(ZeroShot):
    name = "few-shot"
    description = "the base model as it is, `shots` training examples in every prompt (text-generation tasks)"
    Config = FewShotConfig

    def stages(self, task: Task, task_config: Any, config: FewShotConfig, backbone=None) -> list[Stage]:
        return [Stage("finetune", task.head(task_config), objective=Demonstrated(task, config))]


@hookimpl
def register_methods(register) -> None:
    register(ZeroShot())
    register(FewShot())
