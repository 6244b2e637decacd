"""peftbench: fair, reproducible benchmarks of parameter-efficient fine-tuning."""

from __future__ import annotations

__version__ = "0.1.0"
