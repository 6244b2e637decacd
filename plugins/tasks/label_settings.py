"""The settings every classification task has for classification as generation (label_words.py):
their own module, so a task's config declares them without importing the decoder code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationSettings:
    """The settings every classification task has for ``as_generation`` (left out of the config hash at
    their defaults, so runs recorded before they existed keep their identity)."""

    as_generation: bool = False
    prompt_template: str = ""  # "" = the task's own (DEFAULT_TEMPLATE unless its plugin gives one)
    label_words: tuple[str, ...] = ()  # one per label, in label order; () = the task's own or the label names
    chat_template: bool = True  # render the prompt with the tokenizer's chat template, where it has one
    max_new_tokens: int = 8  # generation for exact_match

    HASH_OMITS_AT_DEFAULT = ("as_generation", "prompt_template", "label_words", "chat_template", "max_new_tokens")

    def __post_init__(self) -> None:
        if self.prompt_template and "{text}" not in self.prompt_template:
            raise ValueError("prompt_template needs {text} (and may use {labels})")
        if len(set(w.strip().lower() for w in self.label_words)) != len(self.label_words):
            raise ValueError("label_words must be different words")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
