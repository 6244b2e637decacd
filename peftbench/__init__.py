"""peftbench: fair, reproducible benchmarks of parameter-efficient fine-tuning."""

from __future__ import annotations

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (plugins write `from peftbench import hookimpl`)

__all__ = ["__version__", "hookimpl"]
