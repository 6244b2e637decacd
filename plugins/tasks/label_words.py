"""Classification as generation (``--set as_generation=true``): a classification task's examples
become prompt -> label word for a causal LM, trained with the loss on the label word only (and EOS).

Scored two ways, both recorded:

- ``accuracy`` (and macro/micro-F1) by ranking the label words: the sum of the log-probabilities of
  each label word's tokens after the prompt, the highest wins. This is lm-evaluation-harness's
  ``acc`` for multiple-choice tasks (its ``loglikelihood`` requests, ``target_delimiter`` " "), and
  it works for a model that was never trained to answer in one word (the zero-shot row);
- ``exact_match``: the greedy generation (up to ``max_new_tokens``, stopped at EOS or a line break),
  trimmed and lower-cased, against the label word.

The prompt is ``prompt_template`` with ``{text}`` and ``{labels}`` (the label words, comma-separated),
rendered with the tokenizer's chat template where the backbone has one (instruct models) unless
``chat_template=false``; the label word follows the prompt as the assistant's answer (chat) or
after a space. Label words default to the task's own (a task plugin can give words for its labels,
e.g. MR's 0/1 as negative/positive), else the label names. A text too long for ``max_length`` is cut
at its end, never the instruction or the answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from peftbench.sdk import ConfigError, ExampleStatistics, HeadSpec, LoadedBackbone, Task

from .completion import IGNORE, CompletionTask
from .families import UNMASKED_FAMILIES
from .label_settings import GenerationSettings

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

DEFAULT_TEMPLATE = "{text}\nWhich of these labels fits the text above: {labels}? Answer with the label alone."


def _cut(text: str, tokens: int, tokenizer: Any) -> str:
    """The text's first ``tokens`` tokens, as text."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:tokens]) if len(ids) > tokens else text


def label_words(labels: Sequence[str], config: GenerationSettings, own: dict[str, str] | None = None) -> list[str]:
    """The word each label is answered with."""
    if config.label_words:
        if len(config.label_words) != len(labels):
            raise ConfigError(f"label_words gives {len(config.label_words)} words for {len(labels)} labels "
                              f"({', '.join(labels)})", "give one word per label, in that order")
        return [w.strip() for w in config.label_words]
    return [(own or {}).get(label, label) for label in labels]


class LabelWords(CompletionTask):
    """A classification task bound to a causal LM's tokenizer, as prompt -> label word. ``inner`` is the
    classification task (its ``label_names(config)`` in label order, its scores on label indices)."""

    extra_batch_keys = (*CompletionTask.extra_batch_keys, "class_labels")

    def __init__(self, inner: Task | None = None, loaded: LoadedBackbone | None = None,
                 own_words: dict[str, str] | None = None, own_template: str | None = None) -> None:
        self.inner, self.own_words, self.own_template = inner, own_words, own_template
        if inner is not None:
            self.name, self.metadata, self.Config = inner.name, inner.metadata, inner.Config
        if loaded is not None:
            if loaded.info.get("generation_format") != "causal":
                raise ConfigError(f"as_generation answers in words with a causal LM; {loaded.info.get('spec')} is "
                                  f"{loaded.info.get('generation_format') or 'not a text generator'}",
                                  "use a causal LM backbone (smollm2-135m, Llama, Qwen, ...) or drop as_generation")
            self.tokenizer, self.family = loaded.tokenizer, loaded.info.get("model_type")

    def words(self, config: Any) -> list[str]:
        return label_words(self.inner.label_names(config), config, self.own_words)

    def template(self, config: Any) -> str:
        return config.prompt_template or self.own_template or DEFAULT_TEMPLATE

    def head(self, config: Any) -> HeadSpec:
        return HeadSpec("text-generation")

    # -- encoding

    def _prompt(self, text: str, tokenizer: Any, config: Any, shown: Sequence[dict] = ()) -> list[int]:
        """The prompt's tokens; ``shown`` (few-shot demonstrations) first, each answered with its label word."""
        words = self.words(config)

        def rendered(value: str) -> str:
            return self.template(config).format(text=value, labels=", ".join(words))

        if config.chat_template and getattr(tokenizer, "chat_template", None):
            turns = [turn for d in shown for turn in (
                {"role": "user", "content": rendered(d["text"])}, {"role": "assistant", "content": words[d["label"]]})]
            chat = tokenizer.apply_chat_template([*turns, {"role": "user", "content": rendered(text)}],
                                                 add_generation_prompt=True, tokenize=False)
            return tokenizer(chat, add_special_tokens=False)["input_ids"]
        from .completion import start_tokens

        before = "".join(f"{rendered(d['text'])} {words[d['label']]}\n\n" for d in shown)
        return start_tokens(tokenizer) + tokenizer(before + rendered(text), add_special_tokens=False)["input_ids"]

    def answer_ids(self, word: str, tokenizer: Any, config: Any) -> list[int]:
        chat = config.chat_template and getattr(tokenizer, "chat_template", None)
        return tokenizer(word if chat else " " + word, add_special_tokens=False)["input_ids"]

    def encode(self, examples: Sequence[dict], tokenizer: Any, config: Any) -> list[dict]:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"{type(tokenizer).__name__} has no end-of-sequence token",
                              "a label word must end in one, so that the model learns to stop")
        words = self.words(config)
        longest = max(len(self.answer_ids(w, tokenizer, config)) for w in words) + 1
        # Demonstrations share the room with the text: each is cut to an equal share of it.
        empty = [{**d, "text": ""} for d in self.demonstrations]
        share = (config.max_length - len(self._prompt("", tokenizer, config, empty)) - longest) // (len(empty) + 1)
        shown = [{**d, "text": _cut(d["text"], max(share, 1), tokenizer)} for d in self.demonstrations]
        frame = len(self._prompt("", tokenizer, config, shown))
        budget = config.max_length - frame - longest
        if budget < 1:
            raise ConfigError(f"max_length={config.max_length} leaves no room for the text (the prompt's frame"
                              f"{' with its demonstrations' if self.demonstrations else ''} and the longest label "
                              f"word take {frame + longest} tokens)", "raise max_length (or lower shots)")
        rows = []
        for example in examples:
            text_ids = tokenizer(example["text"], add_special_tokens=False)["input_ids"]
            prompt = self._prompt(_cut(example["text"], budget, tokenizer), tokenizer, config, shown)
            answer = self.answer_ids(words[example["label"]], tokenizer, config)
            rows.append({"input_ids": prompt + answer + [tokenizer.eos_token_id],
                         "labels": [IGNORE] * len(prompt) + answer + [tokenizer.eos_token_id],
                         "prompt_ids": prompt, "answer_ids": answer, "class_label": example["label"],
                         "prompt_cut": 0, "completion_cut": max(0, len(text_ids) - budget)})
        return rows

    def encoding_report(self, examples: Sequence[dict], encoded: Sequence[dict], config: Any) -> dict[str, Any]:
        return {"examples": len(encoded), "max_length": config.max_length, "label_words": self.words(config),
                "texts_cut_at_end": sum(1 for row in encoded if row["completion_cut"]),
                "tokens_cut": sum(row["completion_cut"] for row in encoded)}

    packs = False

    def collator(self, tokenizer: Any, config: Any, padding: str = "longest"):
        import torch

        collate = super().collator(tokenizer, config, padding)

        def with_labels(features: list[dict]) -> dict[str, Any]:
            batch = collate(features)
            batch["class_labels"] = torch.tensor([f["class_label"] for f in features])
            return batch

        return with_labels

    # -- predictions and scores

    def _log_likelihoods(self, model, batch, config: Any) -> list[list[float]]:
        """Per example, each label word's summed log-probability after the (left-padded) prompt."""
        import torch

        prompts, masks = batch["prompt_ids"], batch["prompt_attention_mask"]
        totals = []
        for word in self.words(config):
            answer = torch.tensor(self.answer_ids(word, self.tokenizer, config), device=prompts.device)
            ids = torch.cat([prompts, answer.expand(len(prompts), -1)], dim=1)
            mask = torch.cat([masks, torch.ones_like(ids[:, prompts.shape[1]:])], dim=1)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the positions
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
            scored = logits[:, -len(answer) - 1:-1].log_softmax(-1)  # virtual prompt tokens sit at the start
            totals.append(scored.gather(-1, answer.expand(len(ids), -1).unsqueeze(-1)).squeeze(-1).sum(-1))
        return torch.stack(totals, dim=1).tolist()

    def _generated_label(self, row: list[int], config: Any) -> tuple[str, int | None]:
        eos = self.tokenizer.eos_token_id
        text = self.tokenizer.decode(row[:row.index(eos)] if eos in row else row, skip_special_tokens=True)
        answer = text.strip().split("\n")[0].strip().rstrip(".").strip().lower()
        words = [w.lower() for w in self.words(config)]
        return text, words.index(answer) if answer in words else None

    def _one_pass(self, model, batch, config: Any) -> tuple[list[list[float]], list[list[int]]] | None:
        """Label words of one token each: their log-probabilities are the first generated position's, so
        one generation gives both scores (a third of the forward passes). None where that does not hold."""
        words = [self.answer_ids(w, self.tokenizer, config) for w in self.words(config)]
        if any(len(ids) != 1 for ids in words) or self.family in UNMASKED_FAMILIES:
            return None
        tokenizer = self.tokenizer
        out = model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_attention_mask"],
                             max_new_tokens=config.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, output_logits=True, return_dict_in_generate=True)
        first = out.logits[0].float().log_softmax(-1)
        likelihoods = first[:, [ids[0] for ids in words]].tolist()
        return likelihoods, out.sequences[:, batch["prompt_ids"].shape[1]:].tolist()

    def predict(self, model, batch, logits, config: Any) -> tuple[list, list]:
        both = self._one_pass(model, batch, config)
        likelihoods, generated = both or (self._log_likelihoods(model, batch, config), self._generate(model, batch, config))
        predictions = []
        for scores, row in zip(likelihoods, generated):
            text, generated = self._generated_label(row, config)
            predictions.append({"label": max(range(len(scores)), key=scores.__getitem__), "loglik": scores,
                                "output": text, "generated": generated})
        return predictions, batch["class_labels"].tolist()

    def predicts_every_epoch(self, config: Any) -> bool:
        return True  # dev accuracy needs the label words' likelihoods

    def decode(self, logits, batch, config: Any) -> tuple[list, list]:
        raise ConfigError("classification as generation scores with the model itself (predict)")

    def score(self, predictions: list, references: list, config: Any) -> dict[str, float]:
        scores = dict(self.inner.score([p["label"] for p in predictions], references, config))
        if predictions:
            scores["exact_match"] = sum(p["generated"] == r for p, r in zip(predictions, references)) / len(predictions)
        return scores

    def example_statistics(self, predictions: list, references: list, config: Any,
                           score: str) -> ExampleStatistics | None:
        import numpy as np

        if score != "exact_match":
            return self.inner.example_statistics([p["label"] for p in predictions], references, config, score)
        values = np.array([[p["generated"] == r, 1] for p, r in zip(predictions, references)],
                          dtype=np.int64).reshape(-1, 2)
        return ExampleStatistics(values, lambda t: t[0] / t[1] if t[1] else 0.0)

    def trivial_predictions(self, references: list, config: Any) -> list | None:
        trivial = self.inner.trivial_predictions(references, config)
        return None if trivial is None else [{"label": t, "generated": t} for t in trivial]

    def chance_scores(self, references: list, config: Any) -> dict[str, float]:
        chance = dict(self.inner.chance_scores(references, config))
        if "accuracy" in chance:
            chance["exact_match"] = chance["accuracy"]  # a uniform guess among the label words
        return chance

    def text(self, example: dict) -> str:
        return example["text"]

    def load(self, config: Any):
        return self.inner.load(config)

    def cache_key(self, config: Any) -> dict[str, Any]:
        return {**self.inner.cache_key(config), "as_generation": True, "template": self.template(config),
                "words": self.words(config), "chat_template": config.chat_template,
                "demonstrations": [d.get("id") for d in self.demonstrations]}
