"""peft's tuners, registered: one method per tuner type of the installed peft (peft_catalogue.py builds them)."""

from __future__ import annotations

from peftbench.sdk import hookimpl

from .peft_catalogue import PeftTuner, tuner_entries, cached_catalogue


@hookimpl
def register_methods(register) -> None:
    for entry in cached_catalogue("peft", __file__, tuner_entries):
        register(PeftTuner(entry))
