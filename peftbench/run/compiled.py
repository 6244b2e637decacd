"""`--set compile=true`: torch.compile of the model for training and evaluation, and the seconds
compiling took, kept apart from training time.

The model is compiled in place (`nn.Module.compile`), so its parameters, state dict names and
every method's hooks are those of the eager model. torch compiles lazily, on the first batch of
each new input shape (with dynamic padding: the first few lengths, then one dynamic graph), and
the backward graph on the first backward. Those seconds are read from dynamo's own timers: a
frame's compile (`_compile.compile_inner`: tracing, AOT autograd, the forward's code) and a lazy
backward compile (`backward._backward_impl`); on a warm run of benchmarks/vs_trainer.py they sum
to the slow first steps' excess over a normal step.
"""

from __future__ import annotations

from typing import Any

import torch

COMPILE_TIMERS = ("_compile.compile_inner", "backward._backward_impl")


def compile_in_place(model: torch.nn.Module, backend: str) -> None:
    model.compile(backend=backend)


def compile_seconds_so_far() -> float:
    """Seconds this process has spent compiling, by dynamo's timers (0 before any compile)."""
    from torch._dynamo.utils import compilation_time_metrics

    metrics: dict[str, Any] = compilation_time_metrics
    return float(sum(sum(metrics.get(name, ())) for name in COMPILE_TIMERS))


def measured_compile_seconds(compiled: bool, seconds: float) -> float | None:
    """What the record says: None when the model was not compiled, and None when it was but the
    timers moved not at all (a torch whose timer names changed): unknown, never a made-up 0."""
    return seconds if compiled and seconds > 0 else None
