"""Backbones built from scratch: the registry's backbones and the `peftbench backbone build` command; the building is in scratch_build.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from peftbench.sdk import CommandContext, field_types, hookimpl, parse_sets, parse_value

from .scratch_build import BuildConfig, BuiltBackbone, build, read_registry


@hookimpl
def register_backbones(register) -> None:
    for name, path in sorted(read_registry().items()):
        if Path(path).is_dir():
            register(BuiltBackbone(path, name=name, description=f"built by peftbench backbone build: {path}"))


@hookimpl
def register_commands(app: typer.Typer, context: CommandContext) -> None:
    backbone_app = typer.Typer(no_args_is_help=True, help="Build backbones (pre-train a small BERT from scratch).")

    @backbone_app.command("build")
    def build_command(
        corpus: Annotated[list[str], typer.Option(help="a task name (its training split) or a folder of .txt "
                                                       "files; repeat to combine")],
        out: Annotated[Path, typer.Option(help="output folder")],
        preset: Annotated[str, typer.Option(help="tiny (minutes on CPU) or s3 (study S3's settings)")] = "tiny",
        set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="task settings (data_dir=...) or "
                                                          "build settings (epochs=, lr=, min_frequency=, ...)")] = None,
        name: Annotated[Optional[str], typer.Option(help="register under this --backbone name")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output folder")] = False,
    ) -> None:
        """Train a WordPiece vocabulary and pre-train a small BERT (MLM + NSP) on a corpus."""
        import transformers


        transformers.logging.set_verbosity_error()

        pairs = parse_sets(list(set_ or []))
        types = field_types(BuildConfig)
        build_overrides = {k: parse_value(v, types[k], k) for k, v in pairs.items() if k in types}
        task_sets = [f"{k}={v}" for k, v in pairs.items() if k not in types]
        info = build(corpus, task_sets, out, preset, build_overrides, name, overwrite, context.components)
        last = info["history"][-1]["held_out"] if info["history"] else {}
        typer.echo(f"built {out}: {info['parameters']:,} parameters, vocabulary {info['vocab_size']:,}; held-out "
                   f"MLM accuracy {info['held_out_before_training']['mlm_accuracy']:.3f} -> "
                   f"{last.get('mlm_accuracy', float('nan')):.3f}, NSP accuracy "
                   f"{info['held_out_before_training']['nsp_accuracy']:.3f} -> {last.get('nsp_accuracy', float('nan')):.3f}"
                   + (f"; use --backbone {name}" if name else f"; use --backbone {out}"))

    app.add_typer(backbone_app, name="backbone")
