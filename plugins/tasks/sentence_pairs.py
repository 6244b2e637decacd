"""Sentence-pair tasks, registered; their rows and tasks are in pair_rows.py (multiple choice reads the same rows)."""

from __future__ import annotations

from peftbench.sdk import hookimpl

from .pair_rows import SemanticTextualSimilarity, SentencePairClassification


@hookimpl
def register_tasks(register) -> None:
    register(SentencePairClassification())
    register(SemanticTextualSimilarity())
