"""The contracts a plugin implements: Method, Task and Backbone.

The core only ever talks to these interfaces; it never names a concrete
method, task or backbone.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Literal, Mapping, Sequence

if TYPE_CHECKING:  # annotations only: listing components must not pay for importing torch
    import torch

Example = dict[str, Any]
"""One raw example as a task loads it (e.g. ``{"text": ..., "label": 3}``)."""

Encoded = dict[str, Any]
"""One tokenised example: field -> int or list[int], unpadded."""


@dataclass(frozen=True)
class HeadSpec:
    """What the model on top of the encoder must output.

    ``kind`` is a model family understood by backbones, e.g.
    ``sequence-classification``, ``token-classification``, ``masked-lm``.
    """

    kind: str
    labels: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Stage:
    """One training phase of a method (most methods have exactly one).

    ``objective`` replaces the run's task for this stage (e.g. masked-LM
    pre-training on the task's text before fine-tuning); ``train_overrides``
    replaces TrainConfig fields for this stage only (epochs, batch_size,
    monitor, patience...).
    """

    name: str
    head: HeadSpec
    objective: "Task | None" = None
    train_overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExampleStatistics:
    """Additive per-example statistics of one score, so paired tests can rescore thousands of
    resamples fast: ``values`` has one row per example, and ``score(totals)`` maps the column
    sums of any resample (shape ``(k,)``) to the score, e.g. rows ``[correct, 1]`` and
    ``score = lambda t: t[0] / t[1]`` for accuracy."""

    values: Any  # numpy array, shape (examples, k)
    score: Callable[[Any], float]
    # optional, for speed: the scores of many resamples at once, (resamples, k) totals -> (resamples,)
    score_many: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class SearchSpace:
    """The values tuning may try for one setting: floats between ``low`` and ``high`` drawn
    ``log-uniform`` (learning rates) or ``uniform``, integers (``int``, ``log`` for sizes such as a
    rank), or one of ``choices``."""

    kind: Literal["log-uniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    log: bool = False  # for kind "int"

    def __post_init__(self) -> None:
        if self.kind not in ("log-uniform", "uniform", "int", "choice"):
            raise ValueError(f"kind {self.kind!r} is not one of log-uniform, uniform, int, choice")
        if self.kind == "choice":
            if not self.choices:
                raise ValueError("a choice space needs at least one value")
        elif self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError(f"a {self.kind} space needs low <= high, got {self.low}..{self.high}")
        elif self.kind == "log-uniform" and not self.low > 0:
            raise ValueError(f"a log-uniform space needs low > 0, got {self.low}")

    def describe(self) -> dict[str, Any]:
        """As recorded (``tuning.space``) and compared by the confound check."""
        if self.kind == "choice":
            return {"kind": self.kind, "choices": list(self.choices)}
        return {"kind": self.kind, "low": self.low, "high": self.high, **({"log": True} if self.log else {})}


@dataclass(frozen=True)
class TaskMetadata:
    kind: str  # e.g. "classification", "ner", "generation"
    language: str
    description: str
    main_score: str  # key of Task.score()'s result used for model selection
    corpus: str  # folder name under $PEFTBENCH_DATA
    source: str  # where users download the corpus
    license: str
    default_backbone: str
    labels: tuple[str, ...] = ()
    greater_is_better: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Splits:
    """Raw examples per split, plus what the loader wants users to know."""

    train: list[Example]
    dev: list[Example]
    test: list[Example]
    info: dict[str, Any] = field(default_factory=dict)

    def items(self) -> Iterator[tuple[str, list[Example]]]:
        yield from (("train", self.train), ("dev", self.dev), ("test", self.test))


class Component(ABC):
    """Something with a name and a frozen config dataclass."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type] = None  # a frozen dataclass; fields are `--set` keys
    libraries: ClassVar[tuple[str, ...]] = ()
    """Distributions this component runs on (e.g. ("peft",)): each run records their versions."""

    def default_config(self) -> Any:
        return self.Config()


class Task(Component):
    """A dataset + how to encode, decode and score it."""

    metadata: ClassVar[TaskMetadata]

    @abstractmethod
    def head(self, config: Any) -> HeadSpec:
        """The head a fine-tuning model needs (known without loading data)."""

    @abstractmethod
    def load(self, config: Any) -> Splits:
        """Read local data; raise DataError with a fix when it is missing or malformed."""

    @abstractmethod
    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Any) -> list[Encoded]:
        """Tokenise without padding (batches are padded dynamically)."""

    def collator(self, tokenizer: Any, config: Any, padding: str = "longest") -> Callable[[list[Encoded]], dict]:
        """Batch encoded examples. ``padding`` is "longest" (dynamic) or "max_length"."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, padding=padding, max_length=getattr(config, "max_length", None))

    extra_batch_keys: ClassVar[tuple[str, ...]] = ()
    """Batch fields for `decode` only; they are not passed to the model."""

    packs: ClassVar[bool] = False
    """Whether `packed_collator` can batch this task's training examples without padding
    (``--set packing=true``)."""

    def packed_collator(self, tokenizer: Any, config: Any) -> Callable[[list[Encoded]], dict]:
        """Training batches without padding: the same examples and the same loss as `collator`'s
        batches, several examples to a row, each kept to itself (e.g. by position ids that restart
        per example). Only for a task with ``packs``; evaluation batches always come from `collator`."""
        from .errors import ConfigError

        raise ConfigError(f"task {self.name} does not pack its batches", "drop packing")

    def largest_batch(self, config: Any, head: HeadSpec, batch_size: int, model_config: Any) -> dict[str, tuple]:
        """``{input: (shape, "long" | "float")}`` of the largest training batch this task feeds the model:
        every row at its longest input (``config.max_length``). Memory predictions trace a step on
        it; override where a batch holds more (choices, a decoder side)."""
        from .errors import ConfigError

        length = getattr(config, "max_length", None)
        if not isinstance(length, int):
            raise ConfigError(f"task {self.name} does not say how long its inputs can be (no max_length setting)",
                              "its plugin can say so in Task.largest_batch")
        rows = (batch_size, length)
        per_token = head.kind not in ("sequence-classification", "multiple-choice")
        label = "float" if head.kind == "sequence-classification" and head.num_labels == 1 else "long"
        return {"input_ids": (rows, "long"), "attention_mask": (rows, "long"),
                "labels": (rows if per_token else (batch_size,), label)}

    @abstractmethod
    def decode(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor], config: Any) -> tuple[list, list]:
        """Turn one batch of logits into (predictions, references)."""

    def predict(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor], logits: torch.Tensor,
                config: Any) -> tuple[list, list] | None:
        """Predictions that need the model itself (e.g. generated text), for the final dev/test
        scoring only; None (the default) means `decode` of the forward pass is enough. A task that
        generates reports ``generated_tokens`` in its scores, so the run records tokens/s."""
        return None

    def predicts_every_epoch(self, config: Any) -> bool:
        """True: the dev scoring after each epoch uses `predict` too (e.g. generation for exact
        match, at its cost), so model selection and early stopping see the final scores."""
        return False

    def for_backbone(self, loaded: "LoadedBackbone") -> "Task":
        """The task as it must encode/decode for this backbone (e.g. seq2seq vs causal LM).
        Called after the backbone is loaded, before encoding; the default is the task itself."""
        return self

    def with_demonstrations(self, examples: Sequence[Example]) -> "Task | None":
        """This (backbone-bound) task with ``examples`` from its training split shown before every
        prompt, answers included (few-shot prompting); None (the default): it cannot."""
        return None

    @abstractmethod
    def score(self, predictions: list, references: list, config: Any) -> dict[str, float]:
        """Scores for one split; must contain ``metadata.main_score``."""

    def example_statistics(self, predictions: list, references: list, config: Any,
                           score: str) -> ExampleStatistics | None:
        """Per-example statistics of ``score`` (a key of ``score()``'s result) for paired tests on
        the test examples. None (the default): those tests call ``score`` on every resample
        instead (the same numbers, slower)."""
        return None

    def trivial_predictions(self, references: list, config: Any) -> list | None:
        """What a model that learned nothing predicts for a split with these references: by default,
        for one label per example, the split's majority label everywhere (ties: the first seen).
        Its scores are the split's ``majority`` floor, and the report's "did not learn" test pairs a
        run's predictions with these. None: the task has no such predictor (no majority floor)."""
        import collections

        if not references or not all(isinstance(r, (int, str)) for r in references):
            return None
        majority = collections.Counter(references).most_common(1)[0][0]
        return [majority] * len(references)

    def chance_scores(self, references: list, config: Any) -> dict[str, float]:
        """The expected scores of a uniform random guess on a split with these references (e.g. 1/k
        accuracy over k classes); {} (the default): not defined for this task."""
        return {}

    def floors(self, references: list, config: Any) -> dict[str, dict[str, float]]:
        """A split's floors: ``{"majority": {score: value}, "chance": {score: value}}``, the scores
        a run must beat to have learned anything (recorded per split as ``floors``)."""
        trivial = self.trivial_predictions(references, config)
        majority = {} if trivial is None else self.score(trivial, references, config)
        known = self.metadata.greater_is_better
        return {"majority": {k: float(v) for k, v in majority.items()
                             if isinstance(v, (int, float)) and (not known or k in known)},
                "chance": {k: float(v) for k, v in self.chance_scores(references, config).items()}}

    def encoding_report(self, examples: Sequence[Example], encoded: Sequence[Encoded], config: Any) -> dict[str, Any]:
        """What encoding lost (e.g. entities cut by truncation); recorded per split."""
        return {}

    def data_files(self, config: Any) -> Sequence[str]:
        """The files or folders `load` reads. Given them, a rerun with the same files (paths, sizes,
        modification times), config and plugin code takes the parsed splits from the on-disk cache
        instead of parsing the corpus again. Empty (the default): `load` runs every time."""
        return ()

    def text(self, example: Example) -> str:
        """The example's raw text, for objectives that need unlabelled text (masked-LM, ...)."""
        raise NotImplementedError(f"task {self.name} offers no raw text")

    def cache_key(self, config: Any) -> dict[str, Any]:
        """Config fields that change the encoded data (default: all of them)."""
        return dataclasses.asdict(config)


class Method(Component):
    """How a backbone is adapted: what trains, what is saved."""

    mergeable: ClassVar[bool | None] = None
    """Whether the method's weights can be folded into the backbone for inference
    (LoRA: yes; adapters: no; None: nothing to merge). Recorded with inference times."""

    quantized_base: ClassVar[bool] = False
    """Whether the method trains beside a frozen quantized base (``--set quantize=4bit``, QLoRA):
    it must leave every base weight frozen and know the k-bit layers (peft's LoRA family does)."""

    packed_batches: ClassVar[bool] = False
    """Whether the method's model takes packed batches (``--set packing=true``): several examples to
    a row, told apart by position ids. A method that adds tokens or states per row (prompt and
    prefix tuners) or replaces the attention cannot: its rows would mix examples."""

    family: ClassVar[str | None] = None
    """The family the method belongs to (e.g. "lora" for LoRA, DoRA, rsLoRA, PiSSA), where its
    members share settings under other names; see ``family_settings``."""

    def family_settings(self, config: Any) -> dict[str, Any]:
        """The run's values of the settings its family shares, under the family's names (the LoRA
        family: r, alpha, dropout, target). Recorded; a report warns where two methods of one family
        differ in them, since then they differ in more than their own idea."""
        return {}

    capacity: ClassVar[tuple[str, Sequence[int]] | None] = None
    """The setting that sizes the method and its allowed values (e.g. ("r", range(1, 1025))),
    so a parameter budget can be matched (`--match-params`)."""

    def stages(self, task: Task, task_config: Any, config: Any, backbone: "Backbone | None" = None) -> list[Stage]:
        """The training phases. ``backbone`` is the run's backbone, for stage objectives that
        need a model of their own before training (e.g. scoring tokens with the vanilla MLM)."""
        return [Stage("finetune", task.head(task_config))]

    @abstractmethod
    def prepare(
        self, loaded: "LoadedBackbone", config: Any, stage: Stage, previous: torch.nn.Module | None = None
    ) -> torch.nn.Module:
        """Wrap/freeze ``loaded.model`` for a stage and return the model to train.

        ``previous`` is the trained model of the preceding stage (None for the
        first), for methods that carry weights from one stage to the next."""

    lr_range: ClassVar[tuple[float, float] | None] = None
    """The learning rates the method's family trains well with: tuning's log-uniform range for
    ``lr``. None: a decade either side of the method's default ``lr``."""

    def learning_rate(self, config: Any, stage: Stage) -> float:
        return float(config.lr)

    def search_space(self, config: Any) -> dict[str, SearchSpace]:
        """What a suite's ``[tune]`` searches for this method (setting -> values), before the
        suite's own ``[tune.space.<method>]`` overrides: by default the learning rate, log-uniform
        over ``lr_range``. A method may add its size or other settings."""
        lr = getattr(config, "lr", None)
        if not isinstance(lr, (int, float)) or isinstance(lr, bool):
            return {}
        low, high = self.lr_range or (lr / 10, lr * 10)
        return {"lr": SearchSpace("log-uniform", low, high)}

    def loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch).loss

    def after_update(self, model: torch.nn.Module, update: int, total_updates: int) -> None:
        """Called after each optimizer update of a stage (``update`` counts from 1 to at most
        ``total_updates``, the stage's schedule), before the gradients are cleared: for methods
        that change themselves as training goes (e.g. AdaLoRA reallocating its ranks)."""

    def is_adapter_parameter(self, name: str) -> bool:
        """True for parameters the method added (counted as 'adapter')."""
        return False

    def is_auxiliary_parameter(self, name: str) -> bool:
        """True for parameters that train but are not deployed (e.g. auxiliary-task heads);
        counted as 'auxiliary', never part of the artefact."""
        return False

    @abstractmethod
    def artifact_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Exactly the tensors `save` stores: defines the per-task storage size."""

    def auxiliary_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Tensors that train but are thrown away after training (recorded as their own size)."""
        return {}

    @abstractmethod
    def save(self, model: torch.nn.Module, directory: str) -> None:
        """Write the artefact a user must keep per task (safetensors, no pickles)."""

    @contextlib.contextmanager
    def inference_modes(self, model: torch.nn.Module) -> Iterator[Iterator[str]]:
        """Yield an iterator of mode names; the model is in that mode while each is current.

        E.g. LoRA yields "unmerged" then "merged". The model must be back in
        its training form when the context exits.
        """
        yield iter(["default"])


class MethodWrapper(ABC):
    """Composes with any method: ``<prefix>+<method>`` (e.g. ``tapt+ia3``) is the method that
    `wrap` returns for the registered method named after the ``+``, from whatever plugin."""

    prefix: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type] = None  # a frozen dataclass of the settings it adds to the inner method's

    @property
    def name(self) -> str:  # the registry key
        return self.prefix

    @abstractmethod
    def wrap(self, inner: Method) -> Method:
        """The composed method, named ``<prefix>+<inner.name>``. Raise ConfigError with one line
        saying why when ``inner`` cannot be wrapped."""


@dataclass
class LoadedBackbone:
    model: torch.nn.Module
    tokenizer: Any  # None when loaded without weights (dry-run)
    head_modules: tuple[str, ...]  # top-level modules that form the task head, e.g. ("classifier",)
    info: dict[str, Any]  # recorded as-is: resolved path, config, revision...


class Backbone(Component):
    """Resolves to a model with the requested head, plus its tokenizer."""

    quantizes: ClassVar[bool] = False
    """The quantize contract. True: ``load`` also takes ``quantize="4bit"|"8bit"`` and
    ``compute_dtype`` (``TrainConfig.loading()``: the run's ``--set quantize=...``), returns a frozen
    k-bit base, and with ``weights=False`` (a dry run) records in ``info["quantize"]`` what it would
    do. The keywords are passed only when a run asks; a run that asks a backbone whose
    ``quantizes`` is False is refused when its spec resolves, dry runs included."""

    @abstractmethod
    def load(self, head: HeadSpec, *, weights: bool = True) -> LoadedBackbone:
        """With ``weights=False`` build the architecture without downloading anything
        (parameters may live on the meta device) so params and sizes can be counted."""


# ------------------------------------------------------------------ report tables

Better = Literal["higher", "lower"] | None


@dataclass(frozen=True)
class Column:
    header: str
    field: str  # dotted path into the record, e.g. "scores.test.accuracy"
    better: Better = None
    scale: float = 1.0  # value is multiplied by this before display
    digits: int | None = 4  # None: a setting, shown as written (8, 5e-05)
    fallback: str | None = None  # another field shown when this one is null (e.g. the method name)


@dataclass(frozen=True)
class TableSpec:
    """A named table layout (e.g. a study's published table), provided by plugins."""

    name: str
    description: str
    columns: tuple[Column, ...]
    sort_by: str | None = None
    # DataFrame of records -> boolean Series of the rows this table shows.
    where: Callable[[Any], Any] | None = None


