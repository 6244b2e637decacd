"""The command line: the typer app (app), one module per command group (listing, run, suite,
report), the context a plugin's command receives (context), and the warm worker's side (worker).

``main`` is imported on first call, so that a plugin importing the SDK (which names
``CommandContext``) does not import every command.
"""

from __future__ import annotations


def main() -> None:
    """The ``peftbench`` console script."""
    from .entry import main as run

    run()
