"""`peftbench list` (every registered component with its settings) and `peftbench data check`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .app import app, components, data_app, out, quiet_libraries


def _settings_text(settings: list[dict]) -> str:
    return ", ".join(f"{s['name']}={s['default']}" for s in settings)


def _listing(comps) -> dict[str, list[dict]]:
    from ..config import TrainConfig, describe_fields
    from ..components.installed import install_hint, missing_libraries

    def settings(config_cls) -> list[dict]:
        return [dict(zip(("name", "type", "default"), row)) for row in describe_fields(config_cls)]

    def entry(e) -> dict:
        needs = install_hint(missing_libraries(e.component)) or None  # listed, but a run is refused
        return {"name": e.name, "plugin": e.source, "settings": settings(e.component.Config), "needs": needs,
                "description": e.component.description + (f" [needs {needs}]" if needs else "")}

    def method_entry(e) -> dict:
        quantized = bool(getattr(e.component, "quantized_base", False))
        row = entry(e)
        row.update(quantized_base=quantized, description=row["description"] + (" [k-bit base]" if quantized else ""),
                   packed_batches=bool(getattr(e.component, "packed_batches", False)))
        return row

    listing: dict[str, list[dict]] = {"methods": [method_entry(e) for e in comps.methods]}
    for kind, registry in (("tasks", comps.tasks), ("backbones", comps.backbones)):
        listing[kind] = [entry(e) for e in registry]
    listing["method wrappers"] = [{"name": f"{e.name}+<method>", "plugin": e.source,
                                   "description": e.component.description,
                                   "settings": settings(e.component.Config) if e.component.Config else []}
                                  for e in comps.wrappers]
    listing["tables"] = [{"name": e.name, "plugin": e.source, "description": e.component.description}
                         for e in comps.tables]
    listing["executors"] = [{"name": e.name, "plugin": e.source, "description": e.component.description,
                             "settings": settings(getattr(e.component, "Config", None))} for e in comps.executors]
    listing["suite stages"] = [{"name": f"[{e.name}]", "plugin": e.source, "description": e.component.description}
                               for e in comps.stages]
    listing["train settings"] = settings(TrainConfig)
    return listing


@app.command("list")
def list_components(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Methods, tasks, backbones and report tables, with their plugin and settings."""
    listing = _listing(components())
    if as_json:
        out.print_json(json.dumps(listing))
        return
    with_settings = ("methods", "method wrappers", "tasks", "executors")
    for kind in ("methods", "method wrappers", "tasks", "backbones", "tables", "executors", "suite stages"):
        table = Table(title=kind, title_justify="left", show_lines=kind in with_settings)
        # A name is never cut (it is what users type); descriptions and settings wrap instead.
        table.add_column("name", no_wrap=True, style="bold")
        table.add_column("description (plugin)", overflow="fold", ratio=2)
        if kind in with_settings:
            table.add_column("settings (--set key=value)", overflow="fold", ratio=3)
        for item in listing[kind]:
            about = f"{escape(item['description'])} [dim]({escape(item['plugin'])})[/]"
            extra = [escape(_settings_text(item["settings"]))] if kind in with_settings else []
            table.add_row(escape(item["name"]), about, *extra)
        out.print(table)
        if kind == "method wrappers":
            out.print("A wrapper composes with any method above, from any plugin: --method <prefix>+<method>; "
                      "its settings come on top of the method's.", soft_wrap=False)
        if kind == "backbones":
            out.print("Any other --backbone value goes to the plugins' resolve_backbone hook "
                      "(built in: a Hugging Face hub id or a local model directory).", soft_wrap=False)
    out.print("train settings (any run): " + escape(_settings_text(listing["train settings"])), highlight=False,
              soft_wrap=False)


def _data_table(task: str, splits, per_split: dict[str, dict[str, object]]) -> Table:
    table = Table(title=f"{task}: {splits.info.get('source', '')}", title_justify="left")
    table.add_column("")
    for split in per_split:
        table.add_column(split, justify="right")
    rows = list(dict.fromkeys(k for counts in per_split.values() for k in counts))
    for row in rows:
        table.add_row(row, *(f"{per_split[s].get(row, 0):,}" if isinstance(per_split[s].get(row, 0), int)
                             else str(per_split[s][row]) for s in per_split))
    return table


@data_app.command("check")
def data_check(
    task: Annotated[str, typer.Argument(help="task name")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="task settings, e.g. data_dir=PATH")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="also encode with this backbone's tokenizer and "
                                                         "report what encoding loses (truncation)")] = None,
) -> None:
    """Load a task's data and print what the loader found, per split."""
    from .context import CommandContext

    quiet_libraries()
    task_obj, cfg = CommandContext(components).task_config(task, list(set_ or []))
    splits = task_obj.load(cfg)
    per_split: dict[str, dict[str, object]] = {name: {"examples": len(examples)} for name, examples in splits.items()}
    other = {}
    for key, value in splits.info.items():
        if isinstance(value, dict) and set(value) == set(per_split) and all(isinstance(v, dict) for v in value.values()):
            for split, counts in value.items():
                per_split[split].update(counts)
        else:
            other[key] = value
    if backbone:
        tokenizer = components().resolve_backbone(backbone).load(task_obj.head(cfg)).tokenizer
        for split, examples in splits.items():
            encoded = task_obj.encode(examples, tokenizer, cfg)
            per_split[split].update(task_obj.encoding_report(examples, encoded, cfg))
            per_split[split]["max tokens"] = max((len(e["input_ids"]) for e in encoded), default=0)
    out.print(_data_table(task, splits, per_split))
    for key, value in other.items():
        if key != "source":
            out.print(f"{key}: {value}", highlight=False, markup=False)
