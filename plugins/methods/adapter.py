"""The bottleneck adapter's registration; the method is in bottleneck.py, which TAPT and multi-task compose."""

from __future__ import annotations

from peftbench.sdk import hookimpl

from .bottleneck import BottleneckAdapter


@hookimpl
def register_methods(register) -> None:
    register(BottleneckAdapter())
