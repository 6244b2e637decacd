"""The auxiliary tasks multi-task fine-tuning trains beside the main task (multitask.py): n-gram
recognition (BIO tags of frequent sub-word n-grams, ngrams.py) and masked-LM, with random masking
(rtm) or with masking probabilities from the vanilla MLM's pseudo-likelihoods (l3masking.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from peftbench.sdk import (BackboneError, ConfigError, HeadSpec, LoadedBackbone, current_progress, encode_cached,
                           tokenizer_fingerprint)

from . import l3masking, ngrams
from .auxiliary import Auxiliary

if TYPE_CHECKING:
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
