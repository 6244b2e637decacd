"""peftbench: fair, reproducible benchmarks of parameter-efficient fine-tuning.

For notebooks: ``peftbench.load_results(folder)`` (one row per run) and
``peftbench.compare(frame, baseline=...)`` (paired tests against a baseline); see
docs/results-api.md.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

__version__ = importlib.metadata.version("peftbench")  # one home: pyproject.toml

from .hookspecs import hookimpl  # noqa: E402  (plugins write `from peftbench import hookimpl`)

__all__ = ["__version__", "hookimpl", "load_results", "compare"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `peftbench list` and plugins importing `hookimpl` must not pay for pandas.
    if name in ("load_results", "compare"):
        from .results import analysis as results

        return getattr(results, name)
    raise AttributeError(f"module 'peftbench' has no attribute {name!r}")
