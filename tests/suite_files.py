"""The suite file most tests need, written once: the shipped livedoor sample on a tiny backbone,
sized to run in seconds (10 articles per category, 32 tokens, 1 epoch, nothing timed or kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "livedoor-sample"
SETTINGS = {"data_dir": str(SAMPLE), "per_category": 10, "max_length": 32, "epochs": 1, "inference_repeats": 0,
            "save_artifact": False}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def livedoor_suite(path: Path, backbone: Path | str, *, methods: Sequence[str] = ("full", "lora"),
                   seeds: Sequence[int] | None = (1, 2), settings: dict[str, Any] | None = None,
                   before: str = "", defaults: str = "", runs: str | None = None) -> Path:
    """Writes the suite to ``path`` (a folder gets ``suite.toml``) and returns the file. ``settings``
    override or add ``[defaults.set]`` values; ``before`` goes above ``[defaults]`` (a description,
    a ``[tune]`` table), ``defaults`` inside it (e.g. ``match_params = 2000``); ``runs`` replaces
    the ``[[runs]]`` of ``methods`` with TOML of its own."""
    path = path / "suite.toml" if path.is_dir() else path
    lines = [before.strip(), "[defaults]", 'task = "livedoor-news"', f'backbone = "{backbone}"']
    if seeds is not None:
        lines.append(f"seeds = {list(seeds)}")
    lines += [defaults.strip(), "[defaults.set]"]
    lines += [f"{key} = {_value(value)}" for key, value in {**SETTINGS, **(settings or {})}.items()]
    lines.append(runs.strip() if runs is not None else "\n".join(f'[[runs]]\nmethod = "{m}"' for m in methods))
    path.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")
    return path
