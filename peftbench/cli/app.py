"""The command line's app, its consoles and what every command shares; the commands live in
run, report, suite and listing, and entry.py puts them together."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fair, reproducible benchmarks of full fine-tuning vs parameter-efficient methods.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect task data.")
app.add_typer(data_app, name="data")
suite_app = typer.Typer(no_args_is_help=True, help="Run suites: grids x seeds from a TOML file.")
app.add_typer(suite_app, name="suite")

# soft_wrap: a long line stays one line when output is not a terminal (CI logs, `| tee`).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_RESULTS = Path("results")


def components():
    from ..components import plugins

    return plugins.default()


def quiet_libraries() -> None:
    # Library chatter ("Some weights were not initialized...") would bury peftbench's own output.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    import logging

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
