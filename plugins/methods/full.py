"""Full fine-tuning's registration; the method is in full_model.py, which multi-task composes."""

from __future__ import annotations

from peftbench.sdk import hookimpl

from .full_model import FullFineTuning


@hookimpl
def register_methods(register) -> None:
    register(FullFineTuning())
