"""peft's tuners, registered: one method per tuner type of the installed peft (peft_catalogue.py builds them)."""

from __future__ import annotations

from peftbench.sdk import hookimpl

from . import peft_catalogue
from .peft_catalogue import PeftTuner, cached_catalogue, tuner_entries


@hookimpl
def register_methods(register) -> None:
    # keyed by the file that builds the catalogue: a change there rebuilds it
    for entry in cached_catalogue("peft", peft_catalogue.__file__, tuner_entries):
        register(PeftTuner(entry))
