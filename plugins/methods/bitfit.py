"""BitFit's registration; the method and its tensor helpers are in bias_terms.py (the linear probe shares them)."""

from __future__ import annotations

from peftbench.sdk import hookimpl

from .bias_terms import BitFit


@hookimpl
def register_methods(register) -> None:
    register(BitFit())
