"""livedoor title -> article generation (study S4), for seq2seq (T5) and causal (GPT-2, RWKV) models.

Data: the livedoor corpus layout (plugins/livedoor.py reads it); input = the
title (line 3), target = the body (lines 4..). Normalisation, exactly: every
line goes through ``neologdn.normalize`` (the NEologd rules: full-width ASCII
and half-width kana folded, hyphens / long-vowel marks / tildes unified,
repeated ー collapsed, spaces between Japanese characters removed), empty body
lines are dropped and the rest joined with no separator. Articles with an
empty title or body are skipped and counted. Split: a seeded shuffle, then
90 / 5 / 5 % train / dev / test.

Encoding depends on the backbone (`for_backbone`): seq2seq models read the
title and are trained on the body (labels); causal models read
``title <eos> body <eos>`` with the prompt (title and separator) masked out
of the loss. Training monitors teacher-forced token accuracy on dev (cheap);
the final dev/test scoring generates text with the recorded settings and
scores it with chrF (sacrebleu, characters), BLEU on MeCab words (fugashi +
unidic-lite, sacrebleu with tokenize="none") and ROUGE-L F1 on characters
(whitespace removed), plus the number of generated tokens for tokens/s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from peftbench.sdk import (ConfigError, DataError, Example, ExampleStatistics, HeadSpec, LoadedBackbone, Splits, Task,
                           TaskMetadata, hookimpl, locate)

from .families import UNMASKED_FAMILIES
from .livedoor_corpus import CATEGORIES, SOURCE, _articles

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

IGNORE = -100


@dataclass(frozen=True)
class Title2ArticleConfig:
    data_dir: str | None = None
    max_input_length: int = 64  # S4
    max_target_length: int = 512  # S4
    train_fraction: float = 0.9
    dev_fraction: float = 0.05
    split_seed: int = 42
    limit: int | None = None  # CPU subsets: a seeded sample of this many articles before splitting
    normalize: bool = True
    # Generation settings (recorded with the run like every setting).
    max_new_tokens: int = 512
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.train_fraction < 1 and 0 < self.dev_fraction < 1
                and self.train_fraction + self.dev_fraction < 1):
            raise ValueError("train_fraction and dev_fraction must be in (0, 1) and sum to less than 1")
        if self.max_input_length < 4 or self.max_target_length < 4 or self.max_new_tokens < 1:
            raise ValueError("max_input_length and max_target_length must be >= 4, max_new_tokens >= 1")
        if self.limit is not None and self.limit < 20:
            raise ValueError("limit must be >= 20 so that dev and test get articles")
        if self.num_beams < 1 or not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ValueError("num_beams must be >= 1, temperature > 0 and top_p in (0, 1]")


def normalize(text: str) -> str:
    import neologdn

    return neologdn.normalize(text)


# ------------------------------------------------------------------ metrics


def lcs_length(a: str, b: str) -> int:
    """Longest common subsequence length, bit-parallel (Hyyrö 2004): O(len(a) * len(b) / word)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, char in enumerate(a):
        masks[char] = masks.get(char, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for char in b:
        match = row & masks.get(char, 0)
        row = ((row + match) | (row - match)) & full
    return len(a) - bin(row).count("1")


def rouge_l_chars(hypothesis: str, reference: str) -> float:
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    common = lcs_length(hyp, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class _Words:
    """MeCab words (unidic-lite), as BLEU needs for Japanese."""

    _tagger = None

    @classmethod
    def split(cls, text: str) -> str:
        if cls._tagger is None:
            from ..backbones.scratch_build import WordSplitter

            cls._tagger = WordSplitter()
        return " ".join(cls._tagger("".join(text.split())))


def text_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    import sacrebleu

    return {
        "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score / 100,
        "bleu": sacrebleu.corpus_bleu([_Words.split(h) for h in hypotheses], [[_Words.split(r) for r in references]],
                                      tokenize="none").score / 100,
        "rouge_l": sum(rouge_l_chars(h, r) for h, r in zip(hypotheses, references)) / max(len(references), 1),
    }


def _sacrebleu_statistics(score: str, hypotheses: list[str], references: list[str]) -> ExampleStatistics:
    """sacrebleu's own per-sentence sufficient statistics (those its paired bootstrap and
    approximate randomisation resample), scored as text_scores scores them."""
    import numpy as np
    from sacrebleu.metrics import BLEU, CHRF

    if score == "bleu":
        metric = BLEU(tokenize="none")
        hypotheses, references = [_Words.split(h) for h in hypotheses], [_Words.split(r) for r in references]
    else:
        metric = CHRF()
    values = np.array(metric._extract_corpus_statistics(hypotheses, [references]), dtype=np.int64)
    return ExampleStatistics(values, lambda t: metric._compute_score_from_stats(t.tolist()).score / 100)


# --------------------------------------------------------------------- task


class Title2Article(Task):
    name = "livedoor-title2article"
    libraries = ("sacrebleu", "neologdn", "fugashi", "unidic-lite")
    description = "livedoor news: generate the article body from its title (S4); chrF, BLEU, ROUGE-L"
    Config = Title2ArticleConfig
    metadata = TaskMetadata(
        kind="generation",
        language="ja",
        description="Japanese news title -> article body",
        main_score="token_accuracy",
        corpus="livedoor",
        source=SOURCE,
        license="CC BY-ND 2.1 JP (articles); see each category's LICENSE.txt",
        default_backbone="sonoisa/t5-base-japanese",
        greater_is_better={"token_accuracy": True, "chrf": True, "bleu": True, "rouge_l": True,
                           "generated_tokens": True},
    )
    extra_batch_keys = ("prompt_ids", "prompt_attention_mask")
    format: str | None = None  # "seq2seq" or "causal" once bound to a backbone
    tokenizer: Any = None

    def head(self, config: Title2ArticleConfig) -> HeadSpec:
        return HeadSpec("text-generation")

    def data_files(self, config: Title2ArticleConfig) -> list[str]:
        return [str(locate(self.metadata.corpus, config.data_dir, SOURCE))]

    def load(self, config: Title2ArticleConfig) -> Splits:
        root = locate(self.metadata.corpus, config.data_dir, SOURCE)
        examples: list[Example] = []
        skipped: dict[str, int] = {"empty_title": 0, "empty_body": 0}
        for category, where, raw in _articles(root):
            if category not in CATEGORIES:
                continue
            lines = raw.splitlines()
            title = lines[2] if len(lines) > 2 else ""
            body_lines = lines[3:]
            if config.normalize:
                title = normalize(title)
                body_lines = [normalize(line) for line in body_lines]
            body = "".join(line.strip() for line in body_lines if line.strip())
            if not title.strip():
                skipped["empty_title"] += 1
                continue
            if not body:
                skipped["empty_body"] += 1
                continue
            examples.append({"id": Path(where).name, "category": category, "title": title.strip(), "body": body})
        if not examples:
            raise DataError(f"{root} holds no livedoor articles with a title and a body",
                            f"expected category folders of article .txt files or an ldcc-*.tar.gz; see {SOURCE}")
        rng = random.Random(config.split_seed)
        rng.shuffle(examples)
        if config.limit is not None:
            examples = examples[:config.limit]
        n_train = int(len(examples) * config.train_fraction)
        n_dev = int(len(examples) * config.dev_fraction)
        train, dev, test = examples[:n_train], examples[n_train:n_train + n_dev], examples[n_train + n_dev:]
        if not dev or not test:
            raise DataError(f"only {len(examples)} articles: dev or test would be empty", "use more articles")
        info = {"source": str(root), "articles": len(examples), "skipped": skipped,
                "normalization": "neologdn.normalize per line" if config.normalize else "none"}
        return Splits(train, dev, test, info)

    def text(self, example: Example) -> str:
        return f"{example['title']}\n{example['body']}"

    # -- bound to a backbone

    def for_backbone(self, loaded: LoadedBackbone) -> "Title2Article":
        bound = Title2Article()
        bound.format = loaded.info.get("generation_format")
        if bound.format not in ("seq2seq", "causal"):
            raise ConfigError(f"backbone {loaded.info.get('spec')} was not loaded as a text generator",
                              "generation needs a seq2seq (T5) or causal (GPT-2, RWKV) model")
        bound.tokenizer = loaded.tokenizer
        return bound

    def _require_bound(self) -> None:
        if self.format is None:
            raise ConfigError("the generation task must be bound to a backbone before encoding",
                              "call task.for_backbone(loaded) first (the runner does)")

    def cache_key(self, config: Title2ArticleConfig) -> dict[str, Any]:
        return {"format": self.format, "max_input_length": config.max_input_length,
                "max_target_length": config.max_target_length}

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Title2ArticleConfig) -> list[dict]:
        self._require_bound()
        if not examples:
            return []
        titles = [ex["title"] for ex in examples]
        bodies = [ex["body"] for ex in examples]
        if self.format == "seq2seq":
            inputs = tokenizer(titles, truncation=True, max_length=config.max_input_length,
                               return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            labels = tokenizer(text_target=bodies, truncation=True, max_length=config.max_target_length,
                               return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            return [{"input_ids": i, "labels": l, "prompt_ids": i} for i, l in zip(inputs, labels)]
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if eos is None:
            raise ConfigError(f"{type(tokenizer).__name__} has no end-of-sequence token",
                              "a causal model needs one to separate the title from the body")
        plain = dict(add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        prompts = [ids[:config.max_input_length - 1] + [eos] for ids in tokenizer(titles, **plain)["input_ids"]]
        targets = [ids[:config.max_target_length - 1] + [eos] for ids in tokenizer(bodies, **plain)["input_ids"]]
        return [{"input_ids": p + t, "labels": [IGNORE] * len(p) + t, "prompt_ids": p}
                for p, t in zip(prompts, targets)]

    def collator(self, tokenizer: Any, config: Any, padding: str = "longest"):
        import torch

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def pad_to(rows: list[list[int]], value: int, width: int, left: bool = False) -> torch.Tensor:
            return torch.tensor([[value] * (width - len(r)) + r if left else r + [value] * (width - len(r))
                                 for r in rows], dtype=torch.long)

        def collate(features: list[dict]) -> dict[str, torch.Tensor]:
            inputs = [f["input_ids"] for f in features]
            width = max(map(len, inputs))
            prompts = [f["prompt_ids"] for f in features]
            prompt_width = max(map(len, prompts))
            return {
                "input_ids": pad_to(inputs, pad, width),
                "attention_mask": pad_to([[1] * len(r) for r in inputs], 0, width),
                "labels": pad_to([f["labels"] for f in features], IGNORE, max(len(f["labels"]) for f in features)),
                # Prompts for generation, padded on the left so that new tokens follow them directly.
                "prompt_ids": pad_to(prompts, pad, prompt_width, left=True),
                "prompt_attention_mask": pad_to([[1] * len(r) for r in prompts], 0, prompt_width, left=True),
            }

        return collate

    def _token_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> list[dict[str, int]]:
        if self.format == "causal":  # position t predicts token t + 1 (a prompt tuner's virtual tokens come first)
            logits, labels = logits[:, -labels.shape[1]:][:, :-1], labels[:, 1:]
        scored = labels != IGNORE
        right = (logits.argmax(-1) == labels) & scored
        return [{"correct": int(c), "total": int(t)} for c, t in zip(right.sum(1).tolist(), scored.sum(1).tolist())]

    def decode(self, logits: torch.Tensor, batch, config: Title2ArticleConfig) -> tuple[list, list]:
        counts = self._token_counts(logits, batch["labels"])
        return counts, [None] * len(counts)

    def generation_kwargs(self, config: Title2ArticleConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "num_beams": config.num_beams,
                                  "do_sample": config.do_sample, "repetition_penalty": config.repetition_penalty,
                                  "no_repeat_ngram_size": config.no_repeat_ngram_size}
        if config.do_sample:
            kwargs.update(temperature=config.temperature, top_p=config.top_p)
        return kwargs

    def predict(self, model, batch, logits, config: Title2ArticleConfig) -> tuple[list, list]:
        import torch

        tokenizer = self.tokenizer
        counts = self._token_counts(logits.float(), batch["labels"])
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        pad = tokenizer.pad_token_id
        kwargs = self.generation_kwargs(config)
        if self.format == "seq2seq":
            output = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
            new = output[:, 1:]  # drop the decoder start token
        elif getattr(model.config, "model_type", None) in UNMASKED_FAMILIES:
            rows = []
            for ids, mask in zip(batch["prompt_ids"], batch["prompt_attention_mask"]):
                prompt = ids[mask.bool()].unsqueeze(0)
                rows.append(model.generate(input_ids=prompt, pad_token_id=pad, eos_token_id=eos,
                                           **kwargs)[0, prompt.shape[1]:].tolist())
            width = max(map(len, rows))
            new = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        else:
            prompt = batch["prompt_ids"]
            output = model.generate(input_ids=prompt, attention_mask=batch["prompt_attention_mask"],
                                    pad_token_id=pad, eos_token_id=eos, **kwargs)
            new = output[:, prompt.shape[1]:]
        predictions, references = [], []
        for row, labels, prompt_row, count in zip(new.tolist(), batch["labels"].tolist(),
                                                   batch["prompt_ids"].tolist(), counts):
            length = next((i for i, t in enumerate(row) if t in (eos, pad)), len(row))
            predictions.append({
                "input": tokenizer.decode([t for t in prompt_row if t != pad], skip_special_tokens=True),
                "output": tokenizer.decode(row[:length], skip_special_tokens=True),
                "generated_tokens": length + (1 if length < len(row) else 0),  # the end token counts as made
                **count,
            })
            references.append(tokenizer.decode([t for t in labels if t != IGNORE], skip_special_tokens=True))
        return predictions, references

    def example_statistics(self, predictions: list, references: list, config: Title2ArticleConfig,
                           score: str) -> ExampleStatistics | None:
        import numpy as np

        if score == "token_accuracy":
            values = np.array([[p["correct"], p["total"]] for p in predictions], dtype=np.int64).reshape(-1, 2)
            return ExampleStatistics(values, lambda t: t[0] / t[1] if t[1] else 0.0)
        if score in ("bleu", "chrf") and predictions and "output" in predictions[0]:
            return _sacrebleu_statistics(score, [p["output"] for p in predictions], references)
        return None

    def trivial_predictions(self, references: list, config: Title2ArticleConfig) -> None:
        return None  # references are texts, not labels: no majority predictor for the main score

    def floors(self, references: list, config: Title2ArticleConfig) -> dict[str, dict[str, float]]:
        """An empty article's chrF / BLEU / ROUGE-L (the final, generated references only); the
        teacher-forced token accuracy has no trivial predictor, so no floor."""
        if not references or not all(isinstance(r, str) for r in references):
            return {"majority": {}, "chance": {}}
        return {"majority": text_scores([""] * len(references), references), "chance": {}}

    def score(self, predictions: list, references: list, config: Title2ArticleConfig) -> dict[str, float]:
        total = sum(p["total"] for p in predictions)
        scores = {"token_accuracy": sum(p["correct"] for p in predictions) / total if total else 0.0}
        if predictions and "output" in predictions[0]:
            scores.update(text_scores([p["output"] for p in predictions], references))
            scores["generated_tokens"] = sum(p["generated_tokens"] for p in predictions)
        return scores


@hookimpl
def register_tasks(register) -> None:
    register(Title2Article())
