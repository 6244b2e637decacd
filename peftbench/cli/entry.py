"""The entry point (`peftbench`, `python -m peftbench.cli`): a thin Typer app over runner, records
and report. Each command group lives in a module of its own (listing: list, data; run: run; report:
report; suite: suite); importing them registers them on the app, in the order `peftbench --help`
lists them."""

from __future__ import annotations

import functools
import sys

from rich.markup import escape

# Importing a command module registers its commands, in the order `peftbench --help` lists them.
from . import listing  # noqa: F401, I001  (list, data check)
from . import run  # noqa: F401  (run)
from . import report  # noqa: F401  (report)
from . import suite  # noqa: F401  (suite run)
from .app import app, components, err
from ..collector import tune_collection
from ..errors import PeftbenchError


@functools.cache
def _add_plugin_commands() -> None:
    # Once per process: main() may run several times in one process (tests).
    from .context import CommandContext

    components().hook("register_commands")(app=app, context=CommandContext(components))


def _names_a_builtin_command(argv: list[str]) -> bool:
    """Whether the command line names one of the core's commands (plugin commands are then not
    needed, and loading every plugin to add them would cost e.g. a report most of a second)."""
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first in names


def main() -> None:
    tune_collection()
    # Typer handles usage errors itself; expected failures become one line + exit 1.
    try:
        if not _names_a_builtin_command(sys.argv[1:]):
            _add_plugin_commands()
        app()
    except PeftbenchError as exc:
        # One line, whatever a library's message holds (tarfile lists one failure per line).
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted (a started run's record says status cancelled)")
        sys.exit(130)


if __name__ == "__main__":
    main()
