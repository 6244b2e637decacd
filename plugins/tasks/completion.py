"""What every prompt -> completion task of a decoder LM shares (gsm8k.py, instruction_sft.py).

Encoding: ``prompt + completion + EOS``, the prompt rendered with the task's template or the
tokenizer's chat template, the two tokenised apart so that the generation prompt is exactly the
training prompt. Loss on the completion only by default: every prompt position's label is -100
(``train_on_prompt=true`` learns the prompt too); EOS is part of the completion, so the model
learns to stop. Truncation never passes silently: a prompt longer than ``max_prompt_length`` loses
its beginning, a completion that does not fit into ``max_length`` loses its end (EOS included),
and the record's ``data.encoding`` counts both per split.

Scoring: greedy generation from the prompt (left-padded batches, at most ``max_new_tokens``, to
EOS), an answer extracted from the generated text (``extract``), ``exact_match`` against the
reference answer after normalisation, on dev after every epoch (model selection, early stopping,
pruning) and on dev/test at the end; per-example predictions are saved, so paired tests, floors
(the majority answer) and human evaluation apply. Teacher-forced ``token_accuracy`` on the
completion comes with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from peftbench.sdk import ConfigError, ExampleStatistics, HeadSpec, LoadedBackbone, Task

from .families import UNMASKED_FAMILIES

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

IGNORE = -100
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class CompletionSettings:
    """Settings every completion task has (each task adds where its data is)."""

    prompt_template: str = "{prompt}"
    completion_template: str = "{completion}"
    chat_template: bool = False  # render the prompt with the tokenizer's chat template instead
    train_on_prompt: bool = False
    max_prompt_length: int = 384
    max_length: int = 512
    max_new_tokens: int = 256
    answer_regex: str | None = None  # the answer is this pattern's first group (or whole match) in a text
    dev_fraction: float = 0.1  # when there is no dev file: a seeded share of train
    split_seed: int = 42
    limit_train: int | None = None  # CPU subsets: the first N after the seeded split
    limit_eval: int | None = None  # the same for dev and test

    def __post_init__(self) -> None:
        if not 1 <= self.max_prompt_length < self.max_length:
            raise ValueError(f"max_prompt_length={self.max_prompt_length} must be >= 1 and below max_length="
                             f"{self.max_length}: with max_length={self.max_length} also set max_prompt_length "
                             f"(e.g. {max(1, 3 * self.max_length // 4)})")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not 0 < self.dev_fraction < 1:
            raise ValueError("dev_fraction must be in (0, 1)")
        if "{prompt}" not in self.prompt_template or "{completion}" not in self.completion_template:
            raise ValueError("prompt_template needs {prompt} and completion_template needs {completion}")
        if self.answer_regex is not None:
            try:
                re.compile(self.answer_regex)
            except re.error as exc:
                raise ValueError(f"answer_regex {self.answer_regex!r} is not a regular expression ({exc})") from None
        for name in ("limit_train", "limit_eval"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


def normalize_answer(text: str | None) -> str | None:
    """Compared form of an answer: whitespace collapsed, a number without commas, $ or trailing zeros."""
    if text is None:
        return None
    text = " ".join(text.split()).strip().rstrip(".")
    number = text.replace(",", "").replace("$", "").strip()
    try:
        value = float(number)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else repr(value)


def last_number(text: str) -> str | None:
    found = NUMBER.findall(text)
    return found[-1] if found else None


def regex_answer(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    if match is None:
        return None
    return match.group(1) if match.groups() else match.group(0)


def start_tokens(tokenizer: Any) -> list[int]:
    """What the tokenizer puts before a text (Llama: BOS; GPT-2, Qwen: nothing)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a")["input_ids"]
    return framed[:len(framed) - len(plain)] if framed[len(framed) - len(plain):] == plain else []


def rows_of_at_most(capacity: int, features: list[dict]) -> list[list[dict]]:
    """The examples in rows of at most ``capacity`` tokens: longest first, each into the first row
    with room for it (first fit decreasing: few rows, so little padding)."""
    rows: list[list[dict]] = []
    room: list[int] = []
    for feature in sorted(features, key=lambda f: -len(f["input_ids"])):
        size = len(feature["input_ids"])
        row = next((i for i, left in enumerate(room) if size <= left), None)
        if row is None:
            rows.append([feature])
            room.append(capacity - size)
        else:
            rows[row].append(feature)
            room[row] -= size
    return rows


class CompletionTask(Task):
    """A prompt -> completion task for causal LMs. Subclasses load the examples (dicts with
    ``id``, ``prompt`` or ``messages``, ``completion``) and may change ``extract``."""

    extra_batch_keys = ("prompt_ids", "prompt_attention_mask", "answer_ids")
    tokenizer: Any = None
    family: str | None = None
    stop_sequences: tuple[str, ...] = ()  # a generated text ends at the first of these (e.g. "Question:")
    demonstrations: tuple[dict, ...] = ()  # few-shot: training examples shown before every prompt

    def head(self, config: CompletionSettings) -> HeadSpec:
        return HeadSpec("text-generation")

    def text(self, example: dict) -> str:
        prompt = example.get("prompt") or " ".join(m["content"] for m in example.get("messages", [])[:-1])
        return f"{prompt}\n{example['completion']}"

    def extract(self, text: str, config: CompletionSettings) -> str | None:
        """The answer in a completion or a generated text (here: all of it, or ``answer_regex``'s)."""
        return regex_answer(config.answer_regex, text) if config.answer_regex else text

    def predicts_every_epoch(self, config: CompletionSettings) -> bool:
        return True  # dev exact match needs generated text

    def for_backbone(self, loaded: LoadedBackbone) -> "CompletionTask":
        if loaded.info.get("generation_format") != "causal":
            raise ConfigError(f"{self.name} trains decoder-only language models; {loaded.info.get('spec')} is "
                              f"{loaded.info.get('generation_format') or 'not a text generator'}",
                              "use a causal LM backbone (Llama, Qwen, Mistral, Gemma, GPT-2, ...)")
        bound = type(self)()
        bound.tokenizer, bound.family = loaded.tokenizer, loaded.info.get("model_type")
        return bound

    # -- encoding

    def with_demonstrations(self, examples) -> "CompletionTask":
        import copy

        shown = copy.copy(self)
        shown.demonstrations = tuple(examples)
        return shown

    def cache_key(self, config: Any) -> dict[str, Any]:
        key = super().cache_key(config)
        return {**key, "demonstrations": [d.get("id") for d in self.demonstrations]} if self.demonstrations else key

    def render_prompt(self, example: dict, tokenizer: Any, config: CompletionSettings) -> tuple[str, bool]:
        """(prompt text, whether it already holds the start tokens). Demonstrations come first, each
        with its answer (lm-eval's few-shot layout: examples separated by a blank line; earlier turns
        of a chat)."""
        if not config.chat_template and "messages" not in example:
            shown = "".join(config.prompt_template.format(prompt=d["prompt"]) + config.completion_template.format(
                completion=d["completion"]) + "\n\n" for d in self.demonstrations)
            return shown + config.prompt_template.format(prompt=example["prompt"]), False
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"{type(tokenizer).__name__} has no chat template, which chat messages or "
                              "chat_template=true need", "use a chat (instruct) checkpoint or prompt/completion rows")
        turns = [turn for d in self.demonstrations for turn in (
            {"role": "user", "content": d["prompt"]}, {"role": "assistant", "content": d["completion"]})]
        messages = example.get("messages", [])[:-1] or [{"role": "user", "content": example["prompt"]}]
        return tokenizer.apply_chat_template(turns + messages, add_generation_prompt=True, tokenize=False), True

    def encode(self, examples: Sequence[dict], tokenizer: Any, config: CompletionSettings) -> list[dict]:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"{type(tokenizer).__name__} has no end-of-sequence token",
                              "a completion must end in one, so that the model learns to stop")
        start, plain = start_tokens(tokenizer), dict(add_special_tokens=False)
        rows = []
        for example in examples:
            text, framed = self.render_prompt(example, tokenizer, config)
            prompt = ([] if framed else start) + tokenizer(text, **plain)["input_ids"]
            completion = tokenizer(config.completion_template.format(completion=example["completion"]),
                                   **plain)["input_ids"] + [tokenizer.eos_token_id]
            answer = normalize_answer(self.extract(example["completion"], config)) or ""
            rows.append(self._fit(prompt, completion, tokenizer(answer, **plain)["input_ids"], config))
        return rows

    @staticmethod
    def _fit(prompt: list[int], completion: list[int], answer: list[int], config: CompletionSettings) -> dict:
        prompt_cut = max(0, len(prompt) - config.max_prompt_length)
        prompt = prompt[prompt_cut:]
        completion_cut = max(0, len(prompt) + len(completion) - config.max_length)
        completion = completion[:len(completion) - completion_cut]
        labels = (list(prompt) if config.train_on_prompt else [IGNORE] * len(prompt)) + completion
        return {"input_ids": prompt + completion, "labels": labels, "prompt_ids": prompt, "answer_ids": answer,
                "prompt_cut": prompt_cut, "completion_cut": completion_cut}

    def encoding_report(self, examples: Sequence[dict], encoded: Sequence[dict], config: Any) -> dict[str, Any]:
        return {"examples": len(encoded), "max_length": config.max_length,
                "prompts_cut_at_start": sum(1 for row in encoded if row["prompt_cut"]),
                "completions_cut_at_end": sum(1 for row in encoded if row["completion_cut"]),
                "tokens_cut": sum(row["prompt_cut"] + row["completion_cut"] for row in encoded)}

    def collator(self, tokenizer: Any, config: Any, padding: str = "longest"):
        import torch

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        def padded(rows: list[list[int]], value: int, left: bool = False, full: bool = False) -> torch.Tensor:
            # padding="max_length": the model's inputs as wide as the task allows (what many scripts do)
            width = config.max_length if full and padding == "max_length" else max(1, max(map(len, rows)))
            return torch.tensor([[value] * (width - len(r)) + r if left else r + [value] * (width - len(r))
                                 for r in rows], dtype=torch.long)

        def collate(features: list[dict]) -> dict[str, torch.Tensor]:
            inputs, prompts = [f["input_ids"] for f in features], [f["prompt_ids"] for f in features]
            return {
                "input_ids": padded(inputs, pad, full=True),
                "attention_mask": padded([[1] * len(r) for r in inputs], 0, full=True),
                "labels": padded([f["labels"] for f in features], IGNORE, full=True),
                # for generation, padded on the left so that new tokens follow the prompt directly
                "prompt_ids": padded(prompts, pad, left=True),
                "prompt_attention_mask": padded([[1] * len(r) for r in prompts], 0, left=True),
                "answer_ids": padded([f["answer_ids"] for f in features], IGNORE),
            }

        return collate

    packs = True

    def packed_collator(self, tokenizer: Any, config: Any):
        """Training batches without padding (``--set packing=true``): the batch's examples end to
        end in rows no longer than its longest example (longest first, each into the first row with
        room: never more rows or a wider one than the padded batch, so attention never costs more),
        the position ids restarting at 0 for each example. With no attention mask,
        transformers reads the example boundaries from the position ids and masks attention across
        them (``masking_utils.find_packed_sequence_indices``; ``use_cache=False``, as it does that
        only without a cache). Each example's first label is -100, so no example learns from the
        one before it: the same examples and the same loss as the padded batch. The end of a
        shorter row is padding, a segment of its own that nothing attends to and no label scores."""
        import torch

        if self.family in UNMASKED_FAMILIES:
            raise ConfigError(f"{self.family} is recurrent: its state would carry one packed example into the "
                              "next", "drop packing for this backbone")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        def collate(features: list[dict]) -> dict[str, Any]:
            rows = rows_of_at_most(max(len(f["input_ids"]) for f in features), features)
            width = max(sum(len(f["input_ids"]) for f in row) for row in rows)
            ids, positions, labels = [], [], []
            for row in rows:
                lengths = [len(f["input_ids"]) for f in row]
                padding = width - sum(lengths)
                ids.append([t for f in row for t in f["input_ids"]] + [pad] * padding)
                positions.append([p for n in lengths + [padding] for p in range(n)])
                labels.append([label for f in row for label in [IGNORE, *f["labels"][1:]]] + [IGNORE] * padding)
            return {"input_ids": torch.tensor(ids), "position_ids": torch.tensor(positions),
                    "labels": torch.tensor(labels), "use_cache": False}

        return collate

    # -- predictions and scores

    def _token_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> list[dict[str, int]]:
        logits = logits[:, -labels.shape[1]:]  # a prompt tuner's virtual tokens come first
        logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t + 1
        scored = labels != IGNORE
        right = (logits.argmax(-1) == labels) & scored
        return [{"correct": int(c), "total": int(t)} for c, t in zip(right.sum(1).tolist(), scored.sum(1).tolist())]

    def _references(self, batch) -> list[str]:
        return [self.tokenizer.decode([t for t in row if t != IGNORE], skip_special_tokens=True).strip()
                for row in batch["answer_ids"].tolist()]

    def decode(self, logits: torch.Tensor, batch, config: CompletionSettings) -> tuple[list, list]:
        return self._token_counts(logits, batch["labels"]), self._references(batch)

    def _generate(self, model, batch, config: CompletionSettings) -> list[list[int]]:
        """Greedy continuations of the batch's prompts, up to EOS or max_new_tokens."""
        tokenizer = self.tokenizer
        kwargs = dict(max_new_tokens=config.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
        if self.stop_sequences:  # generation ends there too (the text is cut there as well: predict)
            kwargs.update(stop_strings=list(self.stop_sequences), tokenizer=tokenizer)
        prompts, masks = batch["prompt_ids"], batch["prompt_attention_mask"]
        if self.family in UNMASKED_FAMILIES:  # recurrent: padding would enter the state; one prompt at a time
            return [model.generate(input_ids=ids[mask.bool()].unsqueeze(0), **kwargs)[0, int(mask.sum()):].tolist()
                    for ids, mask in zip(prompts, masks)]
        return model.generate(input_ids=prompts, attention_mask=masks, **kwargs)[:, prompts.shape[1]:].tolist()

    def predict(self, model, batch, logits, config: CompletionSettings) -> tuple[list, list]:
        eos, predictions = self.tokenizer.eos_token_id, []
        for row, count in zip(self._generate(model, batch, config), self._token_counts(logits.float(), batch["labels"])):
            length = row.index(eos) if eos in row else len(row)
            output = self.tokenizer.decode(row[:length], skip_special_tokens=True)
            stopped = length < len(row)
            cut = min((output.index(stop) for stop in self.stop_sequences if stop in output), default=None)
            if cut is not None:  # lm-eval's `until`: the text ends where a stop sequence starts
                output, stopped = output[:cut], True
            predictions.append({"output": output, "answer": normalize_answer(self.extract(output, config)),
                                "generated_tokens": min(length + 1, len(row)), "stopped": stopped, **count})
        return predictions, self._references(batch)

    def score(self, predictions: list, references: list, config: CompletionSettings) -> dict[str, float]:
        scores: dict[str, float] = {}
        total = sum(p.get("total", 0) for p in predictions)
        if total:
            scores["token_accuracy"] = sum(p["correct"] for p in predictions) / total
        if predictions and "answer" in predictions[0]:
            n = len(predictions)
            scores["exact_match"] = sum(p["answer"] == normalize_answer(r) for p, r in zip(predictions, references)) / n
            if "output" in predictions[0]:
                scores["answered"] = sum(p["answer"] is not None for p in predictions) / n
                scores["stopped"] = sum(p["stopped"] for p in predictions) / n
                scores["generated_tokens"] = sum(p["generated_tokens"] for p in predictions)
        return scores

    def example_statistics(self, predictions: list, references: list, config: Any,
                           score: str) -> ExampleStatistics | None:
        import numpy as np

        if score != "exact_match" or not predictions or "answer" not in predictions[0]:
            return None
        values = np.array([[p["answer"] == normalize_answer(r), 1] for p, r in zip(predictions, references)],
                          dtype=np.int64).reshape(-1, 2)
        return ExampleStatistics(values, lambda t: t[0] / t[1] if t[1] else 0.0)

    def trivial_predictions(self, references: list, config: Any) -> list | None:
        """The most common reference answer, everywhere (a model that learned one answer)."""
        import collections

        if not references:
            return None
        majority = collections.Counter(normalize_answer(r) for r in references).most_common(1)[0][0]
        return [{"answer": majority}] * len(references)
