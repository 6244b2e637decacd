"""The LoRA method's registration; the method itself is in lora_model.py, which TAPT, multi-task and peft's tuners build on."""

from __future__ import annotations

from peftbench.sdk import hookimpl

from .lora_model import Lora


@hookimpl
def register_methods(register) -> None:
    register(Lora())
