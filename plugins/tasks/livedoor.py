"""The livedoor news task's registration; the corpus reader and task are in livedoor_corpus.py (the generation task reads the same articles)."""

from __future__ import annotations

from peftbench.sdk import hookimpl

from .livedoor_corpus import LivedoorNews


@hookimpl
def register_tasks(register) -> None:
    register(LivedoorNews())
