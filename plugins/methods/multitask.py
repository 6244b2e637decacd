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

import hashlib
import dataclasses
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Sequence

import typer

from peftbench.sdk import (BackboneError, CommandContext, ConfigError, Example, HeadSpec, LoadedBackbone, Method,
                           MethodWrapper, Splits, Stage, Task, current_progress, encode_cached, hookimpl, load_splits,
                           tokenizer_fingerprint)

from . import l3masking, ngrams
from .auxiliary import Auxiliary
from .adapter import BottleneckAdapter
from .full import FullFineTuning
from .lora import Lora

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch
    from torch import nn

TRAIN_MARK = "_auxiliary_targets"  # marks the training examples: only they get auxiliary targets


def structural_ids(tokenizer: Any) -> set[int]:
    """Special tokens that are not text ([CLS], [SEP], [PAD], ...; [UNK] stands for text)."""
    return set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}


def encoder_of(model: nn.Module) -> nn.Module:
    """The shared encoder inside a task model (through peft's wrapper when there is one)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


def fresh_head_weights(loaded: LoadedBackbone) -> list[str]:
    """Weights outside the encoder that the checkpoint did not have (initialised at random)."""
    prefix = loaded.model.base_model_prefix
    return [k for k in loaded.info.get("newly_initialized", []) if not k.startswith(prefix)]


def backbone_fingerprint(backbone: Any) -> str:
    """Names the backbone's weights for caches: a local folder by its files' sizes and times."""
    spec = getattr(backbone, "spec", backbone.name)
    path = Path(spec).expanduser()
    digest = hashlib.sha256(spec.encode())
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = item.stat()
            digest.update(f"{item.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------ auxiliary tasks


class NgramRecognition(Auxiliary):
    name = "ngram"
    fields = ("ngram_tags",)
    pad_values = (-100,)
    needs_hidden_states = True
    _table: ngrams.NgramTable | None = None

    def cache_key(self) -> dict[str, Any]:
        c = self.config
        return {"aux": self.name, "scheme": c.scheme, "merges": c.merges, "min_frequency": c.min_frequency,
                "class_min_count": c.class_min_count}

    def _sequences(self, encoded: Sequence[dict], tokenizer: Any) -> list[list[int]]:
        special = structural_ids(tokenizer)
        return [[t for t in ex["input_ids"] if t not in special] for ex in encoded]

    def table(self, tokenizer: Any) -> ngrams.NgramTable:
        """The n-grams of the training split (extracted once per dataset, tokenizer and settings)."""
        if self._table is None:
            encoded = self.task.encode(self.train, tokenizer, self.task_config)
            labels = [ex.get("labels") for ex in encoded]
            per_document = all(isinstance(label, int) for label in labels)
            if not per_document and self.config.scheme != "all-phrase":
                raise ConfigError(f"scheme {self.config.scheme} needs one class per document; task "
                                  f"{self.task.name} labels tokens", "use --set scheme=all-phrase")
            names = list(self.task.head(self.task_config).labels) if per_document else ["all"]
            key = {"task": self.task.name, "task_config": self.task.cache_key(self.task_config),
                   "tokenizer": tokenizer_fingerprint(tokenizer)}
            self._table, _ = ngrams.extract_cached(key, self._sequences(encoded, tokenizer),
                                                   labels if per_document else [0] * len(encoded), names,
                                                   self.config.merges, self.config.min_frequency)
        return self._table

    def tag_labels(self, tokenizer: Any) -> tuple[str, ...]:
        return self.table(tokenizer).tag_labels(self.config.scheme, self.config.class_min_count)

    def annotate(self, encoded: list[dict], tokenizer: Any) -> None:
        table = self.table(tokenizer)
        index = {tag: i for i, tag in enumerate(self.tag_labels(tokenizer))}
        special = structural_ids(tokenizer)
        tags = table.tag(self._sequences(encoded, tokenizer), self.config.scheme, self.config.class_min_count)
        for ex, doc_tags in zip(encoded, tags):
            it = iter(doc_tags)
            ex["ngram_tags"] = [-100 if t in special else index[next(it)] for t in ex["input_ids"]]

    def head(self, main: nn.Module, loaded: LoadedBackbone) -> nn.Module | None:
        from torch import nn

        if loaded.tokenizer is None:
            return None  # the tag set comes from the data: unknown in a dry-run
        config = (main.get_base_model() if hasattr(main, "get_base_model") else main).config
        dropout = getattr(config, "hidden_dropout_prob", 0.1)
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(config.hidden_size, len(self.tag_labels(loaded.tokenizer))))

    def loss(self, head: nn.Module, outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from torch import nn

        logits = head(outputs.hidden_states[-1])
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["ngram_tags"].flatten(),
                                           ignore_index=-100)


class MaskedLanguageModelling(Auxiliary):
    """MLM on the training documents with per-token masking probabilities (rtm: uniform)."""

    fields = ("mask_probs",)
    pad_values = (0.0,)

    def __init__(self, config: Any, backbone: Any, policy: Literal["rtm", "l3masking"]) -> None:
        super().__init__(config, backbone)
        self.name = policy

    def cache_key(self) -> dict[str, Any]:
        key = {"aux": self.name, "mask_rate": self.config.mask_rate}
        if self.name == "l3masking":
            key["backbone"] = backbone_fingerprint(self.backbone)
        return key

    def _likelihoods(self, documents: list[list[int]], tokenizer: Any) -> list[list[float | None]]:
        """PLL-word-l2r per token under the vanilla MLM, cached on disk (scoring is the expensive part)."""
        import torch

        def score(examples: Sequence[dict]) -> list[dict]:
            loaded = self.backbone.load(HeadSpec("masked-lm"))
            fresh = fresh_head_weights(loaded)
            if fresh:
                raise BackboneError(
                    f"backbone {self.backbone.name} has no pre-trained MLM head ({', '.join(fresh[:2])}... are newly "
                    "initialised): L3Masking scores tokens with the vanilla MLM",
                    "use a checkpoint with its MLM head (BERT/RoBERTa, or one from `peftbench backbone build`), "
                    "or mtl-rtm")
            model = loaded.model.to("cuda" if torch.cuda.is_available() else "cpu")
            docs = [ex["input_ids"] for ex in examples]
            spans = l3masking.word_spans(docs, tokenizer)
            total = sum(end - start for doc_spans in spans for start, end in doc_spans)
            with current_progress().steps("L3Masking: scoring tokens (PLL-word-l2r)", total) as advance:
                probabilities = l3masking.pll_word_l2r(model, docs, spans, tokenizer.mask_token_id,
                                                       tokenizer.pad_token_id or 0, self.config.pll_batch_size,
                                                       advance)
            return [{"pll": [-1.0 if p is None else p for p in doc]} for doc in probabilities]

        key = {"kind": "pll-word-l2r", "backbone": backbone_fingerprint(self.backbone),
               "tokenizer": tokenizer_fingerprint(tokenizer)}
        rows, _ = encode_cached(key, [{"input_ids": doc} for doc in documents], score)
        return [[None if p < 0 else p for p in row["pll"]] for row in rows]

    def annotate(self, encoded: list[dict], tokenizer: Any) -> None:
        if tokenizer.mask_token_id is None:
            raise BackboneError(f"{type(tokenizer).__name__} has no mask token", "masked-LM needs a BERT-style tokenizer")
        rate = self.config.mask_rate
        if self.name == "rtm":
            special = structural_ids(tokenizer)
            for ex in encoded:
                ex["mask_probs"] = [0.0 if t in special else rate for t in ex["input_ids"]]
            return
        likelihoods = self._likelihoods([ex["input_ids"] for ex in encoded], tokenizer)
        for ex, doc in zip(encoded, likelihoods):
            ex["mask_probs"] = l3masking.mask_probabilities(doc, rate)

    def collate(self, batch: dict[str, torch.Tensor], tokenizer: Any) -> None:
        probabilities = batch.pop("mask_probs", None)
        if probabilities is not None:
            batch["mlm_input_ids"], batch["mlm_labels"] = l3masking.bert_masking(
                batch["input_ids"], probabilities.float(), tokenizer.mask_token_id, len(tokenizer))

    def head(self, main: nn.Module, loaded: LoadedBackbone) -> nn.Module:
        """The backbone's own MLM head (pre-trained where the checkpoint has one) on the shared encoder."""
        mlm = self.backbone.load(HeadSpec("masked-lm"), weights=loaded.tokenizer is not None)
        if fresh_head_weights(mlm):
            # Recorded with the backbone: this MLM head starts from random weights, not pre-trained ones.
            loaded.info["auxiliary_mlm_head_newly_initialized"] = fresh_head_weights(mlm)
        model = mlm.model
        setattr(model, model.base_model_prefix, encoder_of(main))  # share, do not copy
        base = main.get_base_model() if hasattr(main, "get_base_model") else main
        if getattr(model.config, "tie_word_embeddings", True) and model.get_output_embeddings() is not None:
            model.get_output_embeddings().weight = base.get_input_embeddings().weight
        shared = {id(p) for p in encoder_of(main).parameters()}
        for param in model.parameters():
            if id(param) not in shared:
                param.requires_grad_(True)
        return model

    def loss(self, head: nn.Module, outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from torch import nn

        labels = batch["mlm_labels"]
        chosen = labels != -100
        if not bool(chosen.any()):
            return outputs.loss.new_zeros(())  # no token drawn in this batch: nothing to predict
        inputs = {"input_ids": batch["mlm_input_ids"], "attention_mask": batch.get("attention_mask")}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        prefix = head.base_model_prefix
        output_layers = [module for name, module in head.named_children() if name != prefix]
        if len(output_layers) != 1:  # an MLM head in several parts: let the model compute the loss
            return head(**inputs, labels=labels).loss
        # Vocabulary logits only where a token was chosen (~15% of positions): the same loss as the
        # model's own, for a fraction of the output layer's cost.
        hidden = getattr(head, prefix)(**inputs).last_hidden_state
        logits = output_layers[0](hidden[chosen])
        return nn.functional.cross_entropy(logits.float(), labels[chosen])


# ------------------------------------------------------------ objective and model


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
