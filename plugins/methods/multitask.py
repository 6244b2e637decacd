"""Multi-task fine-tuning with a cheap auxiliary task built from the training data (study S5).

One shared encoder, the main task's own head, one auxiliary head; the loss is
main + aux_weight * auxiliary. Auxiliary targets come from the same training
documents as the main batch (they ride in it as extra per-token fields), so
every step sees both tasks. The main task alone is evaluated, decides early
stopping and model selection, and is the only one scored; the auxiliary head
trains but is never part of the artefact (its size is recorded as
``params.auxiliary`` and ``artifact.auxiliary_tensor_bytes``).

Auxiliary tasks:
- ``ngram``: token n-gram recognition, BIO tagging of frequent sub-word
  n-grams under one of four labelling schemes (plugins/ngrams.py);
- ``rtm``: masked-LM with random token masking (BERT's 15%, 80/10/10), the
  S5 baseline;
- ``l3masking``: masked-LM whose per-token masking probabilities come from the
  vanilla MLM's pseudo-likelihoods (plugins/l3masking.py).
STL, the other S5 baseline, is the inner method on its own (e.g. `full`).

Methods: ``mtl-<aux>+<method>`` trains any method (LoRA, IA3, a method from
another package, ...) on the shared encoder; ``mtl-<aux>`` (S5's name) fine-tunes
the whole encoder, and ``mtl-<aux>-lora`` / ``mtl-<aux>-adapter`` are the older
names of ``mtl-<aux>+lora`` / ``mtl-<aux>+adapter``. Settings: the inner
method's plus ``aux_weight`` and the auxiliary task's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field, make_dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Sequence

import typer

from peftbench.sdk import (CommandContext, ConfigError, Example, HeadSpec, LoadedBackbone, Method, MethodWrapper,
                           Splits, Stage, Task, hookimpl, load_splits)

from . import ngrams
from .auxiliary import Auxiliary
from .auxiliary_tasks import TRAIN_MARK, MaskedLanguageModelling, NgramRecognition
from .bottleneck import BottleneckAdapter
from .full_model import FullFineTuning
from .lora_model import Lora

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch
    from torch import nn


class MultiTaskObjective(Task):
    """The main task, unchanged for evaluation, whose training examples also carry auxiliary targets."""

    def __init__(self, task: Task, auxiliary: Auxiliary) -> None:
        self.task, self.auxiliary = task, auxiliary
        self.name = task.name
        self.description = f"{task.name} + auxiliary {auxiliary.name}"
        self.Config = task.Config
        self.metadata = task.metadata
        self.extra_batch_keys = task.extra_batch_keys

    def head(self, config: Any) -> HeadSpec:
        return self.task.head(config)

    def load(self, config: Any) -> Splits:
        splits = load_splits(self.task, config)
        self.auxiliary.bind(self.task, splits.train, config)
        train = [{**ex, TRAIN_MARK: True} for ex in splits.train]
        return Splits(train, splits.dev, splits.test, dict(splits.info, auxiliary=self.auxiliary.name))

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Any) -> list[dict]:
        is_train = bool(examples) and all(ex.get(TRAIN_MARK) for ex in examples)
        plain = [{k: v for k, v in ex.items() if k != TRAIN_MARK} for ex in examples]
        encoded = self.task.encode(plain, tokenizer, config)
        if is_train:
            self.auxiliary.annotate(encoded, tokenizer)
        return encoded

    def collator(self, tokenizer: Any, config: Any, padding: str = "longest"):
        import torch

        main_collate = self.task.collator(tokenizer, config, padding)
        auxiliary = self.auxiliary
        left = getattr(tokenizer, "padding_side", "right") == "left"

        def collate(features: list[dict]) -> dict:
            present = [f for f in auxiliary.fields if f in features[0]]
            batch = main_collate([{k: v for k, v in ex.items() if k not in auxiliary.fields} for ex in features])
            width = batch["input_ids"].shape[1]
            for name, pad in zip(auxiliary.fields, auxiliary.pad_values):
                if name not in present:
                    continue
                rows = [[pad] * (width - len(ex[name])) + list(ex[name]) if left else
                        list(ex[name]) + [pad] * (width - len(ex[name])) for ex in features]
                batch[name] = torch.tensor(rows, dtype=torch.float32 if isinstance(pad, float) else torch.long)
            auxiliary.collate(batch, tokenizer)
            return batch

        return collate

    def decode(self, logits, batch, config):
        return self.task.decode(logits, batch, config)

    def score(self, predictions, references, config):
        return self.task.score(predictions, references, config)

    def encoding_report(self, examples, encoded, config):
        return self.task.encoding_report(examples, encoded, config)

    def text(self, example: Example) -> str:
        return self.task.text(example)

    def cache_key(self, config: Any) -> dict[str, Any]:
        return {"main": self.task.cache_key(config), "auxiliary": self.auxiliary.cache_key()}


# --------------------------------------------------------------------------- method

AUXILIARY_FIELDS: dict[str, list[tuple[str, Any, Any]]] = {
    "ngram": [
        ("scheme", Literal["all-phrase", "disregard", "common-label", "bit-label"], "all-phrase"),
        ("merges", int, 1000),  # BPE merges over the training split's sub-word ids
        ("min_frequency", int, 5),  # a pair must occur this often to be merged
        ("class_min_count", int, 1),  # an n-gram occurs in a class when in this many of its documents
    ],
    "rtm": [("mask_rate", float, 0.15)],
    "l3masking": [("mask_rate", float, 0.15), ("pll_batch_size", int, 16)],
}


def _auxiliary_fields(aux: str) -> list[tuple[str, Any, Any]]:
    return [("aux_weight", float, 1.0), *AUXILIARY_FIELDS[aux]]


def _config_class(inner: type, aux: str, name: str) -> type:
    def __post_init__(self) -> None:
        if hasattr(inner, "__post_init__"):
            inner.__post_init__(self)
        if not self.aux_weight >= 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")
        if hasattr(self, "mask_rate") and not 0 < self.mask_rate < 1:
            raise ValueError(f"the target mask rate must be in (0, 1), got mask_rate={self.mask_rate}")
        if aux == "ngram" and (self.merges < 1 or self.min_frequency < 1 or self.class_min_count < 1):
            raise ValueError("merges, min_frequency and class_min_count must be >= 1")
        if getattr(self, "pll_batch_size", 1) < 1:
            raise ValueError("pll_batch_size must be >= 1")

    fields = _auxiliary_fields(aux)
    clash = sorted({f.name for f in dataclasses.fields(inner)} & {n for n, _, _ in fields})
    if clash:
        raise ConfigError(f"{name}: the method's own settings {', '.join(clash)} clash with the auxiliary task's",
                          "rename those settings in the method's plugin")
    return make_dataclass(f"Mtl{aux.title()}{inner.__name__}", [(n, t, field(default=d)) for n, t, d in fields],
                          bases=(inner,), frozen=True, namespace={"__post_init__": __post_init__})


class MultiTask(Method):
    def __init__(self, inner: Method, aux: str, name: str | None = None) -> None:
        self.inner, self.aux = inner, aux
        self.name = name or (f"mtl-{aux}" if isinstance(inner, FullFineTuning) else f"mtl-{aux}-{inner.name}")
        self.description = {
            "ngram": "multi-task: + token n-gram recognition (BIO tags of BPE-merged sub-word n-grams)",
            "rtm": "multi-task: + masked-LM with random token masking (S5's RTM baseline)",
            "l3masking": "multi-task: + masked-LM masking what the vanilla MLM finds hard (L3Masking)",
        }[aux] + ("" if isinstance(inner, FullFineTuning) else f"; {inner.name} on the shared encoder")
        self.Config = _config_class(inner.Config, aux, self.name)
        self.capacity = inner.capacity
        self.libraries = (*inner.libraries, *(("tokenizers",) if aux == "ngram" else ()))

    @property
    def mergeable(self) -> bool | None:  # the inner method's, as known once it has prepared a model
        return self.inner.mergeable

    def stages(self, task: Task, task_config: Any, config: Any, backbone=None) -> list[Stage]:
        if backbone is None:
            raise ConfigError(f"{self.name} needs the run's backbone", "call stages(..., backbone=...)")
        kind = task.head(task_config).kind
        if kind not in ("sequence-classification", "token-classification"):
            raise ConfigError(f"{self.name} trains an encoder for classification or tagging; task {task.name} "
                              f"needs a {kind} model", "use a plain method (full, lora, adapter) for this task")
        auxiliary = NgramRecognition(config, backbone) if self.aux == "ngram" else \
            MaskedLanguageModelling(config, backbone, self.aux)
        objective = MultiTaskObjective(task, auxiliary)
        return [Stage("finetune", task.head(task_config), objective=objective)]

    def prepare(self, loaded: LoadedBackbone, config: Any, stage: Stage, previous=None) -> nn.Module:
        main = self.inner.prepare(loaded, config, stage)
        auxiliary = stage.objective.auxiliary
        head = auxiliary.head(main, loaded)
        from .multitask_model import MultiTaskModel

        return MultiTaskModel(main, auxiliary, head, config.aux_weight)

    def learning_rate(self, config: Any, stage: Stage) -> float:
        return self.inner.learning_rate(config, stage)

    def is_adapter_parameter(self, name: str) -> bool:
        return self.inner.is_adapter_parameter(name)

    def is_auxiliary_parameter(self, name: str) -> bool:
        return name.startswith("aux.")

    def after_update(self, model: nn.Module, update: int, total_updates: int) -> None:
        self.inner.after_update(model.main, update, total_updates)

    def search_space(self, config):
        return self.inner.search_space(config)  # what tunes is the wrapped method's

    def artifact_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return self.inner.artifact_tensors(model.main)

    def auxiliary_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if self.is_auxiliary_parameter(n)}

    def save(self, model: nn.Module, directory: str) -> None:
        self.inner.save(model.main, directory)

    def inference_modes(self, model: nn.Module):
        return self.inner.inference_modes(model.main)


@hookimpl
def register_methods(register) -> None:
    for aux in ("ngram", "rtm", "l3masking"):
        for inner in (FullFineTuning(), Lora(), BottleneckAdapter()):
            register(MultiTask(inner, aux))


class MultiTaskWrapper(MethodWrapper):
    """``mtl-<aux>+<method>``: any single-stage method, plus the auxiliary task."""

    def __init__(self, aux: str) -> None:
        self.aux, self.prefix = aux, f"mtl-{aux}"
        self.description = f"{MultiTask(FullFineTuning(), aux).description}; the method trains the shared encoder"
        self.Config = make_dataclass(f"Mtl{aux.title()}Settings", [(n, t, field(default=d))
                                                                   for n, t, d in _auxiliary_fields(aux)], frozen=True)

    def wrap(self, inner: Method) -> Method:
        name = f"{self.prefix}+{inner.name}"
        if type(inner).stages is not Method.stages:
            raise ConfigError(f"{name}: {inner.name} has training stages of its own; the multi-task loss wraps "
                              f"a single-stage method", f"wrap the method {inner.name} itself wraps")
        return MultiTask(inner, self.aux, name=name)


@hookimpl
def register_method_wrappers(register) -> None:
    for aux in AUXILIARY_FIELDS:
        register(MultiTaskWrapper(aux))


@hookimpl
def register_commands(app: typer.Typer, context: CommandContext) -> None:
    inspect_app = typer.Typer(no_args_is_help=True, help="Look at what peftbench builds from the data.")

    @inspect_app.command("ngrams")
    def ngrams_command(
        task: Annotated[str, typer.Option(help="the main task (its training split is used)")],
        backbone: Annotated[Optional[str], typer.Option(help="whose tokenizer splits the text")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="task and n-gram settings "
                                                          "(data_dir=, merges=, min_frequency=, scheme=, ...)")] = None,
        top: Annotated[int, typer.Option(help="n-grams shown per class")] = 10,
        order: Annotated[str, typer.Option(help="specific (share of the n-gram's documents in the class, then "
                                                "count) or count")] = "specific",
    ) -> None:
        """The n-grams `mtl-ngram` extracts: the top ones per class, with their type under the scheme."""
        import transformers
        from rich.console import Console
        from rich.table import Table


        transformers.logging.set_verbosity_error()
        if order not in ("specific", "count"):
            raise ConfigError(f"unknown --order {order!r}", "choose specific or count")
        resolved = context.resolve("mtl-ngram", task, backbone, list(set_ or []))
        cfg = resolved.spec
        (stage,) = resolved.method.stages(resolved.task, cfg.task_config, cfg.method_config, resolved.backbone)
        stage.objective.load(cfg.task_config)
        tokenizer = resolved.backbone.load(stage.head).tokenizer
        auxiliary = stage.objective.auxiliary
        table = auxiliary.table(tokenizer)
        scheme, minimum = cfg.method_config.scheme, cfg.method_config.class_min_count
        console = Console()
        console.print(f"{task}: {table.documents:,} training documents, {table.merges_made:,} merges "
                      f"(min_frequency {cfg.method_config.min_frequency}), {len(table.ngrams):,} n-grams in use; "
                      f"scheme {scheme}: {len(auxiliary.tag_labels(tokenizer)):,} BIO tags", highlight=False)
        for name, rows in ngrams.top_per_class(table, top, order).items():
            view = Table(title=f"class {name}", title_justify="left")
            for header in ("n-gram", "documents", "classes", f"type ({scheme})"):
                view.add_column(header)
            for ngram, count, classes in rows:
                index = table.ngrams.index(ngram)
                view.add_row(" ".join(tokenizer.convert_ids_to_tokens(list(ngram))), str(count),
                             ", ".join(table.class_names[k] for k in classes),
                             table.type_of(index, scheme, minimum) or "(untagged)")
            console.print(view)

    app.add_typer(inspect_app, name="inspect")
